"""The operators' console: a small single-page app (one HTML page, one stylesheet, ES modules)
served as static files from the package (`workflows/console/static/`), docs/console.md.

The files hold no data, so they are served without credentials; the page reads everything from
this JSON API with the credential a person signs in with. Every answer carries a strict
Content-Security-Policy (scripts, styles and connections from this origin only, no inline
script or style, no framing, Trusted Types required for every HTML sink), `nosniff` and
`Referrer-Policy: no-referrer`.

Caching: the stylesheet and modules live under `assets/<version>/`, where the version is a hash
of every static file, and are immutable; `index.html` names the current version and is
revalidated on every load (`no-cache` with an ETag), so a deployment reaches browsers at once.
Bodies are gzipped once, on the first request, for clients that accept it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from workflows.api.guard import GuardedRoute
from workflows.api.static import IMMUTABLE, REVALIDATE, Asset, Bundle, load_bundle, security_headers, serve
from workflows.errors import NotFound

STATIC = Path(__file__).resolve().parents[2] / "console" / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        # Stricter than 'self': the page submits no form, so a form that did (the sign-in form
        # before its module ran) could only leak what was typed into a URL.
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = security_headers(CONTENT_SECURITY_POLICY)

# GET only: the guard has no body to check, and authenticates nothing here.
router = APIRouter(route_class=GuardedRoute, tags=["console"])


@cache
def bundle() -> Bundle:
    """The static files, read on the first request (never at import)."""
    return load_bundle(STATIC, MEDIA_TYPES)


def _serve(request: Request, asset: Asset, cache_control: str) -> Response:
    return serve(request, asset, cache_control, SECURITY_HEADERS)


@router.get("/console", include_in_schema=False)
def console_redirect() -> Response:
    # Relative, so it holds wherever the API is mounted (a custom domain's base path too).
    return RedirectResponse("console/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/console/", include_in_schema=False)
def console_page(request: Request) -> Response:
    """The page: it names the current assets' version, so browsers revalidate it each time."""
    return _serve(request, bundle().index, REVALIDATE)


@router.get("/console/assets/{version}/{file}", include_in_schema=False)
def console_asset(version: str, file: str, request: Request) -> Response:
    """A stylesheet or module of the current version; any other version answers 404 (a page
    loaded before a deployment reloads to get the new one)."""
    current = bundle()
    asset = current.assets.get(file)
    if version != current.version or asset is None:
        raise NotFound("no such console asset")
    return _serve(request, asset, IMMUTABLE)
