"""The tenant's secrets for `{{ secrets.NAME }}`: values go in, names come out."""

from __future__ import annotations

from workflows.domain.principal import Principal
from workflows.ports import SecretStore


class SecretService:
    def __init__(self, store: SecretStore) -> None:
        self._store = store

    def put(self, principal: Principal, name: str, value: str) -> None:
        self._store.put(principal.tenant_id, name, value)

    def names(self, principal: Principal) -> list[str]:
        return self._store.names(principal.tenant_id)

    def delete(self, principal: Principal, name: str) -> None:
        self._store.delete(principal.tenant_id, name)
