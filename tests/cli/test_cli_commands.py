"""The command-line client against the API over loopback HTTP: what each command sends, prints
and exits with. The API runs on in-memory fakes; the engine advances when a test drains."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Canned, Cli, Service
from tests.conftest import drain
from workflows_cli.client import Client
from workflows_cli.events import MIN_POLL_INTERVAL, Pacer, pages
from workflows_cli.main import EXIT_API_ERROR, EXIT_UNREACHABLE, EXIT_USAGE

HELLO = {
    "name": "hello",
    "steps": [{"id": "greet", "type": "log", "config": {"message": "Hello {{ inputs.name }}"}}],
}
REVIEW = {
    "name": "publish",
    "steps": [
        {"id": "review", "type": "approval", "config": {"instructions": "Publish the report?"}},
        {"id": "publish", "type": "log", "config": {"message": "by {{ steps.review.output.approver }}"}},
    ],
}
BROKEN = {
    "name": "broken",
    "steps": [{"id": "second", "type": "log", "config": {"message": "{{ inputs.missing.field }}"}}],
}
SLOW = {"name": "slow", "steps": [{"id": "wait", "type": "delay", "config": {"seconds": 600}}]}


def _file(tmp_path: Path, definition: dict[str, Any], name: str = "def.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(definition))
    return str(path)


def _submit(on: Cli, tmp_path: Path, definition: dict[str, Any], *args: str) -> str:
    result = on("runs", "submit", _file(tmp_path, definition), *args)
    assert result.code == 0, result.err
    return result.out.strip()


# ---- runs -------------------------------------------------------------------------------


def test_submit_prints_the_run_id_and_sends_typed_inputs(on: Cli, service: Service, tmp_path: Path) -> None:
    yaml_file = tmp_path / "hello.yaml"
    yaml_file.write_text(
        "name: hello\n"
        "steps:\n"
        "  - id: greet\n"
        "    type: log\n"
        "    config: {message: 'Hello {{ inputs.name }}'}\n"
    )
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("name: Grace\ncount: 1\n")

    result = on("runs", "submit", str(yaml_file), "--inputs-file", str(inputs), "-i", "name=Ada", "-i", "n=3")

    assert result.code == 0, result.err
    run_id = result.out.strip()
    drain(service.parts)
    run = on("runs", "get", run_id, "--json").json()
    assert run["inputs"] == {"name": "Ada", "count": 1, "n": 3}
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "Hello Ada"


def test_watch_exits_0_for_a_run_that_succeeded(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, HELLO, "-i", "name=Ada")
    drain(service.parts)

    result = on("runs", "watch", run_id)

    assert result.code == 0
    assert "step greet completed" in result.out
    assert f"run {run_id} succeeded" in result.out
    assert '"message": "Hello Ada"' in result.out


def test_watch_exits_1_for_a_run_that_failed(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, BROKEN)
    drain(service.parts)

    result = on("runs", "watch", run_id)

    assert result.code == 1
    assert f"run {run_id} failed" in result.out


def test_watch_exits_2_for_a_cancelled_run(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, SLOW)
    drain(service.parts)
    cancelled = on("runs", "cancel", run_id)
    assert cancelled.code == 0
    assert f"{run_id}: cancel applied; status cancelled" in cancelled.out

    result = on("runs", "watch", run_id)

    assert result.code == 2
    assert "run cancelled" in result.out


def test_watch_exits_2_when_a_person_rejects(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, REVIEW)
    drain(service.parts)
    rejected = on("reject", run_id, "review", "--comment", "not yet")
    assert rejected.code == 0, rejected.err
    drain(service.parts)

    result = on("runs", "watch", run_id, "--json")

    assert result.code == 2
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert lines[-1]["error"]["code"] == "approval_rejected"
    rejection = next(e for e in lines[:-1] if e["event_type"] == "approval_rejected")
    assert rejection["payload"]["comment"] == "not yet"


def test_approve_sends_comment_and_typed_fields(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, REVIEW)
    drain(service.parts)
    assert on("runs", "get", run_id, "--json").json()["status"] == "waiting_approval"

    result = on(
        "approve", run_id, "review", "-m", "ship it", "--field", "channel=blog", "--field", "copies=2"
    )

    assert result.code == 0, result.err
    assert f"{run_id}: approve applied; status running" in result.out
    drain(service.parts)
    events = [json.loads(line) for line in on("events", "tail", run_id, "--json").out.splitlines()]
    granted = next(e for e in events if e["event_type"] == "approval_granted")
    assert granted["payload"]["comment"] == "ship it"
    assert granted["payload"]["fields"] == {"channel": "blog", "copies": 2}
    assert on("runs", "watch", run_id).code == 0


def test_watch_counts_the_approvals_of_a_two_approver_step(on: Cli, service: Service, tmp_path: Path) -> None:
    quorum = {"assignees": ["alice", "bob"], "required_approvals": 2, "instructions": "Publish?"}
    two = {"name": "publish", "steps": [{**REVIEW["steps"][0], "config": quorum}, REVIEW["steps"][1]]}
    run_id = _submit(on, tmp_path, two)
    drain(service.parts)
    service.parts.control.decide("default", run_id, "review", "approve", "alice")
    assert on("runs", "get", run_id, "--json").json()["status"] == "waiting_approval"
    service.parts.control.decide("default", run_id, "review", "approve", "bob")
    drain(service.parts)

    result = on("runs", "watch", run_id)

    assert result.code == 0, result.err
    lines = [line.split("  ", 1)[1] for line in result.out.splitlines() if "step review" in line]
    assert lines == [
        "step review started (approval)",
        "step review waits for approval: Publish? (assignees: alice, bob)",
        "step review approved by alice (1 of 2)",
        "step review approved by bob (2 of 2)",
        "step review completed",
    ]


def test_retry_from_a_step(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, BROKEN)
    drain(service.parts)

    result = on("runs", "retry", run_id, "--from-step", "second", "--json")

    assert result.code == 0, result.err
    assert result.json() == {"run_id": run_id, "action": "retry", "result": "applied", "status": "running"}


def test_runs_ls_filters_by_status(on: Cli, service: Service, tmp_path: Path) -> None:
    ok = _submit(on, tmp_path, HELLO, "-i", "name=Ada")
    failed = _submit(on, tmp_path, BROKEN)
    drain(service.parts)

    table = on("runs", "ls")
    only_failed = on("runs", "ls", "--status", "failed", "--json").json()

    assert table.code == 0
    assert ok in table.out
    assert failed in table.out
    assert [run["run_id"] for run in only_failed["runs"]] == [failed]


def test_ids_are_never_cut_in_a_narrow_terminal(
    on: Cli, service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _submit(on, tmp_path, {**HELLO, "name": "a-rather-long-workflow-name"}, "-i", "name=Ada")
    monkeypatch.setenv("COLUMNS", "60")

    result = on("runs", "ls")

    assert run_id in result.out


def test_runs_get_shows_the_run(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, BROKEN)
    drain(service.parts)

    result = on("runs", "get", run_id)

    assert result.code == 0
    assert "broken v1" in result.out
    assert "failed" in result.out
    assert "template" in result.out.lower()


def test_submit_a_saved_workflow_by_id(on: Cli, service: Service, tmp_path: Path) -> None:
    pushed = on("defs", "push", _file(tmp_path, HELLO), "--json").json()

    run_id = on("runs", "submit", pushed["workflow_id"], "-i", "name=Grace").out.strip()

    drain(service.parts)
    run = on("runs", "get", run_id, "--json").json()
    assert run["workflow_id"] == pushed["workflow_id"]
    assert run["outputs"]["message"] == "Hello Grace"


# ---- events -----------------------------------------------------------------------------


def test_events_tail_prints_every_event_in_order(on: Cli, service: Service, tmp_path: Path) -> None:
    run_id = _submit(on, tmp_path, HELLO, "-i", "name=Ada")
    drain(service.parts)

    lines = on("events", "tail", run_id).out.splitlines()
    raw = [
        json.loads(line) for line in on("events", "tail", run_id, "--json", "--since", "2").out.splitlines()
    ]
    completed = on("events", "tail", run_id, "-f", "--types", "run_completed", "--json")

    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4"]
    assert "step greet started (log)" in lines[1]
    assert [e["event_type"] for e in raw] == ["step_completed", "run_completed"]
    assert completed.code == 0
    assert [json.loads(line)["event_type"] for line in completed.out.splitlines()] == ["run_completed"]


def test_following_keeps_a_minimum_interval_when_the_service_answers_at_once(canned: Canned) -> None:
    # A service without long polling answers every request at once with nothing new.
    empty = {"run_id": "r", "events": [], "next_since": 3, "has_more": False}
    first = {**empty, "events": [{"event_seq": 3, "event_type": "step_started", "payload": {}}]}
    canned.replies += [(200, first, {}), (200, empty, {}), (200, empty, {}), (200, empty, {})]
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    pacer = Pacer(clock=lambda: now[0], sleep=sleep)
    with Client(canned.url, "k") as client:
        stream = pages(client, "r", since=2, follow=True, pacer=pacer)
        got = [next(stream) for _ in range(4)]

    assert [len(page["events"]) for page in got] == [1, 0, 0, 0]
    # New events: ask again at once; nothing new: wait out the interval before the next request.
    assert sleeps == [MIN_POLL_INTERVAL, MIN_POLL_INTERVAL]
    assert [r["query"]["since"] for r in canned.requests] == [["2"], ["3"], ["3"], ["3"]]
    assert all(r["query"]["wait"] == ["20"] for r in canned.requests)


def test_following_rides_out_a_few_failures(canned: Canned) -> None:
    unavailable = {"error": {"code": "dependency_unavailable", "message": "try again", "details": []}}
    page = {"run_id": "r", "events": [], "next_since": 0, "has_more": False}
    canned.replies += [(503, unavailable, {"Retry-After": "1"}), (200, page, {})]
    sleeps: list[float] = []
    notices: list[str] = []
    pacer = Pacer(clock=lambda: 0.0, sleep=sleeps.append)
    with Client(canned.url, "k") as client:
        got = next(pages(client, "r", follow=True, pacer=pacer, notice=notices.append))

    assert got == page
    assert sleeps == [1.0]
    assert notices == ["dependency_unavailable: try again; retrying in 1 s (1/6)"]


# ---- approvals --------------------------------------------------------------------------


def test_approvals_ls_lists_a_waiting_step_until_it_is_decided(
    on: Cli, service: Service, tmp_path: Path
) -> None:
    run_id = _submit(on, tmp_path, REVIEW)
    drain(service.parts)

    pending = on("approvals", "ls", "--assignee", "me", "--json")
    on("approve", run_id, "review")
    after = on("approvals", "ls", "--json")

    assert pending.code == 0, pending.err
    assert [(a["run_id"], a["step_id"]) for a in pending.json()["approvals"]] == [(run_id, "review")]
    assert after.json()["approvals"] == []


def test_approvals_ls_shows_each_pending_step(cli: Cli, canned: Canned) -> None:
    run_id = "5b3f2a9e-1c77-4f1e-9a55-0d9a3b7f6c21"
    approval: dict[str, Any] = {
        "run_id": run_id,
        "step_id": "review",
        "workflow_id": None,
        "definition_name": "publish",
        "instructions": "Publish the report?",
        "assignees": ["alice", "bob"],
        "required_approvals": 2,
        "approvals": [{"approver": "alice", "approved_at": "2026-01-01T12:00:01.000Z"}],
        "requested_at": "2026-01-01T12:00:00.000Z",
        "expires_at": "2026-01-08T12:00:00.000Z",
    }
    canned.replies.append((200, {"approvals": [approval], "next_cursor": "abc"}, {}))

    result = cli(
        "approvals", "ls", "--assignee", "me", env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"}
    )

    assert result.code == 0, result.err
    row = next(line for line in result.out.splitlines() if run_id in line)
    for text in ("review", "publish", "1/2", "alice, bob", "Publish the report?"):
        assert text in row
    assert "more: workflows approvals ls --cursor abc" in result.err
    assert canned.requests[0]["path"] == "/api/v1/workflows/approvals"
    assert canned.requests[0]["query"] == {"status": ["pending"], "assignee": ["me"]}
    assert canned.requests[0]["headers"]["X-API-KEY"] == "k"


# ---- definitions ------------------------------------------------------------------------


def test_defs_push_creates_then_adds_versions(on: Cli, service: Service, tmp_path: Path) -> None:
    first = on("defs", "push", _file(tmp_path, {**HELLO, "version": 1}))
    second = on("defs", "push", _file(tmp_path, {**HELLO, "version": 1, "description": "v2"}))
    other = on("defs", "push", _file(tmp_path, {**HELLO, "name": "other"}, "other.yaml"))

    assert first.code == 0, first.err
    assert first.out.startswith("created workflow ")
    workflow_id = first.out.split()[2].rstrip(":")
    assert second.out.strip() == f"new version of workflow {workflow_id}: hello v2"
    assert other.out.startswith("created workflow ")
    listed = on("defs", "ls", "--json").json()["workflows"]
    assert sorted((w["name"], w["version"]) for w in listed) == [("hello", 2), ("other", 1)]
    table = on("defs", "ls").out
    assert workflow_id in table


def test_defs_push_to_a_named_workflow(on: Cli, service: Service, tmp_path: Path) -> None:
    workflow_id = on("defs", "push", _file(tmp_path, HELLO), "--json").json()["workflow_id"]

    result = on(
        "defs", "push", _file(tmp_path, {**HELLO, "name": "renamed"}), "--workflow", workflow_id, "--json"
    )

    assert result.code == 0, result.err
    assert (result.json()["workflow_id"], result.json()["version"]) == (workflow_id, 2)


# ---- webhook dead letters ---------------------------------------------------------------


def test_dlq_ls_and_an_unknown_row(on: Cli, service: Service) -> None:
    listed = on("dlq", "ls", "--json")
    replay = on("dlq", "replay", "0123456789abcdef0123456789abcdef")

    assert listed.code == 0
    assert listed.json() == {"rows": [], "next_cursor": None}
    assert replay.code == EXIT_API_ERROR
    assert "error:" in replay.err


# ---- errors -----------------------------------------------------------------------------


def test_a_refused_action_shows_the_services_code_and_message(
    on: Cli, service: Service, tmp_path: Path
) -> None:
    run_id = _submit(on, tmp_path, HELLO, "-i", "name=Ada")
    drain(service.parts)

    result = on("runs", "pause", run_id)

    assert result.code == EXIT_API_ERROR
    assert "error: invalid_state: " in result.err
    assert "(HTTP 409)" in result.err
    assert "Traceback" not in result.err


def test_validation_errors_name_each_field(on: Cli, tmp_path: Path) -> None:
    bad = {"name": "bad", "steps": [{"id": "a", "type": "teleport"}]}

    result = on("runs", "submit", _file(tmp_path, bad))

    assert result.code == EXIT_API_ERROR
    assert "error: validation_error: definition.steps[0].type" in result.err
    assert "  definition.steps[0].type: " in result.err


def test_an_unknown_run_is_not_found(on: Cli) -> None:
    result = on("runs", "get", "7d0f5a0e-8a5e-4a7c-9a0e-2b1f3c4d5e6f")

    assert result.code == EXIT_API_ERROR
    assert "error: not_found: " in result.err


def test_a_wrong_key_says_which_settings_to_check(on: Cli) -> None:
    result = on("runs", "ls", env={"WORKFLOWS_API_KEY": "wrong-key"})

    assert result.code == EXIT_API_ERROR
    assert "error: unauthenticated: " in result.err
    assert "check the API key (WORKFLOWS_API_KEY" in result.err


def test_a_url_that_is_not_the_api_says_so(cli: Cli, service: Service) -> None:
    base = service.url.removesuffix("/api/v1/workflows")

    result = cli("runs", "ls", env={"WORKFLOWS_URL": base, "WORKFLOWS_API_KEY": "k"})

    assert result.code == EXIT_API_ERROR
    assert f"is {base} the API's base URL? It ends in /api/v1/workflows" in result.err


def test_an_answer_that_is_not_json_is_shown_briefly(cli: Cli, canned: Canned) -> None:
    canned.replies.append((502, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"}))

    result = cli("runs", "ls", env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"})

    assert result.code == EXIT_API_ERROR
    assert "error: http_502: Bad Gateway: <html><body>Bad gateway</body></html> (HTTP 502)" in result.err


def test_an_unreachable_service_is_named_with_its_url(cli: Cli) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1/workflows"

    result = cli("runs", "ls", env={"WORKFLOWS_URL": url, "WORKFLOWS_API_KEY": "k"})

    assert result.code == EXIT_UNREACHABLE
    assert f"error: cannot reach the service at {url}: cannot connect" in result.err
    assert "the URL comes from WORKFLOWS_URL" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("run_id", ["../../health", "a/b"])
def test_ids_stay_one_path_segment(cli: Cli, canned: Canned, run_id: str) -> None:
    canned.replies.append((404, {"error": {"code": "not_found", "message": "no", "details": []}}, {}))

    cli("runs", "get", run_id, env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"})

    assert canned.requests[0]["path"] == "/api/v1/workflows/runs/" + run_id.replace("/", "%2F")


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["runs", "get", ".."], "argument RUN: '..' is not an id"),
        (["runs", "watch", "."], "argument RUN: '.' is not an id"),
        (["events", "tail", ""], "argument RUN: an id cannot be empty"),
        (["approve", "R", ".."], "argument STEP: '..' is not an id"),
        (["dlq", "replay", ".."], "argument ROW: '..' is not an id"),
    ],
)
def test_ids_a_url_would_resolve_away_are_usage_errors(
    cli: Cli, canned: Canned, argv: list[str], shown: str
) -> None:
    result = cli(*argv, env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"})

    assert result.code == EXIT_USAGE
    assert shown in result.err
    assert canned.requests == []  # nothing was sent, least of all to another route


def test_the_client_refuses_to_put_such_ids_in_a_path() -> None:
    with (
        Client("http://127.0.0.1:9/api/v1/workflows", "k") as client,
        pytest.raises(ValueError, match="cannot be an id"),
    ):
        client.run("..")
