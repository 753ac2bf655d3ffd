"""DlqRetryFunction's composition root and handler: one scheduled run of the webhook DLQ retry
worker (it builds the DLQ table, the delivery path and the run journal, nothing else).

Imports nothing from the HTTP edge (no fastapi, starlette or mangum): cold start matters here.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

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
    report = parts().dlq_worker.run(context.get_remaining_time_in_millis)
    return asdict(report)
