"""Who is calling: tenant, user and permissions, established by the edge's authentication."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from workflows.domain.ids import check_tenant_id, check_user_id

RUNS_READ = "workflows.runs.read"
RUNS_CONTROL = "workflows.runs.control"
ADMIN = "workflows.admin"
# Submitting ad hoc, or saving, a definition that references `{{ secrets.NAME }}`: the secrets
# are the tenant's, so sending them somewhere is not for every caller (docs/auth.md).
SECRETS_USE = "workflows.secrets.use"
# Sending signals (`POST /signals`, `POST /runs/{id}/signals`): a signal moves the tenant's
# waiting runs on, so it is for whoever may move runs (docs/signals.md).
SIGNALS_SEND = "workflows.signals.send"
ALL_PERMISSIONS = frozenset({RUNS_READ, RUNS_CONTROL, SECRETS_USE, SIGNALS_SEND, ADMIN})

# Multi-user mode: roles grant permissions. `WORKFLOWS_ROLE_PERMISSIONS` (JSON) adds roles or
# replaces these mappings; a role nobody configured grants nothing.
DEFAULT_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({RUNS_READ}),
    "operator": frozenset({RUNS_READ, RUNS_CONTROL, SECRETS_USE, SIGNALS_SEND}),
    "admin": ALL_PERMISSIONS,
}


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    permissions: frozenset[str]
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Both become parts of storage keys (docs/auth.md, "Identifiers").
        check_tenant_id(self.tenant_id)
        check_user_id(self.user_id)

    def can(self, permission: str) -> bool:
        return permission in self.permissions or ADMIN in self.permissions


def permissions_for(roles: Iterable[str], mapping: Mapping[str, frozenset[str]]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= mapping.get(role, frozenset())
    return frozenset(granted)
