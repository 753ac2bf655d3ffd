"""DispatcherFunction's composition root and handler: an SQS batch, one kick per record,
partial batch failures.

The records of a batch are worked side by side (Powertools' BatchProcessor with each record on a
thread of its own): a record that waits on a slow call out holds only itself, never the other
nine (docs/architecture.md, "Fair shares"). Each record's log keys are bound to
its thread and cleared after it, so no record's keys reach another's lines.

Builds the engine (and, for schedule fires, the run submission services) on first use; imports
nothing from the HTTP edge (no fastapi, starlette or mangum): cold start matters here.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workflows.domain.messages import (
    CancelChildren,
    ChildEnded,
    DeliverSignal,
    StartScheduledRun,
    parse_message,
)
from workflows.observability import count, logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.settings import get_settings

# The template's batch size: every record of a batch gets a thread at once.
RECORD_THREADS = 10

RemainingMs = Callable[[], int]


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first message (tests replace this function)."""
    return Parts(get_settings())


def work_record(record: SQSRecord, remaining_ms: RemainingMs) -> str:
    """One record, on the thread it runs on; raises to report that this message failed."""
    # A body that does not parse raises: SQS redrives it to the dead-letter queue, whose consumer
    # (roots/dispatch_dlq.py) logs it. An error on a run's last delivery fails the run.
    try:
        message = parse_message(record.body)
        if isinstance(message, StartScheduledRun):
            logger.thread_safe_append_keys(schedule_id=message.schedule_id, tenant_id=message.tenant_id)
            fired = parts().schedule_service.fire(message)
            logger.info("schedule fired", extra={"result": fired.result, "reason": fired.reason})
            count("ScheduleFires", result=fired.result)
            return fired.result
        if isinstance(message, DeliverSignal):
            logger.thread_safe_append_keys(signal_id=message.signal_id, tenant_id=message.tenant_id)
            taken = parts().signal_waits.deliver_page(message)
            logger.info("signal delivered", extra={"runs": taken, "signal_name": message.name})
            return "signal_delivered"
        if isinstance(message, ChildEnded):
            logger.thread_safe_append_keys(run_id=message.run_id, tenant_id=message.tenant_id)
            recorded = parts().children.ended(message)
            logger.info("child run's end", extra={"result": recorded, "child_run_id": message.child_run_id})
            count("ChildEnds", result=recorded)
            return recorded
        if isinstance(message, CancelChildren):
            logger.thread_safe_append_keys(run_id=message.run_id, tenant_id=message.tenant_id)
            changed = parts().children.control_page(message)
            logger.info(
                "children controlled",
                extra={"action": message.action, "changed": changed, "start": message.start},
            )
            return {"cancel": "children_cancelled", "pause": "children_paused"}.get(
                message.action, "children_resumed"
            )
        logger.thread_safe_append_keys(run_id=message.run_id, tenant_id=message.tenant_id)
        receives = record.attributes.approximate_receive_count
        outcome = parts().engine.process(
            message,
            remaining_ms,
            receive_count=int(receives) if receives and receives.isdigit() else 1,
            correlation_id=record.message_id,
        )
        logger.info("kick processed", extra={"action": outcome.action, "run_status": outcome.run_status})
        count("Kicks", action=outcome.action)
        return outcome.action
    finally:
        logger.thread_safe_clear_keys()


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' SQS batch processor, its records worked on threads side by side.

    Not AsyncBatchProcessor: outside Lambda it runs its loop with asyncio.run, which leaves the
    calling thread without an event loop, and the local stack and the tests call the API's
    Mangum handler (which needs one) from the same thread. Recording an outcome appends to a
    list, which is safe from several threads.
    """

    def process(self) -> list[tuple[Any, ...]]:
        with ThreadPoolExecutor(
            max_workers=max(1, min(len(self.records), RECORD_THREADS)), thread_name_prefix="dispatch-record"
        ) as threads:
            return list(threads.map(self._process_record, self.records))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    remaining_ms: RemainingMs = context.get_remaining_time_in_millis

    def record_handler(record: SQSRecord) -> str:
        return work_record(record, remaining_ms)

    # A processor per invocation: it holds the batch's records and outcomes (the local stack
    # calls this handler from several pollers at once; Lambda, one invocation at a time). Failed
    # records are reported even when every record failed, rather than raising: SQS then retries
    # exactly those messages.
    processor = ConcurrentBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
