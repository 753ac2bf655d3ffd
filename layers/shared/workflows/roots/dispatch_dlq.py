"""DispatchDlqFunction's composition root and handler: the dispatch queue's dead letters.

A message lands here after the dispatch queue delivered it `maxReceiveCount` times without
success (the dispatcher fails the run itself on the last delivery, so this is the net under
that net: the failing write failed too, or the function timed out on every delivery). Each run
message fails its run with `internal_error` (`Endings.give_up`: events, slot, completion
webhook; for a child's end, the parent that could not record it); a schedule fire is logged at
ERROR (its schedule fires again on its next tick); so is a cancellation of child runs; a body
that does not parse is logged at ERROR and dropped. Logged with the message id, the correlation
id the run's error names.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workflows.domain.messages import (
    AdvanceMessage,
    CancelChildren,
    ChildEnded,
    DeliverSignal,
    StartScheduledRun,
    parse_message,
)
from workflows.engine.endings import internal_error
from workflows.observability import logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.settings import get_settings

# Dead letters that lose nothing when dropped, each logged at ERROR for a human: what to say, its
# metric, the record's answer, and the keys that name it.
_DROPPED: dict[type, tuple[str, str, str, Callable[[Any], dict[str, str]]]] = {
    # The schedule fires again on its next tick.
    StartScheduledRun: (
        "a schedule's fire was dead-lettered; it fires again on its next tick",
        "ScheduleFiresDeadLettered",
        "schedule_fire_dropped",
        lambda m: {"schedule_id": m.schedule_id},
    ),
    # The signal is stored: each run waiting for it finds it at its wait's next hop.
    DeliverSignal: (
        "a signal's delivery was dead-lettered; waiting runs find it on their next look back",
        "SignalDeliveriesDeadLettered",
        "signal_delivery_dropped",
        lambda m: {"signal_id": m.signal_id},
    ),
    # Cancelled: the children run on to their own ends; their parent has ended and ignores them.
    # Paused or resumed: the children go on as they were (a paused child is resumed by hand, or
    # ends with its parent's wait).
    CancelChildren: (
        "a page of child runs to cancel, pause or resume was dead-lettered; those children go on"
        " as they were",
        "ChildCancelsDeadLettered",
        "cancel_children_dropped",
        lambda m: {"run_id": m.run_id, "action": m.action},
    ),
}

# A record that fails here (the run could not be read or written) goes back to the dead-letter
# queue and is tried again after its visibility timeout.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first message (tests replace this function)."""
    return Parts(get_settings())


@tracer.capture_method
def record_handler(record: SQSRecord) -> str:
    keys = {"message_id": record.message_id, "correlation_id": record.message_id}
    try:
        message = parse_message(record.body)
    except Exception:  # noqa: BLE001 - nothing can act on it: log it for a human and drop it
        logger.exception("dead-lettered dispatch message does not parse; dropped", extra=keys)
        metrics.add_metric(name="DispatchDeadLettersUnparsed", unit="Count", value=1)
        return "dropped"
    dropped = _DROPPED.get(type(message))
    if dropped is not None:
        what, metric, answer, named = dropped
        logger.error(what, extra={**keys, **named(message), "tenant_id": message.tenant_id})
        metrics.add_metric(name=metric, unit="Count", value=1)
        return answer
    assert isinstance(message, AdvanceMessage | ChildEnded)
    # A run's kick, or a child's end its parent could not record: the run fails.
    logger.error(
        "dispatch message dead-lettered; failing its run",
        extra={**keys, "run_id": message.run_id, "tenant_id": message.tenant_id},
    )
    error = internal_error("the run's dispatch message failed on every delivery", record.message_id)
    outcome = parts().endings.give_up(message.tenant_id, message.run_id, error)
    metrics.add_metric(name="DispatchDeadLetters", unit="Count", value=1)
    return outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
