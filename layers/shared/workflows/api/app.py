"""The FastAPI application."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from workflows import ENGINE_VERSION
from workflows.api import deps, errors
from workflows.api.deps import ApiServices
from workflows.api.routes import (
    artifacts,
    control,
    corpus,
    definitions,
    keys,
    runs,
    schedules,
    secrets,
    step_types,
    webhooks,
)
from workflows.api.schemas import PREFIX


def create_app(services: Callable[[], ApiServices] | None = None) -> FastAPI:
    """The app; `services` gives what every route's `Services` gets (the composition root's)."""
    app = FastAPI(
        title="Workflows",
        version=ENGINE_VERSION,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    errors.install(app)
    if services is not None:
        app.dependency_overrides[deps.services] = services
    # Each router is included on the app itself, with the prefix: FastAPI builds a route's
    # validation models once per inclusion, and a router included without a prefix (into an
    # intermediate router) is built once more just to check its paths, which cold start pays.
    for router in (
        runs.router,
        control.router,
        webhooks.router,
        step_types.router,
        artifacts.router,
        corpus.router,
        schedules.router,
        keys.router,
        secrets.router,
    ):
        app.include_router(router, prefix=PREFIX)

    @app.get(f"{PREFIX}/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok", "engine_version": ENGINE_VERSION}

    # Last: its `/{workflow_id}` paths must not shadow any fixed path above; its collection path
    # is the prefix itself (`POST /api/v1/workflows`).
    app.include_router(definitions.router, prefix=PREFIX)
    return app
