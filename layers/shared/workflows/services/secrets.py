"""The tenant's secrets for `{{ secrets.NAME }}`: values go in, names (and where each may be
sent) come out."""

from __future__ import annotations

from collections.abc import Sequence

from workflows.domain.principal import Principal
from workflows.domain.secret_refs import Secret, SecretInfo, check_allowed_hosts, check_stored_size
from workflows.ports import SecretStore


class SecretService:
    def __init__(self, store: SecretStore) -> None:
        self._store = store

    def put(
        self, principal: Principal, name: str, value: str, allowed_hosts: Sequence[str] | None = None
    ) -> SecretInfo:
        """Create or replace the secret: its value and its allowed hosts (None: any host the
        egress policy allows). ValidationFailed names a host entry that is not a host pattern."""
        hosts = None if allowed_hosts is None else check_allowed_hosts(allowed_hosts)
        check_stored_size(Secret(value, hosts))
        self._store.put(principal.tenant_id, name, value, hosts)
        return SecretInfo(name, hosts)

    def listing(self, principal: Principal) -> list[SecretInfo]:
        return self._store.listing(principal.tenant_id)

    def delete(self, principal: Principal, name: str) -> None:
        self._store.delete(principal.tenant_id, name)
