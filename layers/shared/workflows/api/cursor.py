"""Opaque pagination cursors.

A cursor is base64url JSON holding the storage position where the next page starts and a
digest of the query it belongs to (tenant and filters). A cursor that does not decode, names
other fields, or was issued for another query answers 400 `invalid_cursor`; the repositories
also check that the position lies inside the caller's partition and key range.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from workflows.domain.paging import Position
from workflows.errors import InvalidCursor

MAX_CURSOR_CHARS = 2048
_VERSION = 1


def query_digest(parts: Sequence[object]) -> str:
    text = json.dumps([str(p) for p in parts], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def encode(position: Position | None, scope: Sequence[object]) -> str | None:
    if position is None:
        return None
    document = {"v": _VERSION, "q": query_digest(scope), "k": position}
    raw = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, scope: Sequence[object]) -> Position | None:
    if cursor is None or cursor == "":
        return None
    if len(cursor) > MAX_CURSOR_CHARS:
        raise _invalid("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("cursor is not one this service issued") from exc
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise _invalid("cursor is not one this service issued")
    if document.get("q") != query_digest(scope):
        raise _invalid("cursor was issued for a different query: repeat the same filters")
    position = document.get("k")
    if not isinstance(position, dict) or not position:
        raise _invalid("cursor is not one this service issued")
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in position.items()):
        raise _invalid("cursor is not one this service issued")
    return dict(position)


def _invalid(message: str) -> InvalidCursor:
    return InvalidCursor(message, details=[{"field": "cursor", "message": message}])
