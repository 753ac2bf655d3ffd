"""DlqRetryFunction's handler: one scheduled invocation of the webhook DLQ retry worker.

Imports nothing from the HTTP edge (no fastapi, starlette or mangum): cold start matters here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from workflows.bootstrap import get_container
from workflows.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = get_container().dlq_worker.run(context.get_remaining_time_in_millis)
    return asdict(report)
