"""The scheduled DLQ retry worker: re-delivers due webhook rows until delivered or exhausted.

One invocation (EventBridge, every minute) makes several passes `webhook_dlq_interval_sec`
apart while the remaining Lambda time leaves a safety margin. Each pass reads up to
`webhook_dlq_batch` due rows, claims each with a lease, delivers it and records the outcome:
delivered, rescheduled with exponential backoff and full jitter (a larger Retry-After wins), or
exhausted (a permanent failure, or `webhook_dlq_max_attempts` reached). A row whose claim fails
belongs to another worker and is skipped; a storage error on one row is logged and the pass
goes on. If the worker dies mid-delivery, its lease expires and the row is picked up again; the
receiver then sees the same `webhook-id` and can dedupe. With the run repository, every
attempt is appended to its run as a `webhook_delivery` event (host only, never the URL); a run
that no longer exists does not stop the worker. `replay` is an operator's immediate attempt.

A tenant's rows cost that tenant time, never another's:
- Every tenant with due rows is seen in each pass, whatever one tenant's backlog. Storage keeps
  pending rows per tenant (one partition each) and lists the tenants that have some, so a pass
  reads the list, then each tenant's oldest due rows with a share of the batch (room a tenant
  leaves goes to those with more); with more tenants than a pass reads, the next pass goes on
  from where this one stopped. Reading all tenants' rows oldest first in one query instead let
  one tenant's hundred rows fill every batch until they drained.
- At most `webhook_dlq_tenant_concurrency` rows of one tenant are in flight at once (of the
  pass's `webhook_dlq_concurrency`), so a hanging receiver holds that many slots and the others
  serve other tenants. A row whose tenant is at its bound waits, unclaimed, for that tenant's
  next free slot or the next pass; the rows go one tenant at a time in turn.
- Every delivery has one overall deadline (`webhook_dlq_timeout_sec`, connect to last byte), and
  a pass claims rows for at most one interval, so the next pass (reading every tenant's due rows
  afresh) is never more than an interval and a deadline away.
Only the HTTP requests run on the pool's threads; claims, outcomes, events, logs and metrics stay
on the invocation's thread. A row is claimed when a delivery slot is free, and no row is claimed
once the remaining time is below one delivery deadline plus the safety margin.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from itertools import zip_longest
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit

from workflows.clock import Clock, system_clock
from workflows.domain.backoff import full_jitter
from workflows.domain.delivery import DeliveryResult
from workflows.domain.dlq import DlqRow
from workflows.domain.secret_refs import SecretRefused, SecretUnavailable, resolve_request, scrub
from workflows.errors import DomainError
from workflows.observability import logger, metrics
from workflows.ports import Deliverer, DlqStore, RunLog, SecretLookup
from workflows.services.webhooks.journal import DeliveryJournal, DeliverySource, delivery_payload
from workflows.settings import Settings

# Room left at the end of an invocation: one delivery's timeout plus this, to record its outcome.
SAFETY_MARGIN_SEC = 5.0
# Lease slack beyond the delivery (one overall deadline of the timeout; the lease allows three).
LEASE_SLACK_SEC = 30.0
# A replay answers an operator's HTTP request (API Gateway gives up at 30 s): its delivery
# deadline is the worker's timeout, but never more than this.
REPLAY_TIMEOUT_CAP_SEC = 10.0
# Tenants whose rows one pass reads (one Query each, one more for a tenant with nothing due);
# with more tenants listed, the next pass goes on from where this one stopped.
TENANTS_PER_PASS = 100
_MAX_EXPONENT = 62


@dataclass
class WorkerReport:
    passes: int = 0
    delivered: int = 0
    rescheduled: int = 0
    exhausted: int = 0
    skipped: int = 0
    failed: int = 0


def backoff_seconds(
    attempts: int,
    base: float,
    max_backoff: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full jitter (domain.backoff): uniform in [0, min(max_backoff, base * 2 ** (attempts - 1))).

    `attempts` counts the attempts made so far, including the one that just failed.
    """
    return full_jitter(min(max(attempts, 1) - 1, _MAX_EXPONENT), base, max_backoff, rand)


