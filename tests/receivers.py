"""A real webhook receiver on 127.0.0.1: scripted replies, every request recorded."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    # Seconds between single bytes of the status line and headers, then of the body (0: at once).
    trickle_head: float = 0.0
    trickle_body: float = 0.0


def trickler(every: float = 0.5) -> Reply:
    """A reply whose status line, headers and body arrive one byte every `every` seconds."""
    return Reply(body=b"ok" * 50, trickle_head=every, trickle_body=every)


class Receiver:
    """Answers POSTs with scripted replies (then `default`, a plain 200) and records every request.

    A trickled reply is written a byte at a time until it ends or the client hangs up; the
    moment the client hung up is kept in `hangups` (time.monotonic()).
    """

    def __init__(self, default: Reply | None = None) -> None:
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.hangups: list[float] = []
        self._default = default or Reply()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = receiver.replies.pop(0) if receiver.replies else receiver._default
                time.sleep(reply.delay)
                if reply.trickle_head or reply.trickle_body:
                    self._trickle(reply)
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def _trickle(self, reply: Reply) -> None:
                self.close_connection = True
                head = f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
                for name, value in {**reply.headers, "Content-Length": str(len(reply.body))}.items():
                    head += f"{name}: {value}\r\n"
                parts = ((head.encode() + b"\r\n", reply.trickle_head), (reply.body, reply.trickle_body))
                try:
                    for data, every in parts:
                        if not every:
                            self.wfile.write(data)
                            continue
                        for index in range(len(data)):
                            if receiver._closed.wait(every):
                                return
                            self.wfile.write(data[index : index + 1])
                except (BrokenPipeError, ConnectionResetError):
                    receiver.hangups.append(time.monotonic())

            do_PUT = do_POST
            do_PATCH = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        # A short poll interval: closing waits for the serving loop to notice (0.5 s by default).
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        bound, port = self.server.server_address[:2]
        assert bound == "127.0.0.1"  # the server only ever listens on loopback
        return int(port)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        """`host` names the server in the URL (a resolver in the test maps it to loopback)."""
        return f"http://{host}:{self.port}{path}"

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self._closed.set()  # ends any trickle still being written
        self.server.shutdown()
        self.server.server_close()
