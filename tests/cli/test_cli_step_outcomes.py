"""What the command-line client says became of each step: a webhook delivered or handed to the
DLQ (the run goes on either way), steps a run never reached, and the command that approves a
waiting step, whole at 80 columns. The API runs on in-memory fakes whose webhooks reach a
receiver on 127.0.0.1."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from rich.console import Console

from tests.cli.conftest import Cli, Service
from tests.conftest import LOCAL_WEBHOOKS, FakeClock, drain, make_fake
from tests.receivers import Receiver, Reply
from workflows.roots.parts import Parts
from workflows_cli.watch import Progress

RUN_ID = "0f8e4a52-6c1d-4d8e-9a43-7b2c5e1f9d30"


@pytest.fixture
def container(clock: FakeClock) -> Parts:
    """The API's fakes, with webhooks allowed to reach 127.0.0.1."""
    return make_fake(
        clock, webhook_secret=SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), **LOCAL_WEBHOOKS
    )


def _notify(url: str, *after: dict[str, Any]) -> dict[str, Any]:
    call = {
        "id": "call",
        "type": "webhook",
        "config": {"url": url, "body": {"hello": "there"}, "on_delivery_failure": "dlq"},
    }
    return {"name": "notify", "steps": [call, *after]}


def _submit(on: Cli, tmp_path: Path, definition: dict[str, Any]) -> str:
    path = tmp_path / "def.json"
    path.write_text(json.dumps(definition))
    result = on("runs", "submit", str(path))
    assert result.code == 0, result.err
    return result.out.strip()


def _dlq_id(on: Cli, run_id: str) -> str:
    events = [json.loads(line) for line in on("events", "tail", run_id, "--json").out.splitlines()]
    completed = next(e for e in events if e["event_type"] == "step_completed" and e["step_id"] == "call")
    return str(completed["payload"]["output"]["dlq_id"])


def test_watch_says_a_webhook_handed_to_the_dlq_was_not_delivered(
    on: Cli, service: Service, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.reply(Reply(503, body=b"busy"))
    run_id = _submit(on, tmp_path, _notify(receiver.url()))
    drain(service.parts)

    result = on("runs", "watch", run_id)

    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if "step call " in line and "started" not in line)
    assert line.split("  ", 1)[1] == (
        f"step call not delivered to 127.0.0.1: HTTP 503: busy; handed to the DLQ (row {_dlq_id(on, run_id)})"
    )


def test_watch_says_a_webhook_was_delivered(
    on: Cli, service: Service, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.reply(Reply(200))
    run_id = _submit(on, tmp_path, _notify(receiver.url()))
    drain(service.parts)

    result = on("runs", "watch", run_id)

    assert result.code == 0, result.err
    assert "step call delivered to 127.0.0.1 (HTTP 200)" in result.out
    assert "step call completed" not in result.out


def test_events_tail_says_a_webhook_handed_to_the_dlq_was_not_delivered(
    on: Cli, service: Service, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.reply(Reply(503, body=b"busy"))
    run_id = _submit(on, tmp_path, _notify(receiver.url()))
    drain(service.parts)

    lines = on("events", "tail", run_id).out.splitlines()

    assert any(line.endswith(f"handed to the DLQ (row {_dlq_id(on, run_id)})") for line in lines)
    assert not any("step call completed" in line for line in lines)


def test_runs_get_says_what_became_of_each_step(
    on: Cli, service: Service, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.reply(Reply(503, body=b"busy"))
    boom = {"id": "boom", "type": "log", "config": {"message": "{{ inputs.missing.field }}"}}
    never = {"id": "never", "type": "log", "config": {"message": "unreached"}}
    run_id = _submit(on, tmp_path, _notify(receiver.url(), boom, never))
    drain(service.parts)

    result = on("runs", "get", run_id)

    assert result.code == 0, result.err
    states = {line.split()[0]: line.split()[1:] for line in result.out.splitlines() if line.strip()}
    assert states["call"][:3] == ["webhook", "not", "delivered"]
    assert f"(row {_dlq_id(on, run_id)})" in " ".join(states["call"])
    assert states["boom"][:2] == ["log", "failed"]
    assert states["never"][:3] == ["log", "not", "run"]


def test_runs_get_of_a_waiting_run_shows_the_whole_approve_command_at_80_columns(
    on: Cli, service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    review = {"id": "review-by-the-editorial-board", "type": "approval", "config": {"instructions": "Ok?"}}
    run_id = _submit(on, tmp_path, {"name": "publish", "steps": [review]})
    drain(service.parts)
    monkeypatch.setenv("COLUMNS", "80")

    result = on("runs", "get", run_id)

    assert result.code == 0, result.err
    assert f"workflows approve {run_id} review-by-the-editorial-board" in result.out


def test_the_live_table_shows_the_whole_approve_command_at_80_columns() -> None:
    progress = Progress(RUN_ID)
    progress.plan({"steps": [{"id": "settle", "type": "delay"}, {"id": "review", "type": "approval"}]})
    for seq, (kind, step) in enumerate(
        [
            ("run_started", None),
            ("step_started", "settle"),
            ("step_completed", "settle"),
            ("waiting_approval", "review"),
        ]
    ):
        progress.apply({"event_seq": seq, "event_type": kind, "step_id": step, "payload": {"step_type": "x"}})
    screen = io.StringIO()

    Console(file=screen, width=80, force_terminal=True, color_system=None).print(progress)

    assert f"workflows approve {RUN_ID} review" in screen.getvalue()
    assert all(len(line) <= 80 for line in screen.getvalue().splitlines())


def test_steps_a_finished_run_never_reached_read_not_run() -> None:
    progress = Progress(RUN_ID)
    progress.plan({"steps": [{"id": "first", "type": "log"}, {"id": "second", "type": "log"}]})
    progress.apply({"event_type": "run_started", "payload": {}})
    progress.apply({"event_type": "step_started", "step_id": "first", "payload": {"step_type": "log"}})
    assert progress.steps["second"].state == "pending"

    progress.apply({"event_type": "step_failed", "step_id": "first", "payload": {"error": {"code": "boom"}}})
    progress.apply({"event_type": "run_failed", "payload": {"error": {"code": "boom"}}})

    assert [s.state for s in progress.steps.values()] == ["failed", "not run"]
