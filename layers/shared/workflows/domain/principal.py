"""Who is calling: tenant, user and permissions, established by the edge's authentication."""

from __future__ import annotations

from dataclasses import dataclass

RUNS_READ = "workflows.runs.read"
RUNS_CONTROL = "workflows.runs.control"
ADMIN = "workflows.admin"
ALL_PERMISSIONS = frozenset({RUNS_READ, RUNS_CONTROL, ADMIN})


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        return permission in self.permissions or ADMIN in self.permissions
