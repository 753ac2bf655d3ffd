"""Each tenant's share of the dispatcher: a step rate and a bound on calls out in flight.

The rules and their storage are in domain.shares; this is the engine's view of them. Either
bound is off when its setting is 0.
"""

from __future__ import annotations

from workflows.domain.shares import ALL_TENANTS, StepRate
from workflows.ports import ShareStore

# A kick that comes back this much before its reserved moment runs anyway: SQS delays are whole
# seconds, and sending it once more would cost more than the fraction of a step it gains.
EARLY_SECONDS = 1.0


class TenantShares:
    def __init__(
        self,
        store: ShareStore,
        *,
        rate: StepRate | None,
        tenant_calls: int,
        all_calls: int,
        call_recheck_seconds: float,
    ) -> None:
        self._store = store
        self._rate = rate
        self._tenant_calls = tenant_calls
        self._all_calls = all_calls
        self.call_recheck_seconds = call_recheck_seconds

    def admission_delay(self, tenant_id: str, now: float, not_before: float | None, steps: int) -> float:
        """Seconds until this kick may run (0: now). A kick without a reserved moment reserves
        `steps` of its tenant's rate; one with a moment waits for it, uncharged."""
        if not_before is not None:
            wait = not_before - now
            return wait if wait > EARLY_SECONDS else 0.0
        if self._rate is None:
            return 0.0
        start = self._store.reserve(tenant_id, steps * self._rate.interval, now)
        wait = self._rate.delay(start, now)
        return wait if wait > EARLY_SECONDS else 0.0

    def charge(self, tenant_id: str, steps: int, now: float) -> None:
        """Steps run beyond those reserved move the tenant's clock on; fewer give time back."""
        if self._rate is not None and steps != 0:
            self._store.charge(tenant_id, steps * self._rate.interval, now)

    def take_call(self, tenant_id: str, holder: str, lease_until: float, now: float) -> bool:
        """A permit for one call out, from the tenant's pool and from everyone's."""
        if self._tenant_calls > 0 and not self._store.acquire(
            tenant_id, holder, self._tenant_calls, lease_until, now
        ):
            return False
        if self._all_calls > 0 and not self._store.acquire(
            ALL_TENANTS, holder, self._all_calls, lease_until, now
        ):
            if self._tenant_calls > 0:
                self._store.release(tenant_id, holder)
            return False
        return True

    def give_back_call(self, tenant_id: str, holder: str) -> None:
        if self._tenant_calls > 0:
            self._store.release(tenant_id, holder)
        if self._all_calls > 0:
            self._store.release(ALL_TENANTS, holder)
