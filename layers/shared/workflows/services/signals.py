"""Sending signals (`POST /signals`, `POST /runs/{id}/signals`; docs/signals.md).

A signal is stored first (idempotent by its id: a repeat answers the signal as first sent, and
an id sent again with other content is refused), then delivered: to one run at once, or to every
run of the tenant waiting for its name through the dispatch queue, a page of waiting runs per
message. Either way a run that was waiting, and whose wait it satisfies, moves on; a run that
begins waiting later still counts it within its `lookback_seconds`. Signals are counted per
tenant and minute (`WORKFLOWS_SIGNAL_QUOTA_PER_MIN`), so one tenant's flood is refused with 429
and costs nobody else anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from workflows.clock import Clock, iso, system_clock
from workflows.domain.jsonlimits import check_size
from workflows.domain.messages import DeliverSignal
from workflows.domain.principal import Principal
from workflows.domain.signals import KEEP_SECONDS, MAX_DATA_BYTES, Signal, check_name
from workflows.engine.signals import SignalWaits
from workflows.errors import QuotaExceeded, ValidationFailed
from workflows.ports import DispatchQueue, QuotaStore, RunLog, SignalStore
from workflows.services.access import rate_limit_headers, readable_run
from workflows.settings import Settings

# Kept a little past the longest lookback, so a wait beginning at its edge still finds it.
_KEEP_MARGIN_SECONDS = 3600


@dataclass(frozen=True)
class SignalReceipt:
    name: str
    signal_id: str
    sent_at: str
    run_id: str | None
    # False: the id was sent before; this is that signal, not a new one.
    new: bool
    # Sent to one run: whether it took it ("completed", "received", "ignored", "not_waiting").
    delivery: str | None = None
    headers: dict[str, str] | None = None


class SignalService:
    def __init__(
        self,
        store: SignalStore,
        runs: RunLog,
        waits: SignalWaits,
        queue: DispatchQueue,
        quotas: QuotaStore,
        settings: Settings,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._store = store
        self._runs = runs
        self._waits = waits
        self._queue = queue
        self._quotas = quotas
        self._settings = settings
        self._clock = clock

    def send(
        self,
        principal: Principal,
        name: str,
        signal_id: str,
        data: dict[str, Any],
        *,
        run_id: str | None = None,
    ) -> SignalReceipt:
        """Store the signal and deliver it (to `run_id` only, when given: the caller must be able
        to read that run)."""
        _check_key("name", name)
        _check_key("id", signal_id)
        check_size(data, "data", MAX_DATA_BYTES)
        tenant = principal.tenant_id
        if run_id is not None:
            readable_run(self._runs, principal, run_id)  # 404 another tenant's, 403 another user's
        headers = self._charge(tenant)
        now = self._clock()
        signal = Signal(name=name, signal_id=signal_id, data=data, sent_at=iso(now), run_id=run_id)
        expires = int((now + timedelta(seconds=KEEP_SECONDS + _KEEP_MARGIN_SECONDS)).timestamp())
        stored, new = self._store.put(tenant, signal, expires_at=expires)
        delivery: str | None = None
        if run_id is not None:
            delivery, _ = self._waits.deliver(tenant, run_id, stored)
        else:
            # Sent on a repeat too: the first request may have stored it and died before this.
            self._queue.send(DeliverSignal(tenant_id=tenant, name=stored.name, signal_id=stored.signal_id))
        return SignalReceipt(
            stored.name, stored.signal_id, stored.sent_at, stored.run_id, new, delivery, headers
        )

    def _charge(self, tenant_id: str) -> dict[str, str]:
        if self._settings.disable_quotas:
            return {}
        count = self._quotas.count_signal(tenant_id, self._settings.signal_quota_per_min, self._clock())
        if not count.allowed:
            raise QuotaExceeded(
                f"the tenant's {count.limit} signals a minute are used up; retry in {count.reset_seconds} s",
                headers={"Retry-After": str(max(1, count.reset_seconds)), **rate_limit_headers(count)},
                details=[{"field": "quota", "message": "signals per minute"}],
            )
        return rate_limit_headers(count)


def _check_key(field: str, value: str) -> None:
    try:
        check_name(value)
    except ValueError as exc:
        raise ValidationFailed(f"{field}: {exc}", details=[{"field": field, "message": str(exc)}]) from exc
