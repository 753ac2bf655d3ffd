"""What every request that may carry a body goes through before FastAPI reads it.

In this order, each answered at once (docs/auth.md, "Request limits"):
1. authentication from the headers alone: a request without a valid credential gets 401 before
   one byte of its body is read;
2. the body's size, from Content-Length and then while reading: 413 `payload_too_large` past
   `WORKFLOWS_MAX_BODY_BYTES`, without reading the rest;
3. its media type: 415 for anything but JSON;
4. its shape: 422 `too_deep` past 64 levels of nesting (measured on the bytes, before any
   recursive parser), 422 for NaN, Infinity, 1e400 or integers beyond 64 bits, 400 for
   malformed JSON.

The parsed document is handed to FastAPI as the request's JSON, so it is parsed once. The
principal is kept on the request for the `authenticate` dependency, so a route authenticates
once. FastAPI's own `max_body_size` would answer 413 before the 401, hence this route class.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from workflows.api import deps
from workflows.api.auth import principal_of
from workflows.api.schemas import error_responses
from workflows.domain.jsonlimits import parse_body
from workflows.errors import PayloadTooLarge, UnsupportedMediaType

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"body: request body exceeds {limit} bytes",
        details=[{"field": "body", "message": f"larger than {limit} bytes"}],
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_media_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got '{media_type or 'none'}'",
            details=[{"field": "header.content-type", "message": "expected application/json"}],
        )


class GuardedRoute(APIRoute):
    """An APIRoute that authenticates and checks the body before FastAPI parses it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {m.upper() for m in kwargs.get("methods") or ()}
        if methods & BODY_METHODS:
            # What the checks below may answer, in the OpenAPI document of every such route.
            kwargs["responses"] = {
                **error_responses(400, 401, 413, 415, 422),
                **(kwargs.get("responses") or {}),
            }
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method in BODY_METHODS:
                # The services the app's `deps.services` dependency gives (its composition root).
                services = deps.provided(request)
                request.state.principal = await run_in_threadpool(principal_of, request, services)
                body = await _read_limited(request, services.settings.max_body_bytes)
                # Starlette keeps the body it read here; FastAPI then takes `_json` as parsed.
                request._body = body
                if body:
                    _check_media_type(request)
                    request._json = parse_body(body)
            return await handler(request)

        return guarded
