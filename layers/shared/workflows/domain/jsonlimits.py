"""Hostile JSON: nesting, non-finite and out-of-range numbers, and sizes, checked before use.

Request bodies are checked here before they are parsed into models (api/guard.py); the limits
are documented in docs/auth.md ("Request limits"). Nesting is measured on the raw bytes, so a
body nested 10,000 deep never reaches a recursive parser.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from workflows.errors import MalformedJson, PayloadTooLarge, TooDeep, ValidationFailed

MAX_DEPTH = 64
# Integers beyond 64 bits lose precision in most JSON clients and in DynamoDB's numbers.
MAX_INT = 2**63 - 1

# A JSON string (with escapes) or a bracket. Strings are matched whole so brackets inside them
# are not counted.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_AFTER_KEY = re.compile(rb"\s*:")


class _Number(Exception):
    """Raised by the parser hooks; the offending value is then located by a walk."""


def _refuse_constant(name: str) -> Any:
    raise _Number(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Number(text)
    return value


def _bounded_int(text: str) -> int:
    # Python refuses to parse integers past 4,300 digits anyway; the length check comes first.
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) > MAX_INT:
        raise _Number(text[:32])
    return value


def nesting_problem(body: bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """The top-level field under which `body` nests deeper than `max_depth`, or None.

    The field is "body" when the document itself (not one of its fields) is too deep.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return None  # cannot be deeper than the number of openers
    depth = 0
    top_field = "body"
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token[:1] == b'"':
            if depth == 1 and _AFTER_KEY.match(body, match.end()):
                top_field = _key_text(token)
        elif token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return top_field
        else:
            depth -= 1
    return None


def _key_text(token: bytes) -> str:
    try:
        key = json.loads(token)
    except ValueError:
        return "body"
    return key[:64] if isinstance(key, str) else "body"


def parse_body(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON request body, refusing what a model could not hold.

    Raises TooDeep (422 `too_deep`) past `max_depth`, ValidationFailed (422) for NaN, Infinity,
    1e400 or an integer beyond 64 bits, each naming the field; MalformedJson (400) otherwise.
    """
    field = nesting_problem(body, max_depth)
    if field is not None:
        raise TooDeep(
            f"{field}: nested deeper than {max_depth} levels",
            details=[{"field": field, "message": f"nested deeper than {max_depth} levels"}],
        )
    try:
        return json.loads(
            body, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except _Number:
        # Parse again with the offending values marked, to name where they are.
        document = json.loads(body, parse_constant=_mark, parse_float=_mark_float, parse_int=_mark_int)
        path = next(_offenders(document, ""), "body")
        raise ValidationFailed(
            f"{path}: numbers must be finite and integers within ±(2^63-1)",
            details=[{"field": path, "message": "not a finite number within range"}],
        ) from None
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, invalid UTF-8, or an integer past Python's digit limit.
        raise MalformedJson("request body is not valid JSON") from exc


class _Offender:
    pass


_OFFENDER = _Offender()


def _mark(_: str) -> Any:
    return _OFFENDER


def _mark_float(text: str) -> Any:
    try:
        return _finite_float(text)
    except _Number:
        return _OFFENDER


def _mark_int(text: str) -> Any:
    try:
        return _bounded_int(text)
    except _Number:
        return _OFFENDER


def _offenders(value: Any, path: str) -> Iterator[str]:
    if value is _OFFENDER:
        yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _offenders(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _offenders(item, f"{path}[{index}]")


def json_size(value: Any) -> int:
    """Bytes of `value` as the service stores it (compact JSON)."""
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def check_size(value: Any, field: str, limit: int) -> None:
    """PayloadTooLarge (413) naming `field` when its stored form would exceed `limit` bytes."""
    size = json_size(value)
    if size > limit:
        raise PayloadTooLarge(
            f"{field}: {size} bytes, limit {limit}",
            details=[{"field": field, "message": f"{size} bytes, limit {limit}"}],
        )
