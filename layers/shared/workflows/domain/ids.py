"""Identifiers: what a tenant, user or object id may look like (docs/auth.md, "Identifiers").

Storage keys join ids with `#` (`<tenant>#<run_id>`), so no id that becomes part of a key may
contain it: tenant and user ids are checked against these patterns wherever they enter (the key
API and CLI, JWT claims, settings); ids the service generates are checked against the format it
generates before any storage read, so `sub%23<run_id>` or `../x` never reaches a key; and
client-chosen strings that become part of a key (Idempotency-Key) are hashed first.
"""

from __future__ import annotations

import hashlib
import re

# A tenant: a letter or digit, then up to 63 letters, digits, `.`, `_` or `-`.
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A user: also `@`, `:`, `+` and `|` (e-mail addresses, `auth0|123`), up to 128 characters.
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:+|-]{0,127}$"
# Ids the service generates.
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
HEX32_PATTERN = r"^[0-9a-f]{32}$"
# Step ids come from definitions (domain.definition.STEP_ID_PATTERN); documents may be named
# by the client.
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

_TENANT = re.compile(TENANT_ID_PATTERN)
_USER = re.compile(USER_ID_PATTERN)
_UUID = re.compile(UUID_PATTERN)
_HEX32 = re.compile(HEX32_PATTERN)


class InvalidIdentifier(ValueError):
    """A tenant or user id outside its pattern."""


def is_tenant_id(value: object) -> bool:
    return isinstance(value, str) and _TENANT.fullmatch(value) is not None


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and _USER.fullmatch(value) is not None


def is_uuid(value: object) -> bool:
    """A lower-case canonical UUID, as the service writes run, workflow and schedule ids."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def is_hex32(value: object) -> bool:
    """32 lower-case hex digits, as the service writes webhook DLQ row ids."""
    return isinstance(value, str) and _HEX32.fullmatch(value) is not None


def check_tenant_id(value: str) -> str:
    if not is_tenant_id(value):
        raise InvalidIdentifier(
            f"tenant id must match {TENANT_ID_PATTERN} (1-64 letters, digits, '.', '_' or '-')"
        )
    return value


def check_user_id(value: str) -> str:
    if not is_user_id(value):
        raise InvalidIdentifier(
            f"user id must match {USER_ID_PATTERN}"
            " (1-128 letters, digits, '.', '_', '@', ':', '+', '|' or '-')"
        )
    return value


def key_digest(value: str) -> str:
    """A client-chosen string as it may appear in a storage key: its SHA-256, hex."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