def _rotated(tenants: Sequence[str], last: str | None) -> list[str]:
    """The sorted tenants, starting after `last` (the previous pass's last read) and wrapping."""
    if last is None:
        return list(tenants)
    after = bisect_right(tenants, last)
    return [*tenants[after:], *tenants[:after]]


def round_robin(rows: Sequence[DlqRow]) -> list[DlqRow]:
    """One row per tenant in turn; each tenant's rows, and the tenants, keep the rows' order."""
    by_tenant: dict[str, list[DlqRow]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant_id, []).append(row)
    return [row for turn in zip_longest(*by_tenant.values()) for row in turn if row is not None]


AttemptKind = Literal["delivered", "rescheduled", "exhausted"]


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt of a row: the row as recorded afterwards and what the receiver said."""

    row: DlqRow
    result: DeliveryResult
    kind: AttemptKind


class DlqWorker:
    def __init__(
        self,
        repo: DlqStore,
        deliverer: Deliverer,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        runs: RunLog | None = None,
        secrets: SecretLookup | None = None,
    ) -> None:
        self._repo = repo
        self._secrets = secrets
        # Each attempt is appended to its run as a `webhook_delivery` event when runs are given.
        self._journal = DeliveryJournal(runs) if runs is not None else None
        self._deliverer = deliverer
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        # The last tenant the previous pass read: the next starts after it. Kept in memory, so a
        # cold start begins again from the first tenant (the function runs warm every minute).
        self._last_tenant: str | None = None

    @property
    def deliverer(self) -> Deliverer:
        """The signed, policy-checked delivery path; the webhook step shares it."""
        return self._deliverer

    @property
    def lease_seconds(self) -> float:
        return 3 * self._settings.webhook_dlq_timeout_sec + LEASE_SLACK_SEC

    def run(self, remaining_ms: Callable[[], int]) -> WorkerReport:
        """Passes until the invocation's remaining time runs short; never sleeps past it."""
        report = WorkerReport()
        settings = self._settings
        if not settings.webhook_dlq_enabled:
            logger.info("dlq worker disabled")
            return report
        margin_ms = (settings.webhook_dlq_timeout_sec + SAFETY_MARGIN_SEC) * 1000
        while remaining_ms() > margin_ms:
            started = self._clock()
            self._pass(report, remaining_ms, margin_ms)
            report.passes += 1
            elapsed = (self._clock() - started).total_seconds()
            pause = max(0.0, settings.webhook_dlq_interval_sec - elapsed)
            if remaining_ms() - pause * 1000 <= margin_ms:
                break
            if pause > 0:
                self._sleep(pause)
        logger.info("dlq worker finished", extra=asdict(report))
        metrics.add_metric(name="WebhookDlqPasses", unit=MetricUnit.Count, value=report.passes)
        return report

    def _pass(self, report: WorkerReport, remaining_ms: Callable[[], int], margin_ms: float) -> None:
        started = self._clock()
        try:
            tenants = self._repo.pending_tenants()
        except DomainError as exc:
            report.failed += 1
            logger.warning("dlq due query failed", extra={"error_code": exc.code, "error": exc.message})
            metrics.add_metric(name="WebhookDlqFailed", unit=MetricUnit.Count, value=1)
            return
        rows = self._due_rows(tenants, report)
        claim_until = started + timedelta(seconds=self._settings.webhook_dlq_interval_sec)
        self._deliver_rows(rows, report, remaining_ms, margin_ms, claim_until)

    def _due_rows(self, tenants: Sequence[str], report: WorkerReport) -> list[DlqRow]:
        """This pass's rows: up to a batch, shared out between the tenants with due rows.

        Tenants are read in a rotating order (from the one after the last read by the previous
        pass), each with a share of what is left of the batch; room left by tenants with fewer
        rows then goes to those whose share was full. A tenant with nothing due is unlisted if
        it has no pending row at all.
        """
        batch = self._settings.webhook_dlq_batch
        order = _rotated(sorted(tenants), self._last_tenant)[:TENANTS_PER_PASS]
        taken: dict[str, list[DlqRow]] = {}
        full: list[str] = []
        idle: list[str] = []
        for index, tenant_id in enumerate(order):
            room = batch - sum(map(len, taken.values()))
            if room <= 0:
                break
            self._last_tenant = tenant_id
            share = max(1, room // (len(order) - index))
            rows = self._tenant_due(tenant_id, share, report)
            if rows is None:
                continue
            if not rows:
                idle.append(tenant_id)
                continue
            taken[tenant_id] = rows
            if len(rows) == share:
                full.append(tenant_id)
        for index, tenant_id in enumerate(full):
            room = batch - sum(map(len, taken.values()))
            if room <= 0:
                break
            extra = max(1, room // (len(full) - index))
            # The port reads from the oldest; the rows already taken come first and are skipped.
            more = self._tenant_due(tenant_id, len(taken[tenant_id]) + extra, report) or []
            seen = {row.id for row in taken[tenant_id]}
            taken[tenant_id] += [row for row in more if row.id not in seen][:extra]
        for tenant_id in idle:
            self._forget(tenant_id)
        return round_robin([row for rows in taken.values() for row in rows])

    def _tenant_due(self, tenant_id: str, limit: int, report: WorkerReport) -> list[DlqRow] | None:
        """The tenant's due rows; None (logged) when its query failed, which fails no other tenant."""
        try:
            return self._repo.due(tenant_id, limit)
        except DomainError as exc:
            report.failed += 1
            logger.warning(
                "dlq due query failed",
                extra={"tenant_id": tenant_id, "error_code": exc.code, "error": exc.message},
            )
            metrics.add_metric(name="WebhookDlqFailed", unit=MetricUnit.Count, value=1)
            return None

    def _forget(self, tenant_id: str) -> None:
        try:
            if self._repo.forget_if_empty(tenant_id):
                logger.info("dlq tenant has no pending rows", extra={"tenant_id": tenant_id})
        except DomainError as exc:
            # Harmless: the tenant stays listed and is checked again next pass.
            logger.warning(
                "dlq tenant not unlisted",
                extra={"tenant_id": tenant_id, "error_code": exc.code, "error": exc.message},
            )

    def _deliver_rows(
        self,
        rows: Sequence[DlqRow],
        report: WorkerReport,
        remaining_ms: Callable[[], int],
        margin_ms: float,
        claim_until: datetime,
    ) -> None:
        """Claims and delivers rows in order while a slot is free, at most the tenant's bound of
        one tenant's at once: a row whose tenant is at its bound waits (unclaimed, unwritten)
        while later rows of other tenants go ahead."""
        slots = self._settings.webhook_dlq_concurrency
        per_tenant = min(self._settings.webhook_dlq_tenant_concurrency, slots)
        timeout = self._settings.webhook_dlq_timeout_sec
        waiting = list(rows)
        in_flight: Counter[str] = Counter()
        with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="dlq-delivery") as pool:
            sending: dict[Future[DeliveryResult], DlqRow] = {}
            while waiting:
                index = None
                if len(sending) < slots:
                    index = next(
                        (i for i, r in enumerate(waiting) if in_flight[r.tenant_id] < per_tenant), None
                    )
                if index is None:
                    # Every slot is busy, or every waiting row's tenant is at its bound: either
                    # way a delivery is in flight, and its end frees what is needed.
                    self._settle(sending, in_flight, report)
                    continue
                if remaining_ms() <= margin_ms:
                    logger.info("dlq pass cut short", extra={"rows_left": len(waiting), "reason": "time"})
                    break
                if self._clock() >= claim_until:
                    # The next pass reads every tenant's due rows again, new ones included.
                    logger.info("dlq pass cut short", extra={"rows_left": len(waiting), "reason": "interval"})
                    break
                row = waiting.pop(index)
                try:
                    claimed = self._claim(row, report)
                except DomainError as exc:
                    self._row_failed(row, exc, report)
                    continue
                if claimed is not None:
                    sending[pool.submit(self._deliver, claimed, timeout)] = claimed
                    in_flight[claimed.tenant_id] += 1
            while sending:
                self._settle(sending, in_flight, report)

    def _claim(self, row: DlqRow, report: WorkerReport) -> DlqRow | None:
        claimed = self._repo.claim(row, self.lease_seconds)
        if claimed is None:
            report.skipped += 1
            logger.info("dlq row skipped", extra=_row_keys(row))
            metrics.add_metric(name="WebhookDlqSkipped", unit=MetricUnit.Count, value=1)
        return claimed

    def _settle(
        self,
        sending: dict[Future[DeliveryResult], DlqRow],
        in_flight: Counter[str],
        report: WorkerReport,
    ) -> None:
        """Records the outcome of the deliveries that have ended (waiting for at least one)."""
        done, _ = wait(sending, return_when=FIRST_COMPLETED)
        for future in done:
            claimed = sending.pop(future)
            in_flight[claimed.tenant_id] -= 1
            try:
                attempt = self._record(claimed, future.result(), "dlq_retry")
            except DomainError as exc:
                self._row_failed(claimed, exc, report)
                continue
            if attempt.kind == "delivered":
                report.delivered += 1
            elif attempt.kind == "exhausted":
                report.exhausted += 1
            else:
                report.rescheduled += 1

    @staticmethod
    def _row_failed(row: DlqRow, exc: DomainError, report: WorkerReport) -> None:
        # Throttling or a lost lease on this row; the others still get their turn.
        report.failed += 1
        logger.warning(
            "dlq row failed",
            extra={**_row_keys(row), "error_code": exc.code, "error": exc.message},
        )
        metrics.add_metric(name="WebhookDlqFailed", unit=MetricUnit.Count, value=1)

    def replay(self, tenant_id: str, row_id: str) -> Attempt:
        """An operator's replay: one attempt now, whatever the row's status, same webhook-id.

        NotFound for another tenant's row, Conflict while a worker is delivering it. The outcome
        is recorded like a worker's: a transient failure leaves the row pending (rescheduled with
        backoff) unless its attempts are used up. The delivery's deadline is the worker's
        timeout capped at REPLAY_TIMEOUT_CAP_SEC, so the operator's request is answered in time.
        """
        claimed = self._repo.claim_for_replay(tenant_id, row_id, self.lease_seconds)
        timeout = min(self._settings.webhook_dlq_timeout_sec, REPLAY_TIMEOUT_CAP_SEC)
        return self.attempt(claimed, source="replay", timeout=timeout)

    def attempt(self, claimed: DlqRow, *, source: DeliverySource, timeout: float | None = None) -> Attempt:
        """Deliver a leased row within `timeout` (default: the worker's), record the outcome
        under the lease, then tell the run."""
        result = self._deliver(claimed, timeout or self._settings.webhook_dlq_timeout_sec)
        return self._record(claimed, result, source)

    def _deliver(self, claimed: DlqRow, timeout: float) -> DeliveryResult:
        """The request of a leased row, within one overall deadline; records nothing."""
        try:
            request = resolve_request(
                self._secrets,
                claimed.tenant_id,
                claimed.secret_nonce,
                claimed.url,
                claimed.headers,
                claimed.body_json.encode("utf-8"),
            )
        except SecretUnavailable as exc:
            return DeliveryResult("transient" if exc.transient else "permanent", error=str(exc))
        except SecretRefused as exc:
            return DeliveryResult("permanent", error=f"{exc.code}: {exc.message}", code=exc.code)
        send = self._deliverer.deliver
        if request.allowed_hosts:  # the row carries a secret limited to some hosts
            send = partial(send, secret_hosts=request.allowed_hosts)
        result = send(
            request.url,
            request.body,
            claimed.webhook_id,
            request.headers,
            tenant_id=claimed.tenant_id,
            timeout=timeout,
        )
        return replace(result, error=scrub(result.error, request.values))

    def _record(self, claimed: DlqRow, result: DeliveryResult, source: DeliverySource) -> Attempt:
        """The outcome of a leased row's delivery, recorded under its lease, then told to the run."""
        attempts = claimed.attempts + 1
        fields = {
            **_row_keys(claimed),
            "attempts": attempts,
            "outcome": result.outcome,
            "status_code": result.status_code,
            "source": source,
        }
        error = result.error or result.outcome

        kind: AttemptKind
        if result.outcome == "delivered":
            stored = self._repo.mark_delivered(claimed)
            kind = "delivered"
            logger.info("dlq row delivered", extra=fields)
            metrics.add_metric(name="WebhookDlqDelivered", unit=MetricUnit.Count, value=1)
        elif result.outcome == "permanent" or attempts >= self._settings.webhook_dlq_max_attempts:
            stored = self._repo.mark_exhausted(claimed, error)
            kind = "exhausted"
            logger.warning("dlq row exhausted", extra={**fields, "error": error})
            metrics.add_metric(name="WebhookDlqExhausted", unit=MetricUnit.Count, value=1)
        else:
            delay = self._delay(attempts, result.retry_after)
            next_attempt_at = self._clock().timestamp() + delay
            stored = self._repo.reschedule(claimed, next_attempt_at, error)
            kind = "rescheduled"
            logger.info("dlq row rescheduled", extra={**fields, "error": error, "delay_sec": round(delay, 3)})
            metrics.add_metric(name="WebhookDlqRescheduled", unit=MetricUnit.Count, value=1)
        self._tell_run(stored, attempts, result, source)
        return Attempt(row=stored, result=result, kind=kind)

    def _tell_run(self, row: DlqRow, attempt: int, result: DeliveryResult, source: DeliverySource) -> None:
        if self._journal is None:
            return
        payload = delivery_payload(
            source=source,
            webhook_id=row.webhook_id,
            url=row.url,
            attempt=attempt,
            result=result,
            status=row.status,
            dlq_id=row.id,
        )
        try:
            self._journal.record(row.tenant_id, row.run_id, payload)
        except DomainError as exc:
            # The row's outcome is already recorded and is what the worker acts on; a missed
            # event must not turn a delivered row into a failure of the pass.
            logger.warning(
                "webhook delivery event not recorded",
                extra={**_row_keys(row), "error_code": exc.code, "error": exc.message},
            )

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        settings = self._settings
        delay = backoff_seconds(
            attempts, settings.webhook_dlq_base_sec, settings.webhook_dlq_max_backoff_sec, self._rand
        )
        if retry_after is not None:
            # Honour the receiver's wish, but never park a row longer than the longest backoff.
            delay = max(delay, min(retry_after, settings.webhook_dlq_max_backoff_sec))
        return delay


def _row_keys(row: DlqRow) -> dict[str, Any]:
    return {"dlq_id": row.id, "tenant_id": row.tenant_id, "run_id": row.run_id, "webhook_id": row.webhook_id}


__all__ = [
    "LEASE_SLACK_SEC",
    "REPLAY_TIMEOUT_CAP_SEC",
    "SAFETY_MARGIN_SEC",
    "TENANTS_PER_PASS",
    "Attempt",
    "AttemptKind",
    "Deliverer",
    "DlqWorker",
    "WorkerReport",
    "backoff_seconds",
    "round_robin",
]
