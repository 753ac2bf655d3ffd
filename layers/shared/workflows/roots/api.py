"""ApiFunction's composition root and handler: the FastAPI app behind Mangum, wrapped by
Powertools. The app's routes get this root's parts as their services, each built on first use.

A request is served by an app holding only the routes of its group of paths (`/runs...`,
`/schedules...`, ...), built the first time one of that group arrives: a cold start pays for
the routes it serves, not for all forty. Each app answers its paths exactly as the whole app
would (the same routes, in the same order, with the same error handlers). Where Lambda runs the
init phase before any request arrives (provisioned concurrency, SnapStart), the whole app is
built then instead, and serves every request.
"""

from __future__ import annotations

import os
from functools import cache, lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from workflows.api.app import ROUTE_MODULES, create_app, route_modules_for
from workflows.observability import logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.settings import get_settings


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first request (tests replace this function)."""
    return Parts(get_settings())


@cache
def _asgi(modules: tuple[str, ...]) -> Mangum:
    return Mangum(create_app(lambda: parts(), modules), lifespan="off", api_gateway_base_path="/")


PREBUILT = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") in {"provisioned-concurrency", "snap-start"}


def route_modules(event: dict[str, Any]) -> tuple[str, ...]:
    """The route modules of the app that serves `event`."""
    if PREBUILT:
        return ROUTE_MODULES
    path = event.get("rawPath") or event.get("path")  # HTTP API (v2) or REST API (v1) events
    return route_modules_for(path if isinstance(path, str) else "/")


if PREBUILT:
    _asgi(ROUTE_MODULES)


# Never log the event, whatever POWERTOOLS_LOGGER_LOG_EVENT says: its headers carry API keys
# and bearer tokens.
@logger.inject_lambda_context(
    correlation_id_path="requestContext.requestId", clear_state=True, log_event=False
)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _asgi(route_modules(event))(event, context)  # type: ignore[arg-type]
