"""API keys of multi-user mode: what is stored about a key (never the key itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    user_id: str
    roles: tuple[str, ...]
    created_at: str
    name: str | None = None
    created_by: str | None = None
    expires_at: int | None = None
    revoked_at: str | None = None
    revoked_by: str | None = None

    def state(self, now: datetime) -> str:
        """active, revoked or expired."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now.timestamp() >= self.expires_at:
            return "expired"
        return "active"
