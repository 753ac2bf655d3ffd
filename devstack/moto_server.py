"""An embedded moto server on loopback whose DynamoDB requests are atomic, as on AWS.

moto's backends take no locks: two threads inside one TransactWriteItems can interleave and
half-apply it. Serialising DynamoDB requests (and only those: an SQS long poll must not block
everything) restores the per-request atomicity the service relies on.

The server runs in a child process of its own: the emulator and the service (API, dispatcher)
would otherwise share one interpreter lock, and the local stack would use one core of the two.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from devstack import moto_patches


class _AtomicDynamoDB:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with self._lock:
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


class _QuietHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request lines would drown the banner and the service's own logs."""


class MotoServer:
    """The moto server in this process (`serve_forever` in a thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        moto_patches.install()
        app = _AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def _exit_with_parent(parent: int) -> None:
    """End this process once its parent is gone, however the parent ended (even SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _serve(host: str, port: int, ready: Any) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    server = MotoServer(host, port)
    ready.send(server.url)
    ready.close()
    server._server.serve_forever()


class MotoServerProcess:
    """The moto server in a child process; it ends with this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_serve, args=(host, port, send), name="moto", daemon=True)
        self._url = ""

    @property
    def url(self) -> str:
        return self._url

    def start(self, timeout: float = 60.0) -> None:
        self._process.start()
        if not self._receive.poll(timeout):
            self.stop()
            raise RuntimeError("the moto server did not start")
        self._url = str(self._receive.recv())

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(timeout=5)


def main() -> None:
    """`python -m devstack.moto_server PORT`: the emulator alone, in the foreground.

    A process of its own that nothing else lives in, so it can be stopped and resumed by signal
    (`make chaos`) while the API and the workers keep their state in it."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    server = MotoServer("127.0.0.1", port)
    print(server.url, flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
