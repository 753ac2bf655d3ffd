"""The local stack as `make run` starts it, as a subprocess on free loopback ports, for the
end-to-end and browser tests; and the polling they share."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".pytest_cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.1
) -> Any:
    """The first truthy value of `predicate`, asked every `interval` s; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(interval)


@dataclass(frozen=True)
class LocalStack:
    port: int
    moto_port: int
    env: dict[str, str]  # the environment it runs with
    log: Path
    ws_port: int = 0

    @property
    def websocket(self) -> str:
        """Its WebSocket API's stage: ws://127.0.0.1:<port>/v1."""
        return f"ws://127.0.0.1:{self.ws_port}/v1"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        """The API: .../api/v1/workflows."""
        return f"{self.origin}/api/v1/workflows"

    @property
    def aws_endpoint(self) -> str:
        """Its embedded AWS emulator."""
        return f"http://127.0.0.1:{self.moto_port}"


@contextmanager
def local_stack(
    name: str,
    local_events: Path,
    settings: Mapping[str, str],
    *,
    startup_timeout: float,
    ports: tuple[int, int] | None = None,
) -> Iterator[LocalStack]:
    """`make run` on free ports (or `ports`: the API's and the emulator's) with `settings` added
    to this environment, until its health answers 200; stopped (SIGINT, then SIGKILL) on exit.
    Its output goes to .pytest_cache/<name>-stack.log; its sam local files to `local_events`,
    away from those of a stack the developer runs."""
    port, moto_port = ports or (free_port(), free_port())
    ws_port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "MOTO_PORT": str(moto_port),
        "WS_PORT": str(ws_port),
        "DEVSTACK_VISIBILITY_TIMEOUT": "1",
        "DEVSTACK_LOCAL_EVENTS": str(local_events),
        **settings,
    }
    env.pop("AWS_ENDPOINT_URL", None)
    LOGS.mkdir(exist_ok=True)
    log_path = LOGS / f"{name}-stack.log"
    stack = LocalStack(port=port, moto_port=moto_port, env=env, log=log_path, ws_port=ws_port)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def up() -> bool:
                assert process.poll() is None, f"the local stack exited during start-up ({log_path})"
                try:
                    return httpx.get(f"{stack.base}/health", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, startup_timeout, "the local stack", interval=0.25)
            yield stack
        finally:
            # A stack that exited by itself (a failed start) has no process group left to signal.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
