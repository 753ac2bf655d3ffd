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

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from workflows.api.guard import GuardedRoute
from workflows.api.routes.console import IMMUTABLE, REVALIDATE, _accepts_gzip
from workflows.errors import NotFound

STATIC = Path(__file__).resolve().parents[2] / "api_docs" / "static"
INDEX = "index.html"
VERSION_MARK = "%VERSION%"
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
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# GET only: the guard has no body to check, and authenticates nothing here.
router = APIRouter(route_class=GuardedRoute, tags=["docs"])


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str

    @cached_property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.body).hexdigest()[:20]}"'

    @cached_property
    def gzipped(self) -> bytes:
        # On the first request for this file only. Level 6: on Swagger UI's bundle (1.8 MB),
        # level 9 takes more than twice as long to save 0.4%.
        return gzip.compress(self.body, compresslevel=6, mtime=0)


@dataclass(frozen=True)
class Bundle:
    version: str
    index: Asset
    assets: dict[str, Asset]


@cache
def bundle() -> Bundle:
    """The static files, read on the first request (never at import)."""
    files = {
        path.name: path.read_bytes()
        for path in sorted(STATIC.iterdir())
        if path.is_file() and path.suffix in MEDIA_TYPES
    }
    digest = hashlib.sha256()
    for name, body in files.items():
        digest.update(f"{name}\0{len(body)}\0".encode())
        digest.update(body)
    version = digest.hexdigest()[:16]
    index = files.pop(INDEX).replace(VERSION_MARK.encode(), version.encode())
    return Bundle(
        version=version,
        index=Asset(index, MEDIA_TYPES[".html"]),
        assets={name: Asset(body, MEDIA_TYPES[Path(name).suffix]) for name, body in files.items()},
    )


def _serve(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
    }
    if asset.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    if _accepts_gzip(request):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


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
