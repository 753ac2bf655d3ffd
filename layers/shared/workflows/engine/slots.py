"""Execution slots: at most `limit` runs of a tenant execute at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from workflows.ports import QuotaStore


class TenantSlots:
    """At most `limit` runs of a tenant execute at once (WORKFLOWS_TENANT_CONCURRENCY).

    A queued run takes a slot when it starts and gives it back when it ends (any terminal
    status); a paused run keeps its slot. A refused start leaves the run queued and checks
    again later. The store counts the slots taken and lists their holders (adapters.quotas): a
    take or a give-back costs the same however many run. A refused start checks the holders,
    at most once a minute per tenant: a slot kept by a run that ended without giving it back
    (the process died in between) is given back, and a count the list disagrees with (a take
    cut off between its two writes) is set to the list's.
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
        if self._repo.take_slot(tenant_id, run_id, self.limit):
            return True
        now = int(self._clock().timestamp())
        healed_at = self._repo.healed_at(tenant_id)
        if healed_at is not None and now - healed_at < self.HEAL_EVERY_SECONDS:
            return False
        if not self._repo.mark_healed(tenant_id, healed_at, now):
            return False
        counted, holders = self._repo.slot_holders(tenant_id)
        stale = [holder for holder in holders if self._is_finished(tenant_id, holder)]
        for holder in stale:
            self._repo.release_slot(tenant_id, holder)
        counted -= len(stale)
        holding = len(holders) - len(stale)
        recounted = counted != holding and self._repo.recount_slots(tenant_id, counted, holding)
        if not stale and not (recounted and holding < counted):
            return False
        return self._repo.take_slot(tenant_id, run_id, self.limit)

    def release(self, tenant_id: str, run_id: str) -> None:
        self._repo.release_slot(tenant_id, run_id)
