"""DynamoDB plumbing shared by the repositories: item (de)serialisation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Serialise a flat mapping of str / int / bool values, dropping Nones."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in item.items():
        value = _deserializer.deserialize(raw)
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        out[key] = value
    return out


def dumps(value: Any) -> str:
    """JSON documents (inputs, outputs, payloads) are stored as strings: no Decimal round trips."""
    return json.dumps(value, separators=(",", ":"), default=str)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def cancellation_reasons(exc: ClientError) -> list[dict[str, Any]]:
    reasons = exc.response.get("CancellationReasons")
    return list(reasons) if isinstance(reasons, list) else []
