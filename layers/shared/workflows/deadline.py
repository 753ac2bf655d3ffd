"""One overall deadline for an HTTP call out: connect, TLS, sending, status line, headers and body.

httpx's timeouts bound each network operation on its own, so a peer that sends its status line,
headers or body one byte at a time never trips them. Inside `call_deadline(seconds)`, every
operation on a connection made through `DeadlineBackend` (`DeadlineTransport` for an httpx
client) gets the smaller of its own timeout and the time left as its socket timeout, and an
operation that would start after the deadline fails at once. httpcore then closes the connection
and httpx raises its usual `ConnectTimeout`, `WriteTimeout` or `ReadTimeout`, so callers report
an overrun exactly like any other timeout.

Each operation is bounded as a whole: CPython bounds a TLS handshake and an SSL read or write by
the socket timeout as a whole, a plain read is one `recv`, and writes are cut into slices so a
peer that reads the request slowly is bounded too. Not bounded: DNS lookups (`getaddrinfo` has no
timeout; the webhook policy resolves before connecting, and the time it takes counts against the
deadline) and, for a host with several addresses, the default backend's attempts after the first.

The deadline belongs to the calling thread (a context variable): a shared client's pooled
connections follow whichever call uses them, and a nested deadline never extends an outer one.

The steps that call out (steps/llm.py, steps/retrieval.py) and the webhook adapter
(adapters/http) share it; neither room may import the other, so it lives beside clock and
settings and imports only httpx and httpcore.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

# Bytes handed to one write of the underlying stream; each slice gets the time then left.
WRITE_SLICE_BYTES = 16 * 1024

_deadline: ContextVar[float | None] = ContextVar("workflows_call_deadline", default=None)


@contextmanager
def call_deadline(seconds: float) -> Iterator[float]:
    """Calls made inside end by `seconds` from now (or an enclosing deadline, if sooner).

    Yields the deadline as a `time.monotonic()` value.
    """
    at = time.monotonic() + max(0.0, seconds)
    outer = _deadline.get()
    if outer is not None:
        at = min(at, outer)
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    """Seconds until the current deadline (negative once passed); None outside any deadline."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` for one network operation, never past the deadline; `expired` once it has passed."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise expired("the call's overall deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the current deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), WRITE_SLICE_BYTES):
            piece = buffer[start : start + WRITE_SLICE_BYTES]
            self._stream.write(piece, bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, bounded(timeout, httpcore.ConnectTimeout))
        return DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """Wraps a network backend (httpcore's sync one by default): its connections keep the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        self._backend = backend if backend is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, bounded(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, bounded(timeout, httpcore.ConnectTimeout), socket_options
        )
        return DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, with a connection pool whose connections keep the deadline.

    Environment proxies are not used (an httpx client given a transport reads none).
    """

    def __init__(
        self, backend: httpcore.NetworkBackend | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        super().__init__(verify=context, trust_env=False)
        # httpx's default limits.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=DeadlineBackend(backend),
        )


__all__ = [
    "WRITE_SLICE_BYTES",
    "DeadlineBackend",
    "DeadlineStream",
    "DeadlineTransport",
    "bounded",
    "call_deadline",
    "time_left",
]
