"""SweeperFunction's composition root and handler: on a schedule, re-kick the runs the service
lost track of, or fail them `stalled` (engine/sweep.py)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from workflows.clock import parse_iso
from workflows.observability import logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.settings import get_settings


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first invocation (tests replace this function)."""
    return Parts(get_settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The time left, from Lambda's context (a context without it: no bound but the clock's).
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return asdict(parts().sweeper.sweep(scheduled_time(event), remaining))


def scheduled_time(event: dict[str, Any]) -> datetime | None:
    """The moment the schedule meant this sweep for (EventBridge Scheduler's scheduled time,
    which a retried invocation keeps); None for an event without one (the clock's now)."""
    value = event.get("time") if isinstance(event, dict) else None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = parse_iso(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
