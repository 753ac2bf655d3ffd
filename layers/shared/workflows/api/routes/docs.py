"""The API's OpenAPI page (`/docs`): Swagger UI on this service's own document (`openapi.json`),
every file served by the service itself from the package (`workflows/api_docs/static/`), so the
page works where no CDN can be reached.

Swagger UI is vendored as published on npm (`swagger-ui-dist` 5.36.0: `swagger-ui-bundle.js`,
`swagger-ui.css`, `favicon-32x32.png`, with its `LICENSE` and `NOTICE`), unchanged; to update it,
replace those files with a newer release's. Vendored rather than pinned from PyPI: the packages
there that ship Swagger UI carry an older major version (which cannot render OpenAPI 3.1), or
ten megabytes of source maps and other bundles that the layer would carry for nothing.
`index.html` and `start.js` are this service's own. The files are read on the page's first
request, never at import, and only an app that serves `/docs...` (or the whole app) imports
this module.

As for the console (api/routes/console.py): the files hold no data and are served without
credentials; the assets live under `docs/assets/<version>/` (a hash of every file) and are
immutable, the page names the current version and is revalidated each time, and bodies are
gzipped for clients that accept it, each on its first request. Every answer carries a strict
Content-Security-Policy: the console's, less Trusted Types (`CONTENT_SECURITY_POLICY` says why);
the browser tests check that the page breaks none of it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from workflows.api.guard import GuardedRoute
from workflows.api.static import IMMUTABLE, REVALIDATE, Asset, Bundle, load_bundle, security_headers, serve
from workflows.errors import NotFound

STATIC = Path(__file__).resolve().parents[2] / "api_docs" / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Swagger UI's stylesheet draws its icons as data: URLs.
        "img-src 'self' data:",
        # The document, and the requests "Try it out" sends: this API only.
        "connect-src 'self'",
        "base-uri 'none'",
        # Swagger UI's forms (Authorize, Try it out) are sent by script, never submitted.
        "form-action 'none'",
        "frame-ancestors 'none'",
        # Unlike the console's, no Trusted Types: Swagger UI writes its (sanitised) Markdown
        # through innerHTML as plain strings, which `require-trusted-types-for` would refuse.
    )
)
SECURITY_HEADERS = security_headers(CONTENT_SECURITY_POLICY)

# GET only: the guard has no body to check, and authenticates nothing here.
router = APIRouter(route_class=GuardedRoute, tags=["docs"])


@cache
def bundle() -> Bundle:
    """The static files, read on the first request (never at import)."""
    return load_bundle(STATIC, MEDIA_TYPES)


def _serve(request: Request, asset: Asset, cache_control: str) -> Response:
    return serve(request, asset, cache_control, SECURITY_HEADERS)


@router.get("/docs", include_in_schema=False)
def docs_page(request: Request) -> Response:
    """The page: it names the current assets' version, so browsers revalidate it each time."""
    return _serve(request, bundle().index, REVALIDATE)


@router.get("/docs/", include_in_schema=False)
def docs_redirect() -> Response:
    # The page's URLs are relative to `.../docs`: served at `.../docs/` they would all miss.
    # Relative, so it holds wherever the API is mounted.
    return RedirectResponse("../docs", status_code=308, headers=SECURITY_HEADERS)


@router.get("/docs/assets/{version}/{file}", include_in_schema=False)
def docs_asset(version: str, file: str, request: Request) -> Response:
    """A file of the current version; any other version answers 404 (a page loaded before a
    deployment reloads to get the new one)."""
    current = bundle()
    asset = current.assets.get(file)
    if version != current.version or asset is None:
        raise NotFound("no such docs asset")
    return _serve(request, asset, IMMUTABLE)
