"""One overall deadline for a call out (workflows.deadline), against raw peers on 127.0.0.1.

Each peer does what per-operation timeouts cannot catch: it trickles a TLS handshake, or never
reads the request. Every connect goes to 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpcore
import httpx
import pytest

from workflows.deadline import DeadlineBackend, DeadlineTransport, bounded, call_deadline, time_left


class Peer:
    """A TCP server on 127.0.0.1 that runs `behave` on each accepted connection."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None], rcvbuf: int = 0) -> None:
        self._behave = behave
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._behave(conn, self._stop)
        except OSError:
            pass  # the client hung up
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def trickle_handshake(conn: socket.socket, stop: threading.Event) -> None:
    """A TLS record header announcing 16 KiB of handshake, then one byte every 0.2 s."""
    conn.recv(65536)  # the ClientHello
    conn.sendall(b"\x16\x03\x03\x40\x00")
    while not stop.wait(0.2):
        conn.sendall(b"\x02")


def never_read(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(30)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # The production transport (no environment proxies); per-operation timeouts of 30 s.
    with httpx.Client(transport=DeadlineTransport(), timeout=30) as c:
        yield c


def test_a_trickled_tls_handshake_ends_at_the_deadline(client: httpx.Client) -> None:
    peer = Peer(trickle_handshake)
    try:
        started = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout), call_deadline(1):
            client.post(f"https://127.0.0.1:{peer.port}/", content=b"{}")
        elapsed = time.monotonic() - started
    finally:
        peer.close()

    assert elapsed < 5, f"took {elapsed:.1f} s for a 1 s deadline"


def test_a_peer_that_never_reads_the_request_ends_it_at_the_deadline(client: httpx.Client) -> None:
    # Far more than the socket buffers hold: sending blocks once they are full.
    body = b"x" * (64 * 1024 * 1024)
    peer = Peer(never_read, rcvbuf=4096)
    try:
        started = time.monotonic()
        with pytest.raises(httpx.WriteTimeout), call_deadline(1):
            client.post(f"http://127.0.0.1:{peer.port}/", content=body)
        elapsed = time.monotonic() - started
    finally:
        peer.close()

    assert elapsed < 5, f"took {elapsed:.1f} s for a 1 s deadline"


def test_a_nested_deadline_never_extends_the_outer_one() -> None:
    assert time_left() is None
    with call_deadline(1) as outer:
        with call_deadline(60) as inner:
            assert inner == outer
            assert (time_left() or 0) <= 1
        with call_deadline(0.5) as sooner:
            assert sooner < outer
    assert time_left() is None


def test_an_operation_after_the_deadline_fails_without_waiting() -> None:
    assert bounded(30, httpcore.ReadTimeout) == 30  # no deadline: the timeout as given
    # Past the deadline: refused before any socket is made.
    with call_deadline(0), pytest.raises(httpcore.ConnectTimeout):
        DeadlineBackend().connect_tcp("127.0.0.1", 9, timeout=30)
    with call_deadline(10):
        assert 9 < (bounded(30, httpcore.ReadTimeout) or 0) <= 10
        assert bounded(2, httpcore.ReadTimeout) == 2
