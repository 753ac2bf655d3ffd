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

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from workflows.api.guard import GuardedRoute
from workflows.errors import NotFound

STATIC = Path(__file__).resolve().parents[2] / "console" / "static"
INDEX = "index.html"
VERSION_MARK = "%VERSION%"
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
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# GET only: the guard has no body to check, and authenticates nothing here.
router = APIRouter(route_class=GuardedRoute, tags=["console"])


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        digest = hashlib.sha256(body).hexdigest()[:20]
        return cls(body, gzip.compress(body, compresslevel=9, mtime=0), media_type, f'"{digest}"')


@dataclass(frozen=True)
class Bundle:
    version: str
    index: Asset
    assets: dict[str, Asset]


@cache
def bundle() -> Bundle:
    """The static files, read and compressed on the first request (never at import)."""
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
        index=Asset.of(index, MEDIA_TYPES[".html"]),
        assets={name: Asset.of(body, MEDIA_TYPES[Path(name).suffix]) for name, body in files.items()},
    )


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            return quality == "" or _positive(quality)
    return False


def _positive(quality: str) -> bool:
    try:
        return float(quality) > 0
    except ValueError:
        return False


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
