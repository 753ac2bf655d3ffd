"""Start the local stack the way the README says (`make run`) and use it over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.localstack import local_stack, wait_for

# One worker runs this module: its tests share one local stack (a stack per worker would cost
# each worker a start and the machine a process set).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("local-stack")]
API_KEY = "e2e-key-5f2b9c"


@dataclass
class Stack:
    base: str
    aws_endpoint: str
    client: httpx.Client
    websocket: str = ""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    local_events = tmp_path_factory.mktemp("local-events")
    settings = {"WORKFLOWS_API_KEY": API_KEY}
    with (
        local_stack("e2e", local_events, settings, startup_timeout=120) as running,
        httpx.Client(base_url=running.base, headers={"X-API-KEY": API_KEY}, timeout=10) as client,
    ):
        yield Stack(
            base=running.base, aws_endpoint=running.aws_endpoint, client=client, websocket=running.websocket
        )


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

    run = wait_for(finished)
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "Hello Ada"
    events = stack.client.get(f"/runs/{run_id}/events").json()["events"]
    assert [e["event_type"] for e in events] == [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ]


def test_dead_lettered_messages_are_consumed_and_their_runs_fail(stack: Stack) -> None:
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint, region_name="us-east-1")
    urls = sqs.list_queues()["QueueUrls"]
    dispatch = next(u for u in urls if "DispatchQueue" in u and "DeadLetter" not in u)
    dead = next(u for u in urls if "DispatchDeadLetterQueue" in u)

    # A message nothing can parse is redriven to the dead-letter queue, whose consumer drops it.
    sqs.send_message(QueueUrl=dispatch, MessageBody="not a dispatch message")

    def both_queues_empty() -> bool:
        for url in (dispatch, dead):
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            if int(attributes["ApproximateNumberOfMessages"]) or int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            ):
                return False
        return True

    wait_for(both_queues_empty, timeout=90)

    # A run's kick that lands in the dead-letter queue fails the run, with the message's id.
    definition = {"name": "parked", "steps": [{"id": "wait", "type": "delay", "config": {"seconds": 600}}]}
    run_id = stack.client.post("/runs", json={"definition": definition}).json()["run_id"]

    def waiting() -> dict[str, Any] | None:
        run: dict[str, Any] = stack.client.get(f"/runs/{run_id}").json()
        return run if run["current_step_id"] == "wait" and run["status"] == "running" else None

    wait_for(waiting, timeout=60)
    body = json.dumps({"v": 1, "kind": "advance", "tenant_id": "default", "run_id": run_id, "version": 1})
    message_id = sqs.send_message(QueueUrl=dead, MessageBody=body)["MessageId"]

    def failed() -> dict[str, Any] | None:
        run: dict[str, Any] = stack.client.get(f"/runs/{run_id}").json()
        return run if run["status"] == "failed" else None

    run = wait_for(failed, timeout=60)
    assert run["error"]["code"] == "internal_error"
    assert run["error"]["correlation_id"] == message_id


def test_errors_are_json_over_http(stack: Stack) -> None:
    response = stack.client.post("/runs", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert json.loads(response.text)["error"]["code"] == "malformed_json"


def test_the_command_line_client_watches_a_run_through_its_approval(stack: Stack, tmp_path: Path) -> None:
    # Given a definition file with a short delay and an approval step
    name = f"cli-{uuid.uuid4().hex[:8]}"
    definition = tmp_path / "publish.yaml"
    definition.write_text(
        f"name: {name}\n"
        "steps:\n"
        "  - {id: settle, type: delay, config: {seconds: 1}}\n"
        "  - {id: review, type: approval, config: {instructions: 'Publish it?'}}\n"
        "  - {id: publish, type: log, config: {message: 'for {{ inputs.who }}'}}\n"
    )
    workflows = str(Path(sys.executable).parent / "workflows")  # installed by `make venv`
    env = {**os.environ, "WORKFLOWS_URL": stack.base, "WORKFLOWS_API_KEY": API_KEY}
    env.pop("WORKFLOWS_PROFILE", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([workflows, *args], env=env, capture_output=True, text=True, timeout=60)

    # When it is submitted with --watch, and approved from another command while it watches
    watch = subprocess.Popen(
        [workflows, "runs", "submit", str(definition), "--watch", "--input", "who=Ada"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def pending() -> dict[str, Any] | None:
            listed = cli("approvals", "ls", "--assignee", "me", "--json")
            assert listed.returncode == 0, listed.stderr
            mine = [a for a in json.loads(listed.stdout)["approvals"] if a["definition_name"] == name]
            return mine[0] if mine else None

        approval = wait_for(pending, timeout=60)
        assert approval["step_id"] == "review"
        approved = cli("approve", approval["run_id"], "review", "--comment", "ship it")
        assert approved.returncode == 0, approved.stderr
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()

    # Then the watch follows every step and exits 0 with the run succeeded
    run_id = approval["run_id"]
    assert watch.returncode == 0, err
    assert f"run {run_id} submitted" in out
    assert "step review waits for approval: Publish it?" in out
    assert "step review approved by" in out
    assert f"run {run_id} succeeded" in out
    run = stack.client.get(f"/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "for Ada"


def test_a_stopped_stack_starts_again_at_once_on_the_same_ports(tmp_path: Path) -> None:
    # Given a stack that served a few requests on connections it still held when it was
    # stopped as Ctrl-C stops it: it closed them first, so they linger in TIME_WAIT on its ports
    settings = {"WORKFLOWS_API_KEY": API_KEY, "DEVSTACK_WORKERS": "off"}
    with (
        httpx.Client(timeout=5) as browser,
        local_stack("restart", tmp_path, settings, startup_timeout=120) as first,
    ):
        for _ in range(3):
            assert browser.get(f"{first.base}/health").status_code == 200

    # When it is started again at once on the same ports, then it serves
    ports = (first.port, first.moto_port)
    with local_stack("restarted", tmp_path, settings, startup_timeout=120, ports=ports) as second:
        runs = httpx.get(f"{second.base}/runs", headers={"X-API-KEY": API_KEY}, timeout=5)
        assert runs.status_code == 200, runs.text


def test_runs_wait_for_signals_over_http(stack: Stack) -> None:
    """On the local stack: a signal sent 5 s before its run was submitted (lookback), one sent
    after the run began waiting, `mode: all` of two, and a wait that times out to `on_timeout`."""
    tag = uuid.uuid4().hex[:8]
    after = {"id": "after", "type": "log", "config": {"message": "{{ steps.wait.output | tojson }}"}}

    def submit(wait: dict[str, Any], *more: dict[str, Any]) -> str:
        steps = [{"id": "wait", "type": "wait_for_signal", **wait}, after, *more]
        response = stack.client.post("/runs", json={"definition": {"name": "signals", "steps": steps}})
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def send(name: str, signal_id: str, data: dict[str, Any]) -> dict[str, Any]:
        response = stack.client.post("/signals", json={"name": name, "id": signal_id, "data": data})
        assert response.status_code == 202, response.text
        return dict(response.json())

    early = send(f"early-{tag}", f"early-{tag}", {"n": 1})
    sent_early = time.monotonic()
    assert early["duplicate"] is False
    assert send(f"early-{tag}", f"early-{tag}", {"n": 1})["duplicate"] is True
    later = submit({"config": {"signals": [{"name": f"later-{tag}", "match": {"order": 7}}]}})
    both = submit({"config": {"signals": [{"name": f"x-{tag}"}, {"name": f"y-{tag}"}], "mode": "all"}})
    timed_out = submit(
        {"config": {"signals": [{"name": f"never-{tag}"}], "timeout_seconds": 2}, "on_timeout": "late"},
        {"id": "late", "type": "log", "config": {"message": "no signal came"}},
    )

    time.sleep(max(0.0, sent_early + 5 - time.monotonic()))  # submitted 5 s after its signal
    looked_back = submit({"config": {"signals": [{"name": f"early-{tag}"}], "lookback_seconds": 30}})

    def run(run_id: str) -> dict[str, Any]:
        return dict(stack.client.get(f"/runs/{run_id}").json())

    def waiting(*run_ids: str) -> bool:
        return all(run(r)["status"] == "running" and run(r)["current_step_id"] == "wait" for r in run_ids)

    wait_for(lambda: waiting(later, both) or None)
    send(f"later-{tag}", f"later-other-{tag}", {"order": 8})  # another order: not this run's
    send(f"later-{tag}", f"later-{tag}", {"order": 7})
    send(f"x-{tag}", f"x-{tag}", {})
    send(f"y-{tag}", f"y-{tag}", {})

    def ended(run_id: str) -> dict[str, Any] | None:
        found = run(run_id)
        return found if found["status"] in ("succeeded", "failed", "cancelled") else None

    def wait_output(run_id: str) -> dict[str, Any]:
        """The wait step's output, as its last event records it."""
        events = stack.client.get(f"/runs/{run_id}/events").json()["events"]
        ends = [
            e
            for e in events
            if e["step_id"] == "wait" and e["event_type"] in ("step_completed", "step_timeout")
        ]
        return dict(ends[-1]["payload"]["output"])

    for run_id in (looked_back, later, both, timed_out):
        assert wait_for(lambda r=run_id: ended(r), timeout=60)["status"] == "succeeded"
    assert wait_output(looked_back)["signals"][f"early-{tag}"]["data"] == {"n": 1}
    assert wait_output(later)["signals"][f"later-{tag}"]["id"] == f"later-{tag}"
    assert set(wait_output(both)["signals"]) == {f"x-{tag}", f"y-{tag}"}
    assert wait_output(timed_out)["error"]["code"] == "timeout"
    assert run(timed_out)["outputs"]["message"] == "no signal came"


