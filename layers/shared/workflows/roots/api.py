"""ApiFunction's composition root and handler: the FastAPI app behind Mangum, wrapped by
Powertools. The app's routes get this root's parts as their services, each built on first use."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from workflows.api.app import create_app
from workflows.observability import logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.settings import get_settings


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first request (tests replace this function)."""
    return Parts(get_settings())


_asgi = Mangum(create_app(lambda: parts()), lifespan="off", api_gateway_base_path="/")


# Never log the event, whatever POWERTOOLS_LOGGER_LOG_EVENT says: its headers carry API keys
# and bearer tokens.
@logger.inject_lambda_context(
    correlation_id_path="requestContext.requestId", clear_state=True, log_event=False
)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _asgi(event, context)  # type: ignore[arg-type]
