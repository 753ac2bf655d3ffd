"""The command-line client against real HTTP servers on 127.0.0.1: the API on in-memory fakes
(served by uvicorn in a thread), or a scripted server for answers the API does not give."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn

from tests.conftest import API_KEY
from workflows.api.app import create_app
from workflows.roots.parts import Parts
from workflows_cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Service:
    url: str
    parts: Parts


@pytest.fixture
def service(container: Parts) -> Iterator[Service]:
    """The API on the test's fakes, served over HTTP on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(lambda: container), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the API's server stopped during start-up"
        assert time.monotonic() < deadline, "the API did not start within 10 s"
        time.sleep(0.01)
    yield Service(url=f"http://127.0.0.1:{port}/api/v1/workflows", parts=container)
    server.should_exit = True
    thread.join(10)
    sock.close()


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Runs `workflows ARGS` in-process with only the environment given (no config file).

    Its output is not a terminal, so tables take the width they need (unless COLUMNS, which
    pytest-xdist's workers set to 80, says otherwise)."""
    monkeypatch.delenv("COLUMNS", raising=False)

    def run(*argv: str, env: dict[str, str] | None = None) -> Result:
        capsys.readouterr()
        environment = {"WORKFLOWS_CONFIG": str(tmp_path / "absent.toml"), **(env or {})}
        code = main(list(argv), env=environment)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def on(service: Service, cli: Cli) -> Cli:
    """Runs `workflows ARGS` against the API on fakes, with its key."""

    def run(*argv: str, env: dict[str, str] | None = None) -> Result:
        return cli(*argv, env={"WORKFLOWS_URL": service.url, "WORKFLOWS_API_KEY": API_KEY, **(env or {})})

    return run


@dataclass
class Canned:
    """Answers every request with the next scripted (status, body, headers); records each."""

    url: str
    replies: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def canned() -> Iterator[Canned]:
    state = Canned(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": parse_qs(parts.query),
                    "headers": dict(self.headers),
                    "body": self.rfile.read(length) if length else b"",
                }
            )
            status, body, headers = state.replies.pop(0) if state.replies else (200, {}, {})
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/workflows"
    yield state
    server.shutdown()
    server.server_close()
