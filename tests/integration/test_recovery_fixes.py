"""Recovery under partial failure, on in-memory fakes with a fake clock: the sweeper counts re-kicks
only since a run's last progress, a run's `ended_at` is the moment of its terminal commit, and a
repeated decision on an approval answers the same whatever happened after it (docs/engine.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.conftest import APPS, FakeClock, drain, make_fake
from tests.faults import Faulty, one_step_left, registry_with
from workflows.clock import parse_iso as parse_time
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import Run, RunStatus
from workflows.roots.parts import Parts
from workflows.steps.base import StepContext, StepResult, TemplateField

T = "default"
CALLER = Principal(T, "admin", ALL_PERMISSIONS)
GRACE = 900
MAX_REKICKS = 3


def _submit(parts: Parts, steps: list[dict[str, Any]]) -> Run:
    definition = WorkflowDefinition.model_validate({"name": "recovery", "steps": steps})
    return parts.run_service.submit(CALLER, definition, {})


def _logs(count: int) -> list[dict[str, Any]]:
    return [{"id": f"s{i}", "type": "log", "config": {"message": f"m{i}"}} for i in range(1, count + 1)]


# ---- the sweeper counts re-kicks since the last progress ---------------------------------


def _swept_parts(clock: FakeClock) -> Parts:
    """Fake parts whose queue can lose kicks (`_queue`)."""
    parts = make_fake(clock, sweep_grace_sec=GRACE, sweep_max_rekicks=MAX_REKICKS)
    return parts.give(queue=Faulty(parts.queue))


def _queue(parts: Parts) -> Faulty:
    queue = parts.queue
    assert isinstance(queue, Faulty)
    return queue


def _process_losing_the_next_kick(parts: Parts) -> None:
    """Deliver the one visible kick, for one step (every step's commit is followed by a send);
    the kick the engine sends after its commit is dropped."""
    [message] = parts.queue.receive()
    queue = _queue(parts).drop("send", times=None)
    try:
        parts.engine.process(message, one_step_left)
    finally:
        queue.heal()


def test_a_run_that_advances_after_each_re_kick_is_never_stalled(clock: FakeClock) -> None:
    # Given a five-step run whose kick is lost after each of its first four steps
    parts = _swept_parts(clock)
    run = _submit(parts, _logs(5))
    _process_losing_the_next_kick(parts)
    for step in range(2, 6):
        assert parts.queue.depth() == 0
        clock.advance(GRACE + 1)
        # The sweeper re-kicks it, and the run commits one more step, whose next kick is lost
        report = parts.sweeper.sweep()
        assert (report.rekicked, report.stalled) == (1, 0)
        if step < 5:
            _process_losing_the_next_kick(parts)
            assert parts.runs.get(T, run.run_id).steps_executed == step
    drain(parts)
    # Then it ran every step and succeeded: four re-kicks, but never more than one without progress
    done = parts.runs.get(T, run.run_id)
    assert done.status == RunStatus.SUCCEEDED
    assert done.steps_executed == 5
    assert done.sweeps == 0


def test_a_run_without_progress_across_the_re_kicks_still_fails_stalled(clock: FakeClock) -> None:
    # Given a run that advanced once after a re-kick, then loses every kick
    parts = _swept_parts(clock)
    run = _submit(parts, _logs(3))
    _process_losing_the_next_kick(parts)
    clock.advance(GRACE + 1)
    assert parts.sweeper.sweep().rekicked == 1
    _process_losing_the_next_kick(parts)
    assert parts.runs.get(T, run.run_id).sweeps == 0
    _queue(parts).drop("send", times=None)
    # When the sweeper re-kicks it MAX_REKICKS times and it never moves
    for _ in range(MAX_REKICKS):
        clock.advance(GRACE + 1)
        assert parts.sweeper.sweep().rekicked == 1
    clock.advance(GRACE + 1)
    report = parts.sweeper.sweep()
    # Then the next sweep fails it `stalled`
    assert (report.rekicked, report.stalled) == (0, 1)
    stalled = parts.runs.get(T, run.run_id)
    assert stalled.status == RunStatus.FAILED
    assert stalled.error is not None
    assert stalled.error["code"] == "stalled"
    assert stalled.steps_executed == 2


def test_a_retried_run_starts_its_re_kick_count_again(clock: FakeClock) -> None:
    parts = _swept_parts(clock)
    run = _submit(parts, _logs(2))
    queue = _queue(parts)
    queue.messages.clear()
    queue.drop("send", times=None)
    for _ in range(MAX_REKICKS + 1):
        clock.advance(GRACE + 1)
        parts.sweeper.sweep()
    queue.heal()
    assert parts.runs.get(T, run.run_id).status == RunStatus.FAILED
    parts.control_service.act(CALLER, run.run_id, "retry", from_step=None)
    assert parts.runs.get(T, run.run_id).sweeps == 0


# ---- ended_at is the moment of the terminal commit -------------------------------------------

STEP_SECONDS = 7


class SlowConfig(BaseModel):
    outcome: Literal["ok", "fail"] = "ok"


class SlowStep:
    """A step that takes STEP_SECONDS of the fake clock, as a call out would."""

    name = "slow"
    description = "test step"
    config_model = SlowConfig
    example = {"outcome": "ok"}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()
    rejectable = False

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, SlowConfig)
        self._clock.advance(STEP_SECONDS)
        if config.outcome == "fail":
            raise StepFailed("slow_failed", "the slow step failed", retryable=False)
        return StepResult(output={"ok": True})


def _slow_parts(clock: FakeClock) -> Parts:
    return make_fake(clock).give(registry=registry_with(SlowStep(clock)))


@pytest.mark.parametrize(("outcome", "status"), [("ok", RunStatus.SUCCEEDED), ("fail", RunStatus.FAILED)])
def test_ended_at_is_the_time_of_the_terminal_commit(
    clock: FakeClock, outcome: str, status: RunStatus
) -> None:
    parts = _slow_parts(clock)
    run = _submit(parts, [{"id": "work", "type": "slow", "config": {"outcome": outcome}}])
    [message] = parts.queue.receive()
    started = clock()
    parts.engine.process(message)
    done = parts.runs.get(T, run.run_id)
    assert done.status == status
    assert done.ended_at is not None
    # The clock moved inside the step: the run ended when its terminal commit was written.
    assert done.ended_at == done.updated_at
    assert done.started_at is not None
    assert (_at(done.ended_at) - _at(done.started_at)) == STEP_SECONDS
    assert _at(done.started_at) == started.timestamp()


def test_ended_at_is_not_before_the_last_step_completed(clock: FakeClock) -> None:
    parts = _slow_parts(clock)
    run = _submit(
        parts, [{"id": "a", "type": "slow", "config": {}}, {"id": "b", "type": "slow", "config": {}}]
    )
    drain(parts)
    done = parts.runs.get(T, run.run_id)
    events = parts.runs.list_events(T, run.run_id, since=0, limit=100).events
    last_completed = [e for e in events if e.event_type == "step_completed"][-1]
    assert done.ended_at is not None
    assert done.ended_at >= last_completed.created_at
    finished = [e for e in events if e.event_type == "run_completed"][-1]
    assert done.ended_at == finished.created_at


def _at(moment: str) -> float:
    return parse_time(moment).timestamp()


# ---- a repeated decision answers the same ----------------------------------------------------

P = "/api/v1/workflows"
DECIDERS = ("owen", "alice", "bob")


class Api:
    def __init__(self, parts: Parts, client: TestClient) -> None:
        self.parts = parts
        self.client = client
        self.keys = {user: parts.api_keys.create("t1", user, [])[0] for user in DECIDERS}

    def submit(self, **review: Any) -> str:
        steps: list[dict[str, Any]] = [
            {"id": "review", "type": "approval", "config": {"assignees": ["alice", "bob"]}, **review},
            {"id": "after", "type": "log", "config": {"message": "approved"}},
        ]
        if "on_failure" in review:
            steps.append({"id": "fallback", "type": "log", "config": {"message": "rejected"}})
        body = {"definition": {"name": "review", "steps": steps}, "inputs": {}}
        response = self.client.post(f"{P}/runs", json=body, headers={"X-API-KEY": self.keys["owen"]})
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        drain(self.parts)
        return run_id

    def decide(self, who: str, run_id: str, decision: str) -> Any:
        path = f"{P}/runs/{run_id}/steps/review/{decision}"
        response = self.client.post(path, json={"comment": "c"}, headers={"X-API-KEY": self.keys[who]})
        drain(self.parts)
        return response

    def status(self, run_id: str) -> str:
        return self.parts.runs.get("t1", run_id).status.value


@pytest.fixture
def api(clock: FakeClock) -> Iterator[Api]:
    parts = make_fake(clock, auth_mode="multi_user")
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield Api(parts, client)


def test_a_repeated_reject_that_failed_the_run_is_already_applied(api: Api) -> None:
    run_id = api.submit()
    assert api.decide("alice", run_id, "reject").json()["result"] == "applied"
    assert api.status(run_id) == "failed"
    again = api.decide("alice", run_id, "reject")
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "already_applied"
    assert again.json()["status"] == "failed"


def test_a_repeated_reject_routed_by_on_failure_is_already_applied(api: Api) -> None:
    run_id = api.submit(on_failure="fallback")
    assert api.decide("alice", run_id, "reject").json()["result"] == "applied"
    assert api.status(run_id) == "succeeded"
    again = api.decide("alice", run_id, "reject")
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "already_applied"


def test_a_repeated_approve_after_the_run_moved_on_is_already_applied(api: Api) -> None:
    run_id = api.submit()
    assert api.decide("bob", run_id, "approve").json()["result"] == "applied"
    assert api.status(run_id) == "succeeded"
    again = api.decide("bob", run_id, "approve")
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "already_applied"


@pytest.mark.parametrize("on_failure", [None, "fallback"])
def test_an_approve_after_a_reject_is_409(api: Api, on_failure: str | None) -> None:
    run_id = api.submit(**({"on_failure": on_failure} if on_failure else {}))
    api.decide("alice", run_id, "reject")
    response = api.decide("alice", run_id, "approve")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"


@pytest.mark.parametrize("on_failure", [None, "fallback"])
def test_a_reject_by_someone_else_after_the_decision_is_409(api: Api, on_failure: str | None) -> None:
    run_id = api.submit(**({"on_failure": on_failure} if on_failure else {}))
    api.decide("alice", run_id, "reject")
    response = api.decide("bob", run_id, "reject")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"


@pytest.mark.parametrize("on_failure", [None, "fallback"])
def test_a_repeated_reject_is_already_applied_on_dynamodb(
    moto_client: TestClient, moto_container: Parts, on_failure: str | None
) -> None:
    # The decision is found in the stored events, wherever the run's later commits left it.
    review: dict[str, Any] = {"id": "review", "type": "approval", "config": {}}
    steps = [review, *_logs(3)]
    if on_failure:
        review["on_failure"] = "s1"
    body = {"definition": {"name": "review", "steps": steps}, "inputs": {}}
    run_id = moto_client.post(f"{P}/runs", json=body).json()["run_id"]
    drain(moto_container)
    path = f"{P}/runs/{run_id}/steps/review/reject"
    assert moto_client.post(path, json={}).json()["result"] == "applied"
    drain(moto_container)
    assert moto_container.runs.get(T, run_id).is_terminal
    again = moto_client.post(path, json={})
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "already_applied"
    assert moto_client.post(f"{P}/runs/{run_id}/steps/review/approve").status_code == 409
