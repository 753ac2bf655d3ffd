"""Tenant administration: API keys for the tenant's users (workflows.admin)."""

from __future__ import annotations

from datetime import timedelta

from workflows.clock import Clock, system_clock
from workflows.domain.api_keys import ApiKeyRecord
from workflows.domain.paging import Position
from workflows.domain.principal import Principal
from workflows.errors import ValidationFailed
from workflows.ports import ApiKeyStore
from workflows.settings import Settings


class KeyService:
    def __init__(self, keys: ApiKeyStore, settings: Settings, *, clock: Clock = system_clock) -> None:
        self._keys = keys
        self._settings = settings
        self._clock = clock

    def now_state(self, record: ApiKeyRecord) -> str:
        return record.state(self._clock())

    def create(
        self,
        principal: Principal,
        *,
        user_id: str,
        roles: list[str],
        name: str | None,
        expires_in_days: int | None,
    ) -> tuple[str, ApiKeyRecord]:
        """A key for a user of the caller's tenant; the key is returned here and never again."""
        known = self._settings.role_permissions
        unknown = [role for role in roles if role not in known]
        if unknown:
            details = [{"field": "roles", "message": f"unknown role '{role}'"} for role in unknown]
            raise ValidationFailed(
                f"roles: unknown role '{unknown[0]}' ({', '.join(sorted(known))})", details=details
            )
        expires_at = None
        if expires_in_days is not None:
            expires_at = int((self._clock() + timedelta(days=expires_in_days)).timestamp())
        return self._keys.create(
            principal.tenant_id,
            user_id,
            sorted(set(roles)),
            name=name,
            created_by=principal.user_id,
            expires_at=expires_at,
        )

    def list(
        self, principal: Principal, *, limit: int, start: Position | None
    ) -> tuple[list[ApiKeyRecord], Position | None]:
        return self._keys.list_for_tenant(principal.tenant_id, limit=limit, start=start)

    def get(self, principal: Principal, key_id: str) -> ApiKeyRecord:
        return self._keys.get(principal.tenant_id, key_id)

    def revoke(self, principal: Principal, key_id: str) -> ApiKeyRecord:
        return self._keys.revoke(principal.tenant_id, key_id, principal.user_id)
