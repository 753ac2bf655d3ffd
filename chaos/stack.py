"""The local stack as three processes the chaos run can kill, stop and restart one at a time.

The emulator (`python -m devstack.moto_server`), the API (`python -m devstack` with its workers
off) and the workers (`python -m devstack --workers-only`) share one state: the emulator's. Each
runs in a session of its own, so a signal reaches that process and no other.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """One part of the stack: started, killed, stopped or resumed by its own pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
                self._argv,
                cwd=ROOT,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a host that dies or a Lambda that times out: nothing runs after it."""
        self.signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """The end of the run: SIGCONT (a stopped process ignores SIGTERM), SIGTERM, then SIGKILL."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    def __init__(self, logs: Path) -> None:
        self.moto_port = free_port()
        self.api_port = free_port()
        self.api_key = secrets.token_urlsafe(24)
        self.base = f"http://127.0.0.1:{self.api_port}/api/v1/workflows"
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.moto_port}",
            "PORT": str(self.api_port),
            "WORKFLOWS_API_KEY": self.api_key,
            "WORKFLOWS_AUTH_MODE": "single_user",
            "LOG_LEVEL": "ERROR",
            "DEVSTACK_ACTIVITY": "off",
            # A failed dispatch comes back after 10 s. The sweeper's grace must exceed that plus
            # the dispatcher's 120 s timeout: 135 s is the least it may be (docs/chaos.md).
            "DEVSTACK_VISIBILITY_TIMEOUT": "10",
            "WORKFLOWS_DISPATCH_VISIBILITY_TIMEOUT_SEC": "10",
            "WORKFLOWS_SWEEP_GRACE_SEC": "135",
            # The clients' retries would otherwise run into the per-user submission quota.
            "WORKFLOWS_DISABLE_QUOTAS": "true",
            "WORKFLOWS_WEBHOOK_DLQ_INTERVAL_SEC": "2",
        }
        python = sys.executable
        self.emulator = Process(
            "emulator",
            [python, "-m", "devstack.moto_server", str(self.moto_port)],
            env,
            logs / "emulator.log",
        )
        self.api = Process(
            "api", [python, "-m", "devstack"], {**env, "DEVSTACK_WORKERS": "off"}, logs / "api.log"
        )
        self.workers = Process(
            "workers", [python, "-m", "devstack", "--workers-only"], env, logs / "workers.log"
        )
        self.parts = {p.name: p for p in (self.emulator, self.api, self.workers)}

    def start(self) -> None:
        self.emulator.start()
        _wait_for(lambda: _listening(self.moto_port), "the emulator", 60, self.emulator)
        # The API process creates the stack's resources; the workers find them.
        self.api.start()
        self.wait_api(120)
        self.workers.start()
        _wait_for(lambda: "workers running" in self.workers.log_tail(), "the workers", 120, self.workers)

    def wait_api(self, timeout: float) -> None:
        _wait_for(self.api_ready, "the API", timeout, self.api)

    def api_ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def restart(self, name: str) -> None:
        part = self.parts[name]
        part.start()
        if name == "api":
            self.wait_api(120)

    def stop(self) -> None:
        for part in (self.workers, self.api, self.emulator):
            part.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_for(ready: Callable[[], bool], what: str, timeout: float, part: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not part.alive():
            raise RuntimeError(f"{what} ended while starting:\n{part.log_tail()}")
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s:\n{part.log_tail()}")
