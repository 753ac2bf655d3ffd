"""The FastAPI application."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request

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
    api = APIRouter(prefix=PREFIX, dependencies=[Depends(require_json_body)])
    api.include_router(runs.router)
    api.include_router(control.router)
    api.include_router(webhooks.router)
    api.include_router(step_types.router)
    api.include_router(artifacts.router)
    api.include_router(corpus.router)
    api.include_router(schedules.router)
    api.include_router(keys.router)

    @api.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok", "engine_version": ENGINE_VERSION}

    app.include_router(api)
    # Last: its `/{workflow_id}` paths must not shadow any fixed path above. Included on the
    # app itself because its collection path is the prefix itself (`POST /api/v1/workflows`).
    app.include_router(definitions.router, prefix=PREFIX, dependencies=[Depends(require_json_body)])
    return app
