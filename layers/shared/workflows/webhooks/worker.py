"""The scheduled DLQ retry worker: re-delivers due webhook rows until delivered or exhausted.

One invocation (EventBridge, every minute) makes several passes `webhook_dlq_interval_sec`
apart while the remaining Lambda time leaves a safety margin. Each pass reads up to
`webhook_dlq_batch` due rows, claims each with a lease, delivers it and records the outcome:
delivered, rescheduled with exponential backoff and full jitter (a larger Retry-After wins), or
exhausted (a permanent failure, or `webhook_dlq_max_attempts` reached). A row whose claim fails
belongs to another worker and is skipped; a storage error on one row is logged and the pass
goes on. If the worker dies mid-delivery, its lease expires and the row is picked up again; the
receiver then sees the same `webhook-id` and can dedupe.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from workflows.clock import Clock, system_clock
from workflows.errors import DomainError
from workflows.observability import logger, metrics
from workflows.settings import Settings
from workflows.webhooks.delivery import Deliverer, HttpDeliverer
from workflows.webhooks.dlq import DlqRow, WebhookDlqRepository
from workflows.webhooks.egress import EgressPolicy

# Room left at the end of an invocation: one delivery's timeout plus this, to record its outcome.
SAFETY_MARGIN_SEC = 5.0
# Lease slack beyond the worst-case delivery (connect, send and read each bounded by the timeout).
LEASE_SLACK_SEC = 30.0
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
    """Full jitter: uniform in [0, min(max_backoff, base * 2 ** (attempts - 1))).

    `attempts` counts the attempts made so far, including the one that just failed.
    """
    exponent = min(max(attempts, 1) - 1, _MAX_EXPONENT)
    cap = min(max_backoff, base * 2.0**exponent)
    return cap * rand()


class DlqWorker:
    def __init__(
        self,
        repo: WebhookDlqRepository,
        deliverer: Deliverer,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._repo = repo
        self._deliverer = deliverer
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

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
        try:
            rows = self._repo.due(self._settings.webhook_dlq_batch)
        except DomainError as exc:
            report.failed += 1
            logger.warning("dlq due query failed", extra={"error_code": exc.code, "error": exc.message})
            metrics.add_metric(name="WebhookDlqFailed", unit=MetricUnit.Count, value=1)
            return
        for index, row in enumerate(rows):
            if remaining_ms() <= margin_ms:
                logger.info("dlq pass cut short", extra={"rows_left": len(rows) - index})
                return
            try:
                self._process(row, report)
            except DomainError as exc:
                # Throttling or a lost lease on this row; the others still get their turn.
                report.failed += 1
                logger.warning(
                    "dlq row failed",
                    extra={**_row_keys(row), "error_code": exc.code, "error": exc.message},
                )
                metrics.add_metric(name="WebhookDlqFailed", unit=MetricUnit.Count, value=1)

    def _process(self, row: DlqRow, report: WorkerReport) -> None:
        claimed = self._repo.claim(row, self.lease_seconds)
        if claimed is None:
            report.skipped += 1
            logger.info("dlq row skipped", extra=_row_keys(row))
            metrics.add_metric(name="WebhookDlqSkipped", unit=MetricUnit.Count, value=1)
            return

        result = self._deliverer.deliver(
            claimed.url,
            claimed.body_json.encode("utf-8"),
            claimed.webhook_id,
            claimed.headers,
            tenant_id=claimed.tenant_id,
        )
        attempts = claimed.attempts + 1
        fields = {
            **_row_keys(claimed),
            "attempts": attempts,
            "outcome": result.outcome,
            "status_code": result.status_code,
        }
        error = result.error or result.outcome

        if result.outcome == "delivered":
            self._repo.mark_delivered(claimed)
            report.delivered += 1
            logger.info("dlq row delivered", extra=fields)
            metrics.add_metric(name="WebhookDlqDelivered", unit=MetricUnit.Count, value=1)
        elif result.outcome == "permanent" or attempts >= self._settings.webhook_dlq_max_attempts:
            self._repo.mark_exhausted(claimed, error)
            report.exhausted += 1
            logger.warning("dlq row exhausted", extra={**fields, "error": error})
            metrics.add_metric(name="WebhookDlqExhausted", unit=MetricUnit.Count, value=1)
        else:
            delay = self._delay(attempts, result.retry_after)
            next_attempt_at = self._clock().timestamp() + delay
            self._repo.reschedule(claimed, next_attempt_at, error)
            report.rescheduled += 1
            logger.info("dlq row rescheduled", extra={**fields, "error": error, "delay_sec": round(delay, 3)})
            metrics.add_metric(name="WebhookDlqRescheduled", unit=MetricUnit.Count, value=1)

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


def build_dlq_worker(
    settings: Settings,
    dynamodb_client: Any,
    *,
    clock: Clock = system_clock,
) -> tuple[WebhookDlqRepository, DlqWorker]:
    """The repository and worker as the composition root wires them."""
    secrets = [settings.webhook_secret.get_secret_value()] if settings.webhook_secret else []
    repo = WebhookDlqRepository(
        dynamodb_client,
        settings.webhook_dlq_table,
        clock=clock,
        retention_days=settings.run_retention_days,
    )
    # Called from the composition root, which owns the environment: the per-tenant
    # WORKFLOWS_WEBHOOK_{ALLOW,DENY}LIST_<TENANT> overrides are read here, once.
    policy = EgressPolicy.from_settings(settings, os.environ)
    deliverer = HttpDeliverer(secrets, timeout=settings.webhook_dlq_timeout_sec, policy=policy, clock=clock)
    worker = DlqWorker(repo, deliverer, settings, clock=clock, sleep=time.sleep)
    return repo, worker


__all__ = [
    "LEASE_SLACK_SEC",
    "SAFETY_MARGIN_SEC",
    "Deliverer",
    "DlqWorker",
    "WorkerReport",
    "backoff_seconds",
    "build_dlq_worker",
]
