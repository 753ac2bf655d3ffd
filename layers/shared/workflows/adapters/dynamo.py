"""DynamoDB plumbing shared by the repositories: item (de)serialisation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from workflows.errors import NotFound
from workflows.observability import logger

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


def check_owner(expected_tenant: str, stored_tenant: object, what: str) -> None:
    """Defence in depth: an item read under one tenant's key must carry that tenant's id.

    Keys already include the tenant, and tenant ids cannot contain the key separator, so this
    never fails unless a key format is broken; if it does, the item is not found, and logged.
    """
    if stored_tenant != expected_tenant:
        logger.error("tenant mismatch on read", extra={"object": what, "tenant_id": expected_tenant})
        raise NotFound(f"{what} not found")


# DynamoDB refuses items over 400 KB; a write is checked against this before it is attempted,
# so a client is told "too large" (413) rather than "retry" (503) for what can never fit.
MAX_ITEM_BYTES = 400 * 1024


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it (names plus values), near enough for a limit check."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    (kind, raw), *_ = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "B":
        return len(raw)
    if kind == "N":
        return len(str(raw))
    if kind in ("L", "M"):
        items = raw if kind == "L" else raw.values()
        return 3 + sum(_value_size(v) for v in items) + (sum(len(k) for k in raw) if kind == "M" else 0)
    if kind in ("SS", "NS"):
        return sum(len(str(v).encode()) for v in raw)
    return 1
