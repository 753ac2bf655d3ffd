"""Start the local stack the way the README says (`make run`) and use it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-key-5f2b9c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stack:
    base: str
    aws_endpoint: str
    client: httpx.Client


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    port, moto_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "MOTO_PORT": str(moto_port),
        "WORKFLOWS_API_KEY": API_KEY,
        "DEVSTACK_VISIBILITY_TIMEOUT": "1",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    log = (ROOT / ".pytest_cache" / "e2e-stack.log").open("w") if (ROOT / ".pytest_cache").exists() else None
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1/workflows"
    client = httpx.Client(base_url=base, headers={"X-API-KEY": API_KEY}, timeout=10)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "the local stack exited during start-up"
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the local stack did not come up within 120 s"
            time.sleep(0.25)
        yield Stack(base=base, aws_endpoint=f"http://127.0.0.1:{moto_port}", client=client)
    finally:
        client.close()
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log:
            log.close()


def _wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_log_workflow_runs_over_http(stack: Stack) -> None:
    definition = {
        "name": "hello",
        "steps": [{"id": "greet", "type": "log", "config": {"message": "Hello {{ inputs.name }}"}}],
    }
    response = stack.client.post("/runs", json={"definition": definition, "inputs": {"name": "Ada"}})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = stack.client.get(f"/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    run = _wait_for(finished)
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "Hello Ada"
    events = stack.client.get(f"/runs/{run_id}/events").json()["events"]
    assert [e["event_type"] for e in events] == [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ]


def test_poison_message_is_redriven_to_the_dead_letter_queue(stack: Stack) -> None:
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint, region_name="us-east-1")
    urls = sqs.list_queues()["QueueUrls"]
    dispatch = next(u for u in urls if "DispatchQueue" in u and "DeadLetter" not in u)
    dead = next(u for u in urls if "DispatchDeadLetterQueue" in u)
    sqs.send_message(QueueUrl=dispatch, MessageBody="not a dispatch message")

    def in_dead_letter_queue() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = sqs.receive_message(QueueUrl=dead, AttributeNames=["All"]).get(
            "Messages", []
        )
        return messages

    messages = _wait_for(in_dead_letter_queue, timeout=60)
    assert messages[0]["Body"] == "not a dispatch message"
    assert int(messages[0]["Attributes"]["ApproximateReceiveCount"]) >= 1


def test_errors_are_json_over_http(stack: Stack) -> None:
    response = stack.client.post("/runs", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert json.loads(response.text)["error"]["code"] == "malformed_json"
