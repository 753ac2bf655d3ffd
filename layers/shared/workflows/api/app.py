"""The FastAPI application."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from workflows import ENGINE_VERSION
from workflows.api import errors
from workflows.api.routes import (
    artifacts,
    control,
    corpus,
    definitions,
    keys,
    runs,
    schedules,
    step_types,
    webhooks,
)
from workflows.api.schemas import PREFIX
from workflows.errors import UnsupportedMediaType


async def require_json_body(request: Request) -> None:
    """Bodies must be JSON: a form or plain text answers 415 instead of a confusing 422."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    body = await request.body()
    if not body:
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got '{media_type or 'none'}'",
            details=[{"field": "header.content-type", "message": "expected application/json"}],
        )


def create_app() -> FastAPI:
    app = FastAPI(
        title="Workflows",
        version=ENGINE_VERSION,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    errors.install(app)
    # Each router is included on the app itself, with the prefix: FastAPI builds a route's
    # validation models once per inclusion, and a router included without a prefix (into an
    # intermediate router) is built once more just to check its paths, which cold start pays.
    json_body = [Depends(require_json_body)]
    for router in (
        runs.router,
        control.router,
        webhooks.router,
        step_types.router,
        artifacts.router,
        corpus.router,
        schedules.router,
        keys.router,
    ):
        app.include_router(router, prefix=PREFIX, dependencies=json_body)

    @app.get(f"{PREFIX}/health", include_in_schema=False, dependencies=json_body)
    def health() -> dict[str, str]:
        return {"status": "ok", "engine_version": ENGINE_VERSION}

    # Last: its `/{workflow_id}` paths must not shadow any fixed path above; its collection path
    # is the prefix itself (`POST /api/v1/workflows`).
    app.include_router(definitions.router, prefix=PREFIX, dependencies=json_body)
    return app
