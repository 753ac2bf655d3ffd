"""Identifiers: what a tenant, user or object id may look like (docs/auth.md, "Identifiers").

Storage keys join ids with `#` (`<tenant>#<run_id>`), so no id that becomes part of a key may
contain it: tenant and user ids are checked against these patterns wherever they enter (the key
API and CLI, JWT claims, settings); ids the service generates are checked against the format it
generates before any storage read, so `sub%23<run_id>` or `../x` never reaches a key; and
client-chosen strings that become part of a key (Idempotency-Key) are hashed first.

The service acts under names of its own: a scheduled run belongs to `schedule:<schedule_id>`,
and an approval that times out is decided by `system:timeout`. A caller taking such a name
would read the schedule's runs or pass for the service, so user ids that enter from outside
(keys, JWT claims, approval assignees) are also checked against those reserved prefixes.
"""

from __future__ import annotations

import hashlib
import re

# A tenant: a letter or digit, then up to 63 letters, digits, `.`, `_` or `-`.
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A user: also `@`, `:`, `+` and `|` (e-mail addresses, `auth0|123`), up to 128 characters.
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:+|-]{0,127}$"
# The service's own principals (any case): `schedule:<id>` owns scheduled runs
# (domain.run.SCHEDULE_OWNER_PREFIX), `system:timeout` decides an approval that timed out.
RESERVED_USER_PREFIXES = ("schedule:", "system:")
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


def is_reserved_user_id(value: str) -> bool:
    """A name of the service's own (`schedule:...`, `system:...`), which no caller may take."""
    return value.lower().startswith(RESERVED_USER_PREFIXES)


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


def check_caller_user_id(value: str) -> str:
    """A user id from outside the service: valid, and none of the service's own names."""
    check_user_id(value)
    if is_reserved_user_id(value):
        raise InvalidIdentifier(reserved_message(value))
    return value


def reserved_message(value: str) -> str:
    prefixes = " or ".join(f"'{prefix}'" for prefix in RESERVED_USER_PREFIXES)
    return f"user id '{value}' is reserved: ids starting with {prefixes} name the service itself"


def key_digest(value: str) -> str:
    """A client-chosen string as it may appear in a storage key: its SHA-256, hex."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
