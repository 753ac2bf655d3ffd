"""Execution slots: at most `limit` runs of a tenant execute at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from workflows.ports import QuotaStore


class TenantSlots:
    """At most `limit` runs of a tenant execute at once (WORKFLOWS_TENANT_CONCURRENCY).

    A queued run takes a slot when it starts and gives it back when it ends (any terminal
    status); a paused run keeps its slot. A refused start leaves the run queued and checks
    again later. A slot kept by a run that ended without giving it back (the process died in
    between) is found by a check of the holders, at most once a minute per tenant, made by a
    refused start.
    """

    HEAL_EVERY_SECONDS = 60

    def __init__(
        self,
        repository: QuotaStore,
        limit: int,
        *,
        is_finished: Callable[[str, str], bool],
        clock: Callable[[], datetime],
    ) -> None:
        self._repo = repository
        self.limit = limit
        self._is_finished = is_finished
        self._clock = clock

    def take(self, tenant_id: str, run_id: str) -> bool:
        taken, holders = self._repo.take_slot(tenant_id, run_id, self.limit)
        if taken:
            return True
        now = int(self._clock().timestamp())
        healed_at = self._repo.healed_at(tenant_id)
        if healed_at is not None and now - healed_at < self.HEAL_EVERY_SECONDS:
            return False
        if not self._repo.mark_healed(tenant_id, healed_at, now):
            return False
        stale = [holder for holder in holders if self._is_finished(tenant_id, holder)]
        for holder in stale:
            self._repo.release_slot(tenant_id, holder)
        return bool(stale) and self._repo.take_slot(tenant_id, run_id, self.limit)[0]

    def release(self, tenant_id: str, run_id: str) -> None:
        self._repo.release_slot(tenant_id, run_id)
