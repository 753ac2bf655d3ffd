"""The FastAPI application, whole or only the routes that serve one group of paths."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.convertors import CONVERTOR_TYPES
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from workflows import ENGINE_VERSION
from workflows.api import deps, errors
from workflows.api.deps import ApiServices
from workflows.api.schemas import PREFIX

# The route modules of api/routes, in the order the app matches them. `definitions` comes last:
# its collection path is the prefix itself (`POST /api/v1/workflows`).
ROUTE_MODULES = (
    "runs",
    "control",
    "signals",
    "approvals",
    "webhooks",
    "step_types",
    "artifacts",
    "corpus",
    "schedules",
    "keys",
    "secrets",
    "me",
    "console",
    "docs",
    "definitions",
)
# The paths each route module serves (under the prefix), as its routes declare them; a test
# holds this table to the routers. An app needs, to answer a path exactly as the whole app
# would (404, 405, a slash redirect), every module with a route of that shape, whatever its
# method.
ROUTE_PATHS: dict[str, tuple[str, ...]] = {
    "runs": ("/run", "/runs", "/runs/{run_id}", "/runs/{run_id}/definition", "/runs/{run_id}/events"),
    "control": (
        "/runs/{run_id}/steps/{step_id}/approve",
        "/runs/{run_id}/steps/{step_id}/reject",
        "/runs/{run_id}/pause",
        "/runs/{run_id}/resume",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/retry",
    ),
    "signals": ("/signals", "/runs/{run_id}/signals"),
    "approvals": ("/approvals",),
    "webhooks": (
        "/runs/{run_id}/deliveries",
        "/webhooks/dlq",
        "/webhooks/dlq/{row_id}",
        "/webhooks/dlq/{row_id}/replay",
    ),
    "step_types": ("/step-types",),
    "artifacts": ("/runs/{run_id}/artifacts", "/runs/{run_id}/artifacts/{artifact_id}"),
    "corpus": ("/corpus/documents", "/corpus/documents/{doc_id}"),
    "schedules": ("/schedules", "/schedules/{schedule_id}"),
    "keys": ("/api-keys", "/api-keys/{key_id}"),
    "secrets": ("/secrets", "/secrets/{name}"),
    "me": ("/me",),
    "console": ("/console", "/console/", "/console/assets/{version}/{file}"),
    "docs": ("/docs", "/docs/", "/docs/assets/{version}/{file}"),
    "definitions": (
        "",
        "/validate",
        "/{workflow_id:uuid}",
        "/{workflow_id:uuid}/run",
        "/{workflow_id:uuid}/runs",
        "/{workflow_id:uuid}/versions",
    ),
}
OPENAPI = f"{PREFIX}/openapi.json"


def _segment_matches(template: str, segment: str) -> bool:
    if not template.startswith("{"):
        return template == segment
    _, _, convertor = template.strip("{}").partition(":")
    return re.fullmatch(CONVERTOR_TYPES[convertor or "str"].regex, segment) is not None


def _shape_matches(template: str, segments: list[str]) -> bool:
    parts = template.split("/")
    return len(parts) == len(segments) and all(map(_segment_matches, parts, segments))


def route_modules_for(path: str) -> tuple[str, ...]:
    """The route modules an app needs to answer `path` exactly as the whole app would: those
    with a route of its shape (a parameter matches what its convertor matches), with or
    without a trailing slash; all of them for the OpenAPI document."""
    if path in (OPENAPI, OPENAPI + "/"):
        return ROUTE_MODULES
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return ()  # outside the API: 404 from any app
    segments = path[len(PREFIX) :].rstrip("/").split("/")
    return tuple(
        name
        for name in ROUTE_MODULES
        if any(_shape_matches(template, segments) for template in ROUTE_PATHS[name])
    )


def _router(name: str) -> APIRouter:
    # By name, so an app that serves one group of paths never imports (and FastAPI never
    # builds) the others' routes and models: that is most of a cold start's own work.
    router: APIRouter = importlib.import_module(f"workflows.api.routes.{name}").router
    return router


def create_app(
    services: Callable[[], ApiServices] | None = None, modules: Collection[str] = ROUTE_MODULES
) -> FastAPI:
    """The app with the routes of `modules` (all by default); `services` gives what every
    route's `Services` gets (the composition root's)."""
    app = FastAPI(
        title="Workflows",
        version=ENGINE_VERSION,
        openapi_url=OPENAPI,
        # The page is the `docs` route module's: FastAPI's own loads Swagger UI from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.openapi = _openapi_with_credentials(app)  # type: ignore[method-assign]
    errors.install(app)
    if services is not None:
        app.state.services = services

    @app.get(f"{PREFIX}/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok", "engine_version": ENGINE_VERSION}

    # Each router is included on the app itself, with the prefix: FastAPI builds a route's
    # validation models once per inclusion, and a router included without a prefix (into an
    # intermediate router) is built once more just to check its paths, which cold start pays.
    for name in ROUTE_MODULES:
        if name in modules:
            app.include_router(_router(name), prefix=PREFIX)
    app.router.redirect_slashes = False
    app.router.default = _without_trailing_slash(app.router)
    return app


# The credentials the API accepts (docs/auth.md), as the OpenAPI page's "Authorize" offers them.
API_KEY_SCHEME = "ApiKey"
BEARER_SCHEME = "Bearer"
_SCHEMES: dict[str, dict[str, str]] = {
    API_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": "An API key: the single-user key, or a user's key in multi-user mode.",
    },
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT from the deployment's issuer (JwtIssuer), in multi-user mode.",
    },
}


def _openapi_with_credentials(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, with the credentials the API accepts declared, and named by every
    operation that refuses a request without them. FastAPI declares only what its own security
    dependencies read; the API reads its credentials itself (api/auth.py, api/guard.py)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = FastAPI.openapi(app)  # kept as app.openapi_schema, completed in place
        declare_credentials(document, bearer=_accepts_bearer(app))
        return document

    return openapi


def _accepts_bearer(app: FastAPI) -> bool:
    # The settings of the services the routes get (a test's override first, as deps.provided).
    provide = app.dependency_overrides.get(deps.services) or getattr(app.state, "services", None)
    if provide is None:
        return False  # a document built from the routes alone, without services
    services: ApiServices = provide()
    return services.settings.auth_mode == "multi_user" and bool(services.settings.jwt_issuer)


def declare_credentials(document: dict[str, Any], *, bearer: bool) -> None:
    """An operation needs credentials where it documents the 401 it answers without them: every
    route that authenticates lists it (`schemas.error_responses`, the guard), and no other
    route has a 401 to answer. A test holds each operation's declaration to its answer."""
    schemes = [API_KEY_SCHEME, BEARER_SCHEME] if bearer else [API_KEY_SCHEME]
    document.setdefault("components", {})["securitySchemes"] = {name: _SCHEMES[name] for name in schemes}
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "401" in operation.get("responses", {}):
                # Alternatives: either credential alone authenticates a request.
                operation["security"] = [{name: []} for name in schemes]


def _without_trailing_slash(router: Router) -> ASGIApp:
    """A path no route matches that ends in `/` is served as the path without it (`/runs/` as
    `/runs`, a 405 as a 405), instead of Starlette's redirect: an empty 307 that clients without
    redirects turned on (curl) showed as nothing at all. Matching requests never get here."""
    not_found = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        # One slash only: `/runs//` is no route (and a relative redirect from it would climb).
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/") and not path.endswith("//"):
            raw_path = scope.get("raw_path")
            stripped = {
                **scope,
                "path": path[:-1],
                "raw_path": raw_path[:-1]
                if isinstance(raw_path, bytes) and raw_path.endswith(b"/")
                else raw_path,
            }
            await router.app(stripped, receive, send)
            return
        await not_found(scope, receive, send)

    return default
