"""Engine invariants (docs/engine.md) with duplicate, late and lost messages."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.commits import transition
from tests.conftest import FakeClock, api_client, drain, log_definition, make_container
from tests.faults import Faulty, one_step_left
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import EventType, NewEvent, RunStatus
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


RUNS = "/api/v1/workflows/runs"


def _submit(client: TestClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    response = client.post(RUNS, json={"definition": definition, "inputs": inputs or {}})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def _kick(run_id: str, version: int) -> AdvanceMessage:
    return AdvanceMessage(tenant_id="default", run_id=run_id, version=version)


def _event_types(container: Parts, run_id: str) -> list[str]:
    return [e.event_type for e in container.runs.list_events("default", run_id, limit=1000).events]


def test_duplicate_kick_changes_nothing(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, log_definition("a", "b"))
    assert container.engine.process(_kick(run_id, 1), one_step_left).action == "advanced"
    before = container.runs.get("default", run_id)

    # The same message delivered again
    assert container.engine.process(_kick(run_id, 1)).action == "stale"

    after = container.runs.get("default", run_id)
    assert (after.version, after.last_event_seq, after.current_step_id) == (
        before.version,
        before.last_event_seq,
        before.current_step_id,
    )


def test_every_step_commits_once_despite_duplicates(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, log_definition("a", "b", "c"))
    # Duplicate every message SQS hands over.
    for _ in range(10):
        received = container.sqs.receive_message(
            QueueUrl=container.settings.dispatch_queue_url, MaxNumberOfMessages=10
        ).get("Messages", [])
        if not received:
            break
        for message in received:
            kick = AdvanceMessage.from_body(message["Body"])
            container.engine.process(kick)
            container.engine.process(kick)
            container.sqs.delete_message(
                QueueUrl=container.settings.dispatch_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    run = container.runs.get("default", run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert _event_types(container, run_id).count("step_completed") == 3
    assert run.steps_executed == 3


def test_kick_lost_after_commit_is_resent_after_grace(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    # Given a run whose first step committed (one step per message, as for steps that call out)
    # but whose next kick was never sent: the process "died" before sending
    queue = Faulty(container.queue)
    container.give(queue=queue)
    run_id = _submit(client, log_definition("a", "b"))
    container.sqs.purge_queue(QueueUrl=container.settings.dispatch_queue_url)
    queue.drop("send")
    container.engine.process(_kick(run_id, 1), one_step_left)
    assert queue.faults["send"] == 1

    # When SQS redelivers the first kick soon after, nothing is re-sent (it may be in flight)
    assert container.engine.process(_kick(run_id, 1)).action == "stale"
    # ... but once the run has sat still past the grace period, the kick is re-sent
    clock.advance(61)
    assert container.engine.process(_kick(run_id, 1)).action == "resent"
    drain(container)
    assert container.runs.get("default", run_id).status == RunStatus.SUCCEEDED


def test_terminal_and_paused_runs_ignore_kicks(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, log_definition("a", "b"))
    run = container.runs.get("default", run_id)
    paused = transition(
        container.runs, run, {"status": RunStatus.PAUSED}, [NewEvent(event_type=EventType.RUN_PAUSED)]
    )
    assert container.engine.process(_kick(run_id, paused.version)).action == "ignored"
    assert container.runs.get("default", run_id).current_step_id == "s1"


def test_step_failure_is_retried_then_fails_the_run(client: TestClient, container: Parts) -> None:
    definition = {
        "name": "broken",
        "steps": [
            {
                "id": "oops",
                "type": "log",
                "config": {"message": "{{ inputs.missing.deeper }}"},
                "retry": {"max_attempts": 2, "initial_interval_seconds": 0, "jitter": "none"},
            }
        ],
    }
    run_id = _submit(client, definition)
    drain(container)
    run = container.runs.get("default", run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "template_error"
    assert run.error["step_id"] == "oops"
    assert _event_types(container, run_id) == [
        "run_started",
        "step_started",
        "step_retrying",
        "step_started",
        "step_failed",
        "run_failed",
    ]


def test_on_failure_routes_to_another_step(client: TestClient, container: Parts) -> None:
    definition = {
        "name": "recover",
        "steps": [
            {"id": "oops", "type": "log", "config": {"message": "{{ nope.x }}"}, "on_failure": "fallback"},
            {"id": "never", "type": "log", "config": {"message": "skipped"}},
            {"id": "fallback", "type": "log", "config": {"message": "recovered from {{ last.error.code }}"}},
        ],
    }
    run_id = _submit(client, definition)
    drain(container)
    run = container.runs.get("default", run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"message": "recovered from template_error", "level": "info"}
    assert "never" not in run.step_outputs


def test_endless_loop_through_a_branch_is_stopped_by_the_step_budget(
    aws_env: dict[str, str], clock: FakeClock
) -> None:
    # Given a loop a run could leave (through the branch), but whose condition never lets it,
    # and a budget of five steps a run
    container = make_container(aws_env, clock, max_steps_per_run=5)
    definition = {
        "name": "loop",
        "steps": [
            {"id": "a", "type": "log", "config": {"message": "x"}},
            {
                "id": "b",
                "type": "branch",
                "config": {"condition": "true", "true_next": "a", "false_next": "_end"},
            },
        ],
    }
    with api_client(container) as client:
        run_id = _submit(client, definition)
        drain(container)
        run = container.runs.get("default", run_id)
        assert run.status == RunStatus.FAILED
        assert run.status_reason == "max_steps_exceeded"
        assert run.steps_executed == 5


def test_sandbox_refuses_unsafe_template(client: TestClient, container: Parts) -> None:
    definition = log_definition("{{ inputs.__class__.__mro__ }}")
    run_id = _submit(client, definition)
    drain(container)
    run = container.runs.get("default", run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "template_error"
