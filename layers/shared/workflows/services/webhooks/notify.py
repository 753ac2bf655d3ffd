"""Run-completion notifications: a signed POST to the definition's `on_completion_webhook`.

Called by the engine after a run's terminal state is committed. The body is a JSON document
`{type, run_id, tenant_id, workflow_id, status, status_reason, outputs, error, ended_at, links}`
where `type` is `run.completed`, `run.failed` or `run.cancelled`. It goes through the same
deliverer as webhook steps and DLQ retries (signature, the tenant's egress policy).

The `webhook-id` depends only on the run and its terminal commit (run id, status, ended_at), so
calling `notify` again for the same commit (a redelivered dispatch message) sends the same id
and, after a transient failure, finds the same DLQ row instead of adding a second one. A run
that is retried and ends again gets a new id.

Outcomes: delivered; transient -> a pending DLQ row the retry worker picks up (Retry-After
honoured for its first retry); permanent -> no row, the failure is logged and recorded on the
run. Every attempt appends a `webhook_delivery` event. Delivery problems never raise; storage
errors (throttling, an outage) do, so the caller's message is retried.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from workflows.clock import Clock, system_clock
from workflows.domain.delivery import DeliveryResult
from workflows.domain.dlq import DlqRow
from workflows.domain.run import Run, RunStatus
from workflows.errors import Conflict
from workflows.observability import logger
from workflows.ports import Deliverer, DlqStore, RunLog, RunOutputStore
from workflows.services.outputs import resolved_run
from workflows.services.webhooks.journal import DeliveryJournal, delivery_payload, host_of

# Paths of the public API the notification links to (relative to the API's base URL).
RUNS_PATH = "/api/v1/workflows/runs"
# A receiver's Retry-After never parks the first retry longer than this.
MAX_FIRST_RETRY_DELAY_SEC = 3600.0

NotificationType = Literal["run.completed", "run.failed", "run.cancelled"]

EVENT_TYPES: dict[RunStatus, NotificationType] = {
    RunStatus.SUCCEEDED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
}


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def notification_webhook_id(run: Run) -> str:
    return f"msg_{_digest(run.run_id, run.status.value, run.ended_at or '')}"


def notification_body(run: Run) -> dict[str, Any]:
    base = f"{RUNS_PATH}/{run.run_id}"
    return {
        "type": EVENT_TYPES[run.status],
        "run_id": run.run_id,
        "tenant_id": run.tenant_id,
        "workflow_id": run.workflow_id,
        "status": run.status.value,
        "status_reason": run.status_reason,
        "outputs": run.outputs,
        "error": run.error,
        "ended_at": run.ended_at,
        "links": {"self": base, "events": f"{base}/events", "definition": f"{base}/definition"},
    }


@dataclass(frozen=True)
class Notification:
    """What happened to one notification: the delivery result and the DLQ row, if one was added."""

    webhook_id: str
    result: DeliveryResult
    dlq_id: str | None = None


class CompletionNotifier:
    def __init__(
        self,
        deliverer: Deliverer,
        dlq_repo: DlqStore,
        runs: RunLog,
        outputs: RunOutputStore,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._deliverer = deliverer
        self._dlq = dlq_repo
        self._journal = DeliveryJournal(runs)
        self._outputs = outputs
        self._clock = clock

    def notify(self, run: Run, url: str) -> Notification:
        """Deliver the run's completion notification once; hand a transient failure to the DLQ.

        `run` must be terminal (ValueError otherwise: a caller's mistake, not a delivery problem).
        """
        if run.status not in EVENT_TYPES:
            raise ValueError(f"run {run.run_id} is {run.status.value}, not terminal")
        webhook_id = notification_webhook_id(run)
        body = json.dumps(
            notification_body(resolved_run(self._outputs, run)), separators=(",", ":"), default=str
        )
        result = self._deliverer.deliver(url, body.encode("utf-8"), webhook_id, tenant_id=run.tenant_id)
        keys = {
            "tenant_id": run.tenant_id,
            "run_id": run.run_id,
            "webhook_id": webhook_id,
            "host": host_of(url),
        }

        dlq_id: str | None = None
        if result.outcome == "delivered":
            status = "delivered"
            logger.info(
                "completion notification delivered", extra={**keys, "status_code": result.status_code}
            )
        elif result.outcome == "transient":
            dlq_id = self._queue(run, url, body, webhook_id, result)
            status = "pending"
            logger.info(
                "completion notification queued for retry",
                extra={**keys, "dlq_id": dlq_id, "status_code": result.status_code, "error": result.error},
            )
        else:
            status = "failed"
            logger.warning(
                "completion notification refused",
                extra={**keys, "status_code": result.status_code, "error": result.error},
            )

        payload = delivery_payload(
            source="completion",
            webhook_id=webhook_id,
            url=url,
            attempt=1,
            result=result,
            status=status,
            dlq_id=dlq_id,
        )
        self._journal.record(run.tenant_id, run.run_id, payload)
        return Notification(webhook_id=webhook_id, result=result, dlq_id=dlq_id)

    def _queue(self, run: Run, url: str, body: str, webhook_id: str, result: DeliveryResult) -> str:
        now = self._clock()
        delay = min(result.retry_after or 0.0, MAX_FIRST_RETRY_DELAY_SEC)
        row = DlqRow.new(
            tenant_id=run.tenant_id,
            run_id=run.run_id,
            url=url,
            body_json=body,
            now=now,
            webhook_id=webhook_id,
            last_error=result.error or result.outcome,
            attempts=1,
            next_attempt_at=now.timestamp() + delay,
        )
        # One row per terminal commit: a second notify for the same commit finds it.
        row = row.model_copy(update={"id": f"ntf_{_digest(run.tenant_id, webhook_id)}"})
        try:
            self._dlq.add(row)
        except Conflict:
            logger.info("completion notification already queued", extra={"dlq_id": row.id})
        return row.id


__all__ = [
    "EVENT_TYPES",
    "CompletionNotifier",
    "Notification",
    "notification_body",
    "notification_webhook_id",
]