def _events(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run, page after page."""
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        page = stack.client.get(f"/runs/{run_id}/events", params={"since": since, "limit": 100}).json()
        events += page["events"]
        since = page["next_since"]
        if not page["has_more"]:
            return events


def _ended(stack: Stack, run_id: str, timeout: float = 90) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = dict(stack.client.get(f"/runs/{run_id}").json())
        return found if found["status"] in ("succeeded", "failed", "cancelled") else None

    return dict(wait_for(ended, timeout=timeout, what=f"run {run_id} ended"))


def test_steps_run_side_by_side_over_http(stack: Stack) -> None:
    """On the local stack: a parallel of three branches (one waits 2 s) joined `all` and one
    joined `any`; a map over 50 items never running more than 5 at once; a map of 10,000 log
    items (run inside the run) that succeeds; a saved workflow run
    as a child whose output the parent uses; and a parent cancelled mid-map, whose running items
    are cancelled and whose other items never start."""

    def submit(steps: list[dict[str, Any]], inputs: dict[str, Any] | None = None) -> str:
        body = {"definition": {"name": "side-by-side", "steps": steps}, "inputs": inputs or {}}
        response = stack.client.post("/runs", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def log(step_id: str, message: str) -> dict[str, Any]:
        return {"id": step_id, "type": "log", "config": {"message": message}}

    def delay(step_id: str, seconds: float) -> dict[str, Any]:
        return {"id": step_id, "type": "delay", "config": {"seconds": seconds}}

    child = stack.client.post(
        stack.base, json={"name": "greeter", "steps": [log("greet", "Hello {{ inputs.name }}")]}
    )
    assert child.status_code == 201, child.text
    branches = {
        "a": [log("a1", "A")],
        "b": [delay("b0", 2), log("b1", "B")],
        "c": [log("c1", "C {{ branch }}")],
    }
    joined_all = submit([{"id": "p", "type": "parallel", "config": {"branches": branches}}])
    joined_any = submit(
        [
            {
                "id": "q",
                "type": "parallel",
                "config": {
                    "branches": {"fast": [log("f1", "first")], "slow": [delay("s0", 60)]},
                    "join": "any",
                },
            }
        ]
    )
    mapped = submit(
        [
            {
                "id": "m",
                "type": "map",
                "config": {
                    "items": "{{ inputs.numbers }}",
                    "steps": [log("each", "{{ index }}:{{ item }}")],
                    "max_concurrency": 5,
                    "mode": "child_runs",
                },
            }
        ],
        {"numbers": list(range(50))},
    )
    # Ten thousand items of a log step run inside the run, a batch of them per commit.
    big = submit(
        [
            {
                "id": "big",
                "type": "map",
                "config": {"items": "{{ range(10000) | list }}", "steps": [log("say", "{{ index }}")]},
            }
        ]
    )
    called = submit(
        [
            {
                "id": "call",
                "type": "workflow",
                "config": {"workflow_id": child.json()["workflow_id"], "inputs": {"name": "Ada"}},
            },
            log("after", "child said {{ last.message }}"),
        ]
    )
    cancelled = submit(
        [
            {
                "id": "slow",
                "type": "map",
                "config": {"items": list(range(20)), "steps": [delay("z", 60)], "max_concurrency": 5},
            }
        ]
    )

    assert _ended(stack, joined_all)["outputs"] == {
        "a": {"message": "A", "level": "info"},
        "b": {"message": "B", "level": "info"},
        "c": {"message": "C c", "level": "info"},
    }
    won = _ended(stack, joined_any)
    assert won["status"] == "succeeded"
    assert won["outputs"] == {"fast": {"message": "first", "level": "info"}}
    slow_branch = next(
        c["run_id"]
        for e in _events(stack, joined_any)
        if e["event_type"] == "children_started"
        for c in e["payload"]["children"]
        if c["branch"] == "slow"
    )
    assert _ended(stack, slow_branch)["status"] == "cancelled"
    assert stack.client.get(f"/runs/{slow_branch}").json()["parent_run_id"] == joined_any

    done = _ended(stack, mapped)
    assert done["status"] == "succeeded", done["error"]
    running, most = 0, 0
    for event in _events(stack, mapped):
        if event["event_type"] == "children_started":
            running += len(event["payload"]["children"])
        elif event["event_type"] == "child_ended":
            running -= 1
        most = max(most, running)
    assert most == 5
    outputs = [
        e for e in _events(stack, mapped) if e["event_type"] == "step_completed" and e["step_id"] == "m"
    ]
    assert len(outputs) == 1
    assert _ended(stack, called)["outputs"]["message"] == "child said Hello Ada"
    ended = _ended(stack, big, timeout=240)
    assert ended["status"] == "succeeded", ended["error"]
    said = ended["outputs"]
    assert len(said) == 10_000
    assert [said[0]["message"], said[9_999]["message"]] == ["0", "9999"]

    started = wait_for(
        lambda: [e for e in _events(stack, cancelled) if e["event_type"] == "children_started"],
        what="the map's first items",
    )
    items = [c["run_id"] for c in started[0]["payload"]["children"]]
    assert stack.client.post(f"/runs/{cancelled}/cancel").status_code == 200
    for item in items:
        assert _ended(stack, item, timeout=30)["status"] == "cancelled"
    assert (
        sum(
            len(e["payload"]["children"])
            for e in _events(stack, cancelled)
            if e["event_type"] == "children_started"
        )
        == 5
    )


def test_a_websocket_follower_receives_every_event_in_order_until_the_run_ends(stack: Stack) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    definition = {
        "name": "followed",
        "steps": [
            {"id": "wait", "type": "delay", "config": {"milliseconds": 500}},
            {"id": "done", "type": "log", "config": {"message": "done"}},
        ],
    }
    run_id = stack.client.post("/runs", json={"definition": definition}).json()["run_id"]
    url = f"{stack.websocket}?run_id={run_id}&since=0"

    # A wrong key is refused at the handshake, with the HTTP API's status and code
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"X-API-KEY": "wrong"}, open_timeout=10)
    assert refused.value.response.status_code == 401

    # A browser's way in: the key in the subprotocol, answered with workflows.v1
    frames: list[dict[str, Any]] = []
    with connect(url, subprotocols=["workflows.v1", f"key.{API_KEY}"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "workflows.v1"
        ws.send(json.dumps({"action": "follow"}))
        frames += _until_closed(ws)

    seqs = [e["event_seq"] for f in frames if f["type"] == "events" for e in f["events"]]
    events = stack.client.get(f"/runs/{run_id}/events").json()["events"]
    assert seqs == [e["event_seq"] for e in events] == list(range(1, len(events) + 1))
    assert frames[-1] == {"type": "end", "run_id": run_id, "status": "succeeded", "next_since": len(events)}


def _until_closed(ws: Any) -> list[dict[str, Any]]:
    """Every frame until the service closes the connection (normally: an abnormal close raises)."""
    from websockets.exceptions import ConnectionClosedOK

    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=60)))
    except ConnectionClosedOK:
        return frames
