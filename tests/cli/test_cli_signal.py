"""`workflows signal`: what it sends, prints and exits with, against the API on fakes."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Canned, Cli, Service
from tests.conftest import drain
from workflows_cli.events import describe
from workflows_cli.main import EXIT_API_ERROR, EXIT_CONFIG, EXIT_USAGE, build_parser
from workflows_cli.watch import Progress

WAITS = {
    "name": "waits",
    "steps": [
        {
            "id": "paid",
            "type": "wait_for_signal",
            "config": {"signals": [{"name": "payment.settled", "match": {"order_id": "{{ inputs.order }}"}}]},
        },
        {"id": "ship", "type": "log", "config": {"message": "{{ last.signals['payment.settled'].data }}"}},
    ],
}


def _waiting_run(on: Cli, service: Service, tmp_path: Path) -> str:
    path = tmp_path / "waits.json"
    path.write_text(json.dumps(WAITS))
    submitted = on("runs", "submit", str(path), "-i", "order=A-1")
    assert submitted.code == 0, submitted.err
    drain(service.parts)
    return submitted.out.strip()


def _run(on: Cli, run_id: str) -> dict[str, Any]:
    result = on("runs", "get", run_id, "--json")
    assert result.code == 0, result.err
    run: dict[str, Any] = result.json()
    return run


def test_signal_sends_typed_data_and_moves_the_waiting_run(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _waiting_run(on, service, tmp_path)

    result = on("signal", "payment.settled", "--data", "order_id=A-1", "-d", "amount=12", "--id", "pay-1")

    assert result.code == 0, result.err
    assert result.out.strip() == "signal payment.settled pay-1: sent to the runs waiting for it"
    drain(service.parts)
    run = _run(on, run_id)
    assert run["status"] == "succeeded"
    assert json.loads(run["outputs"]["message"]) == {"order_id": "A-1", "amount": 12}


def test_without_an_id_a_new_one_is_made_and_printed_for_a_retry(on: Cli) -> None:
    result = on("signal", "order.packed")

    assert result.code == 0, result.err
    found = re.fullmatch(r"signal order\.packed (\S+): sent to the runs waiting for it", result.out.strip())
    assert found is not None, result.out
    signal_id = found.group(1)
    assert uuid.UUID(signal_id).version == 4
    assert f"--id {signal_id}" in result.err

    again = on("signal", "order.packed", "--id", signal_id)
    assert again.code == 0, again.err
    assert "sent before" in again.out
    assert again.err == ""


def test_json_data_is_merged_under_the_data_pairs(canned: Canned, cli: Cli) -> None:
    canned.replies.append(
        (202, {"name": "n", "id": "i", "sent_at": "t", "run_id": None, "duplicate": False}, {})
    )

    result = cli(
        "signal",
        "n",
        "--data-json",
        '{"a": {"b": [1, 2]}, "c": "from json"}',
        "--data",
        "c=3",
        "--id",
        "i",
        env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"},
    )

    assert result.code == 0, result.err
    request = canned.requests[0]
    assert (request["method"], request["path"]) == ("POST", "/api/v1/workflows/signals")
    assert json.loads(request["body"]) == {"name": "n", "id": "i", "data": {"a": {"b": [1, 2]}, "c": 3}}


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"x": NaN}', "3"])
def test_json_that_is_not_an_object_is_refused_before_any_request(
    canned: Canned, cli: Cli, text: str
) -> None:
    result = cli(
        "signal", "n", "--data-json", text, env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"}
    )

    assert result.code == EXIT_CONFIG
    assert "--data-json" in result.err
    assert canned.requests == []


def test_signal_to_one_run_says_what_the_run_did(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _waiting_run(on, service, tmp_path)

    other = on("signal", "payment.settled", "-d", "order_id=B-2", "--id", "pay-2", "--run", run_id)
    taken = on("signal", "payment.settled", "-d", "order_id=A-1", "--id", "pay-1", "--run", run_id)

    assert other.code == 0, other.err
    assert other.out.strip() == (
        f"signal payment.settled pay-2: sent; run {run_id}: it waits, but not for this signal"
        " (another value of a field)"
    )
    assert taken.code == 0, taken.err
    # (the last line: the service, in this process, prints its metrics to the same output)
    assert taken.out.strip().splitlines()[-1] == (
        f"signal payment.settled pay-1: sent; run {run_id}: its step completed"
    )


def test_an_id_sent_with_other_data_shows_the_conflict(on: Cli) -> None:
    assert on("signal", "order.packed", "-d", "box=1", "--id", "pack-1").code == 0

    result = on("signal", "order.packed", "-d", "box=2", "--id", "pack-1")

    assert result.code == EXIT_API_ERROR
    assert "conflict" in result.err
    assert "id:" in result.err


def test_an_invalid_name_is_refused_naming_the_field(on: Cli) -> None:
    result = on("signal", "has space", "--id", "x")

    assert result.code == EXIT_API_ERROR
    assert "validation_error" in result.err
    assert "name:" in result.err


def test_an_unknown_run_is_not_found(on: Cli) -> None:
    result = on("signal", "tick", "--run", str(uuid.uuid4()))

    assert result.code == EXIT_API_ERROR
    assert "not_found" in result.err


def test_the_signal_command_parses_its_arguments() -> None:
    args = build_parser().parse_args(
        ["signal", "order.paid", "-d", "a=1", "--data", "b=x", "--data-json", "{}", "--id", "I", "--run", "R"]
    )
    assert (args.name, args.data, args.data_json, args.signal_id, args.run) == (
        "order.paid",
        ["a=1", "b=x"],
        "{}",
        "I",
        "R",
    )


@pytest.mark.parametrize("argv", [["signal"], ["signal", "n", "--run", ".."], ["signal", "n", "--data-json"]])
def test_signal_usage_errors_exit_64(cli: Cli, argv: list[str]) -> None:
    result = cli(*argv)

    assert result.code == EXIT_USAGE
    assert "usage: workflows" in result.err


# ---- a waiting run, as the client shows it ------------------------------------------------------

WAITING = {
    "event_type": "waiting_signal",
    "step_id": "paid",
    "payload": {
        "mode": "any",
        "signals": [{"name": "payment.settled", "match": {"order_id": "A-1", "n": 3}}],
        "timeout_at": "2026-01-02T12:00:00.000Z",
    },
}
RECEIVED = {
    "event_type": "signal_received",
    "step_id": "paid",
    "payload": {"name": "payment.settled", "id": "pay-1", "data": {}, "sent_at": "2026-01-01T12:00:00.000Z"},
}


def test_events_say_what_a_step_waits_for_and_what_it_received() -> None:
    assert describe(WAITING) == (
        'step paid waits for payment.settled (order_id="A-1", n=3) until 2026-01-02T12:00:00.000Z'
    )
    both = {
        "event_type": "waiting_signal",
        "step_id": "both",
        "payload": {"mode": "all", "signals": [{"name": "a", "match": {}}, {"name": "b"}]},
    }
    assert describe(both) == "step both waits for all of: a, b"
    assert describe(RECEIVED) == "step paid received signal payment.settled (id pay-1)"


def test_progress_shows_a_step_waiting_for_signals_until_it_completes() -> None:
    progress = Progress("R")
    progress.plan({"steps": [{"id": "paid", "type": "wait_for_signal"}]})
    progress.apply(
        {"event_type": "step_started", "step_id": "paid", "payload": {"step_type": "wait_for_signal"}}
    )

    progress.apply(WAITING)
    assert (progress.steps["paid"].state, progress.steps["paid"].note) == (
        "waiting for signals",
        'payment.settled (order_id="A-1", n=3)',
    )
    progress.apply(RECEIVED)
    progress.apply({"event_type": "step_completed", "step_id": "paid", "payload": {"output": {}}})
    assert (progress.steps["paid"].state, progress.steps["paid"].note) == (
        "completed",
        "received payment.settled",
    )


def test_json_prints_the_services_answer(canned: Canned, cli: Cli) -> None:
    answer = {"name": "n", "id": "i", "sent_at": "t", "run_id": None, "duplicate": True}
    canned.replies.append((202, answer, {}))

    result = cli(
        "signal", "n", "--id", "i", "--json", env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"}
    )

    assert result.code == 0, result.err
    assert json.loads(result.out) == answer
