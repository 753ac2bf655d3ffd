"""`webhook_delivery` events: every attempt to deliver a run's webhook is told in its event log.

The payload names the destination's host only: a URL's path and query string often carry
tokens, and headers carry credentials, so neither is ever written to an event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from workflows.domain.run import EventType, NewEvent
from workflows.errors import NotFound
from workflows.observability import logger
from workflows.ports import RunLog

if TYPE_CHECKING:
    # Annotations only: the API reads the journal's helpers without loading httpx (cold start).
    from workflows.domain.delivery import DeliveryResult

ERROR_CHARS = 200

DeliverySource = Literal["dlq_retry", "completion", "replay"]


def host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def delivery_payload(
    *,
    source: DeliverySource,
    webhook_id: str,
    url: str,
    attempt: int,
    result: DeliveryResult,
    status: str,
    dlq_id: str | None = None,
) -> dict[str, Any]:
    """The event payload. `status` is where the delivery stands after this attempt: the DLQ
    row's status (pending, delivered, exhausted), or `failed` for a permanent failure that has
    no row."""
    error = result.error if result.outcome != "delivered" else None
    return {
        "source": source,
        "webhook_id": webhook_id,
        "dlq_id": dlq_id,
        "attempt": attempt,
        "outcome": result.outcome,
        "status": status,
        "status_code": result.status_code,
        "error": None if error is None else error[:ERROR_CHARS],
        "host": host_of(url),
    }


class DeliveryJournal:
    """Appends `webhook_delivery` events without changing the run's state."""

    def __init__(self, runs: RunLog) -> None:
        self._runs = runs

    def record(self, tenant_id: str, run_id: str, payload: dict[str, Any]) -> bool:
        """False when the run no longer exists (its retention ended): nothing to tell then."""
        if not run_id:
            return False
        try:
            self._runs.append_events(
                tenant_id, run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY, payload=payload)]
            )
        except NotFound:
            logger.info(
                "webhook delivery not recorded: run not found",
                extra={"tenant_id": tenant_id, "run_id": run_id, "webhook_id": payload.get("webhook_id")},
            )
            return False
        return True


__all__ = ["ERROR_CHARS", "DeliveryJournal", "DeliverySource", "delivery_payload", "host_of"]
