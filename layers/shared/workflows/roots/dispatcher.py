"""DispatcherFunction's composition root and handler: an SQS batch, one kick per record,
partial batch failures.

Builds the engine (and, for schedule fires, the run submission services) on first use; imports
nothing from the HTTP edge (no fastapi, starlette or mangum): cold start matters here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workflows.domain.messages import StartScheduledRun, parse_message
from workflows.observability import logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.settings import get_settings

# Report failed records even when every record failed, rather than raising: SQS then retries
# exactly those messages, and the failure shows in the response.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first message (tests replace this function)."""
    return Parts(get_settings())


class _Invocation:
    """The running invocation's context, for the engine's time budget."""

    context: LambdaContext | None = None

    @classmethod
    def remaining_ms(cls) -> int:
        return cls.context.get_remaining_time_in_millis() if cls.context else 60_000


@tracer.capture_method
def record_handler(record: SQSRecord) -> str:
    # A body that does not parse raises: SQS redrives it to the dead-letter queue, whose consumer
    # (roots/dispatch_dlq.py) logs it. An error on a run's last delivery fails the run.
    message = parse_message(record.body)
    if isinstance(message, StartScheduledRun):
        logger.append_keys(schedule_id=message.schedule_id, tenant_id=message.tenant_id)
        fired = parts().schedule_service.fire(message)
        logger.info("schedule fired", extra={"result": fired.result, "reason": fired.reason})
        metrics.add_metric(name=f"ScheduleFire_{fired.result}", unit="Count", value=1)
        return fired.result
    logger.append_keys(run_id=message.run_id, tenant_id=message.tenant_id)
    receives = record.attributes.approximate_receive_count
    outcome = parts().engine.process(
        message,
        _Invocation.remaining_ms,
        receive_count=int(receives) if receives and receives.isdigit() else 1,
        correlation_id=record.message_id,
    )
    logger.info("kick processed", extra={"action": outcome.action, "run_status": outcome.run_status})
    metrics.add_metric(name=f"Kick_{outcome.action}", unit="Count", value=1)
    return outcome.action


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    _Invocation.context = context
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
