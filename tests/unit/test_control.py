"""Control actions and the step types that rest: delay, approval, branch."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import FakeClock, api_client, drain, log_definition, make_fake
from tests.faults import Meddling, one_step_left, registry_with
from workflows.domain.messages import AdvanceMessage
from workflows.roots.parts import Parts
from workflows.steps.log import LogStep

BASE = "/api/v1/workflows"


def _submit(client: TestClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    response = client.post(f"{BASE}/runs", json={"definition": definition, "inputs": inputs or {}})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def _run(client: TestClient, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"{BASE}/runs/{run_id}").json()
    return body


def _types(client: TestClient, run_id: str) -> list[str]:
    events = client.get(f"{BASE}/runs/{run_id}/events", params={"limit": 1000}).json()["events"]
    seqs = [e["event_seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free, no duplicates
    return [e["event_type"] for e in events]


def _act(client: TestClient, run_id: str, action: str, body: dict[str, Any] | None = None) -> Any:
    return (
        client.post(f"{BASE}/runs/{run_id}/{action}", json=body)
        if body
        else client.post(f"{BASE}/runs/{run_id}/{action}")
    )


def _delay_then_log(seconds: float = 600) -> dict[str, Any]:
    return {
        "name": "wait",
        "steps": [
            {"id": "wait", "type": "delay", "config": {"seconds": seconds}},
            {"id": "after", "type": "log", "config": {"message": "done"}},
        ],
    }


def _approval(on_failure: str | None = None, on_timeout: str = "reject") -> dict[str, Any]:
    review: dict[str, Any] = {
        "id": "review",
        "type": "approval",
        "config": {
            "instructions": "check",
            "assignees": ["alice"],
            "timeout_seconds": 3600,
            "on_timeout": on_timeout,
        },
    }
    if on_failure:
        review["on_failure"] = on_failure
    return {
        "name": "approve-me",
        "steps": [
            review,
            {"id": "publish", "type": "log", "config": {"message": "{{ steps.review.output.comment }}"}},
            {"id": "fallback", "type": "log", "config": {"message": "rejected"}},
        ],
    }


# ---- delay -------------------------------------------------------------------------


def test_delay_rests_without_sleeping_and_finishes_when_due(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    run_id = _submit(client, _delay_then_log(1800))  # longer than SQS's 15-minute maximum
    drain(container)
    run = _run(client, run_id)
    assert run["status"] == "running"
    assert run["current_step_id"] == "wait"
    # the queue holds the delayed kick; time moves on and the chained hops fire
    clock.advance(900)
    container.engine.process(
        AdvanceMessage(tenant_id="default", run_id=run_id, version=_version(container, run_id))
    )
    assert _run(client, run_id)["status"] == "running"  # a hop: still 900 s to go
    clock.advance(901)
    container.engine.process(
        AdvanceMessage(tenant_id="default", run_id=run_id, version=_version(container, run_id))
    )
    run = _run(client, run_id)
    assert run["status"] == "succeeded"
    assert _types(client, run_id) == [
        "run_started",
        "step_started",
        "step_completed",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    # Milliseconds, as every other timestamp of the API.
    completed = client.get(f"{BASE}/runs/{run_id}/events", params={"types": "step_completed"}).json()[
        "events"
    ]
    waited_until = completed[0]["payload"]["output"]["waited_until"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", waited_until), waited_until


def _version(container: Parts, run_id: str) -> int:
    return container.runs.get("default", run_id).version


def test_delay_then_cancel_ends_cancelled_with_acknowledgement(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    run_id = _submit(client, _delay_then_log())
    drain(container)
    version_before_cancel = _version(container, run_id)
    response = _act(client, run_id, "cancel")
    assert response.json() == {
        "run_id": run_id,
        "action": "cancel",
        "result": "applied",
        "status": "cancelled",
    }
    # the delayed kick arrives later and changes nothing
    clock.advance(601)
    outcome = container.engine.process(
        AdvanceMessage(tenant_id="default", run_id=run_id, version=version_before_cancel)
    )
    assert outcome.action == "stale"
    assert _run(client, run_id)["status"] == "cancelled"
    assert _types(client, run_id)[-2:] == ["cancel_acknowledged", "run_cancelled"]


def test_cancel_twice_gives_applied_then_already_applied(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, _delay_then_log())
    assert _act(client, run_id, "cancel").json()["result"] == "applied"
    second = _act(client, run_id, "cancel")
    assert second.status_code == 200
    assert second.json()["result"] == "already_applied"
    assert _types(client, run_id).count("run_cancelled") == 1


def test_pause_on_a_succeeded_run_is_refused(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, log_definition("hi"))
    drain(container)
    response = _act(client, run_id, "pause")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"
    assert response.json()["error"]["details"] == [{"field": "status", "message": "succeeded"}]


def test_pause_then_resume_continues_where_it_stopped(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    run_id = _submit(client, _delay_then_log(60))
    drain(container)
    assert _act(client, run_id, "pause").json()["status"] == "paused"
    assert _act(client, run_id, "pause").json()["result"] == "already_applied"
    # the delay's own kick arrives while paused: ignored
    clock.advance(61)
    drain(container)
    assert _run(client, run_id)["status"] == "paused"
    # resumed after the delay's end: the delay completes at once and the run finishes
    assert _act(client, run_id, "resume").json() == {
        "run_id": run_id,
        "action": "resume",
        "result": "applied",
        "status": "running",
    }
    drain(container)
    assert _run(client, run_id)["status"] == "succeeded"
    types = _types(client, run_id)
    assert types.index("run_paused") < types.index("run_resumed") < types.index("run_completed")


def _parts_with_meddling_log(clock: FakeClock) -> tuple[Parts, Meddling]:
    """Fake parts whose `log` steps are a `Meddling` log: something can happen while one runs."""
    log = Meddling(LogStep())
    return make_fake(clock).give(registry=registry_with(log)), log


def test_pause_takes_effect_at_the_step_boundary(clock: FakeClock) -> None:
    container, log = _parts_with_meddling_log(clock)
    with api_client(container) as client:
        # Given a kick read before the pause (the step is executing when the pause lands)
        run_id = _submit(client, log_definition("a", "b"))
        run = container.runs.get("default", run_id)
        log.after = lambda _: container.control.act("default", run_id, "pause", "op")  # lands mid-step
        container.engine.process(
            AdvanceMessage(tenant_id="default", run_id=run_id, version=run.version), one_step_left
        )

        # Then the step's result is committed, and the run rests before the next step
        stored = container.runs.get("default", run_id)
        assert stored.status.value == "paused"
        assert stored.current_step_id == "s2"
        assert stored.step_outputs["s1"] == {"message": "a", "level": "info"}
        _act(client, run_id, "resume")
        drain(container)
        assert _run(client, run_id)["status"] == "succeeded"


def test_cancel_discards_an_in_flight_steps_result(clock: FakeClock) -> None:
    container, log = _parts_with_meddling_log(clock)
    with api_client(container) as client:
        run_id = _submit(client, log_definition("a", "b"))
        run = container.runs.get("default", run_id)
        log.after = lambda _: container.control.act("default", run_id, "cancel", "op")
        outcome = container.engine.process(
            AdvanceMessage(tenant_id="default", run_id=run_id, version=run.version)
        )
        assert outcome.action == "lost_race"
        stored = container.runs.get("default", run_id)
        assert stored.status.value == "cancelled"
        assert stored.step_outputs == {}
        assert "step_completed" not in _types(client, run_id)


def test_unknown_action_is_404_and_unknown_run_is_404(client: TestClient) -> None:
    run_id = _submit(client, log_definition("hi"))
    assert _act(client, run_id, "explode").status_code == 404
    assert _act(client, "nope", "cancel").status_code == 404


# ---- retry -------------------------------------------------------------------------


def test_retry_after_failure_finishes_the_run(client: TestClient, container: Parts, clock: FakeClock) -> None:
    # Given a run that failed because nobody approved in time
    run_id = _submit(client, _approval(on_timeout="fail"))
    drain(container)
    clock.advance(3601)
    container.engine.process(
        AdvanceMessage(tenant_id="default", run_id=run_id, version=_version(container, run_id))
    )
    failed = container.runs.get("default", run_id)
    assert failed.status.value == "failed"
    assert failed.error is not None
    assert failed.error["code"] == "timeout"

    # When it is retried, a kick from before the retry changes nothing
    assert _act(client, run_id, "retry").json()["result"] == "applied"
    stale = container.engine.process(
        AdvanceMessage(tenant_id="default", run_id=run_id, version=failed.version)
    )
    assert stale.action == "stale"
    drain(container)
    assert _run(client, run_id)["status"] == "waiting_approval"

    # Then approving this time finishes it
    client.post(f"{BASE}/runs/{run_id}/steps/review/approve", json={"comment": "late but fine"})
    drain(container)
    assert _run(client, run_id)["status"] == "succeeded"
    assert _types(client, run_id).count("run_failed") == 1


def test_retry_re_executes_the_failed_step_keeping_earlier_outputs(
    client: TestClient, container: Parts
) -> None:
    definition = {
        "name": "once",
        "steps": [
            {"id": "first", "type": "log", "config": {"message": "kept"}},
            {
                "id": "gate",
                "type": "branch",
                "config": {"condition": "inputs.go", "true_next": "_end", "false_next": "boom"},
            },
            {"id": "boom", "type": "log", "config": {"message": "{{ nope.x }}"}},
        ],
    }
    run_id = _submit(client, definition, {"go": False})
    drain(container)
    assert _run(client, run_id)["error"]["step_id"] == "boom"
    assert _act(client, run_id, "retry").json()["status"] == "running"
    drain(container)
    run = container.runs.get("default", run_id)
    assert run.status.value == "failed"
    assert run.step_outputs["first"] == {"message": "kept", "level": "info"}
    assert _act(client, run_id, "retry", {"from_step": "zzz"}).status_code == 422


def test_retry_of_a_running_run_is_refused(client: TestClient) -> None:
    run_id = _submit(client, _delay_then_log())
    response = _act(client, run_id, "retry")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"


# ---- approval ----------------------------------------------------------------------


def test_approval_then_approve_finishes_the_run(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, _approval())
    drain(container)
    run = _run(client, run_id)
    assert run["status"] == "waiting_approval"
    response = client.post(
        f"{BASE}/runs/{run_id}/steps/review/approve", json={"comment": "ship it", "fields": {"score": 5}}
    )
    assert response.json() == {
        "run_id": run_id,
        "action": "approve",
        "result": "applied",
        "status": "running",
        "approvals": 1,
        "required_approvals": 1,
    }
    again = client.post(f"{BASE}/runs/{run_id}/steps/review/approve")
    assert again.json()["result"] == "already_applied"
    drain(container)
    run = container.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert run.step_outputs["review"] == {
        "decision": "approve",
        "comment": "ship it",
        "fields": {"score": 5},
        "approver": "admin",
        "approvers": ["admin"],
    }
    # publish read the decision; fallback never ran (publish is last-but-one, routing goes on)
    assert run.step_outputs["publish"]["message"] == "ship it"
    assert "approval_granted" in _types(client, run_id)


def test_reject_fails_the_run_or_follows_on_failure(client: TestClient, container: Parts) -> None:
    plain = _submit(client, _approval())
    routed = _submit(client, _approval(on_failure="fallback"))
    drain(container)
    client.post(f"{BASE}/runs/{plain}/steps/review/reject", json={"comment": "no"})
    client.post(f"{BASE}/runs/{routed}/steps/review/reject", json={"comment": "no"})
    drain(container)
    assert _run(client, plain)["status"] == "failed"
    assert _run(client, plain)["error"]["code"] == "approval_rejected"
    routed_run = container.runs.get("default", routed)
    assert routed_run.status.value == "succeeded"
    assert routed_run.outputs == {"message": "rejected", "level": "info"}
    assert "approval_rejected" in _types(client, routed)


def test_approve_only_acts_on_a_waiting_step(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, log_definition("hi"))
    assert client.post(f"{BASE}/runs/{run_id}/steps/s1/approve").status_code == 409
    assert client.post(f"{BASE}/runs/{run_id}/steps/zzz/approve").status_code == 404
    waiting = _submit(client, _approval())
    drain(container)
    assert client.post(f"{BASE}/runs/{waiting}/steps/publish/approve").status_code == 409
    assert client.post(f"{BASE}/runs/{waiting}/steps/review/maybe").status_code == 404


def test_approval_timeout_applies_on_timeout(client: TestClient, container: Parts, clock: FakeClock) -> None:
    approve = _submit(client, _approval(on_timeout="approve"))
    reject = _submit(client, _approval(on_timeout="reject"))
    drain(container)
    clock.advance(3601)
    for run_id in (approve, reject):
        container.engine.process(
            AdvanceMessage(tenant_id="default", run_id=run_id, version=_version(container, run_id))
        )
    drain(container)
    assert _run(client, approve)["status"] == "succeeded"
    assert container.runs.get("default", approve).step_outputs["review"]["approver"] == "system:timeout"
    assert _run(client, reject)["status"] == "failed"
    assert "step_timeout" in _types(client, reject)


def test_legacy_step_name_is_accepted(client: TestClient, container: Parts) -> None:
    definition = {"name": "legacy", "steps": [{"id": "ok", "type": "wait_for_approval", "config": {}}]}
    run_id = _submit(client, definition)
    drain(container)
    assert _run(client, run_id)["status"] == "waiting_approval"


# ---- branch and inline execution ---------------------------------------------------


def test_branch_picks_the_path(client: TestClient, container: Parts) -> None:
    definition = {
        "name": "fork",
        "steps": [
            {
                "id": "gate",
                "type": "branch",
                "config": {"condition": "inputs.score > 0.5", "true_next": "high", "false_next": "low"},
            },
            {"id": "low", "type": "log", "config": {"message": "low"}, "on_success": "_end"},
            {"id": "high", "type": "log", "config": {"message": "high"}},
        ],
    }
    high = _submit(client, definition, {"score": 0.9})
    low = _submit(client, definition, {"score": 0.1})
    drain(container)
    assert _run(client, high)["outputs"]["message"] == "high"
    assert _run(client, low)["outputs"]["message"] == "low"


def test_branch_to_unknown_step_is_rejected_on_submission(client: TestClient) -> None:
    definition = {
        "name": "bad",
        "steps": [
            {
                "id": "g",
                "type": "branch",
                "config": {"condition": "true", "true_next": "x", "false_next": "_end"},
            }
        ],
    }
    response = client.post(f"{BASE}/runs", json={"definition": definition})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "definition.steps[0].config.true_next"


def test_cheap_steps_run_in_one_invocation(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, log_definition(*[f"step {i}" for i in range(10)]))
    drained = drain(container)
    assert drained.actions == ["advanced"]  # one message for ten committed steps
    assert container.runs.get("default", run_id).steps_executed == 10
    assert _types(client, run_id).count("step_completed") == 10


def test_approving_the_last_step_finishes_the_run(client: TestClient, container: Parts) -> None:
    definition = {"name": "last", "steps": [{"id": "sign", "type": "approval", "config": {}}]}
    run_id = _submit(client, definition)
    drain(container)
    response = client.post(f"{BASE}/runs/{run_id}/steps/sign/approve")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert _types(client, run_id)[-3:] == ["approval_granted", "step_completed", "run_completed"]


# ---- paths ---------------------------------------------------------------------------------


def test_an_unknown_action_is_404_and_a_known_one_with_another_method_405(client: TestClient) -> None:
    run_id = _submit(client, _delay_then_log())
    for method, path in [
        ("POST", f"/runs/{run_id}/bogus"),
        ("GET", f"/runs/{run_id}/bogus"),
        ("POST", f"/runs/{run_id}/steps/wait/maybe"),
    ]:
        response = client.request(method, f"{BASE}{path}")
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    wrong_method = client.get(f"{BASE}/runs/{run_id}/cancel")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_a_trailing_slash_is_served_as_the_path_without_it(client: TestClient) -> None:
    run_id = _submit(client, _delay_then_log())
    listed = client.get(f"{BASE}/runs/", follow_redirects=False)
    assert listed.status_code == 200
    assert [run["run_id"] for run in listed.json()["runs"]] == [run_id]
    read = client.get(f"{BASE}/runs/{run_id}/", follow_redirects=False)
    assert (read.status_code, read.json()["run_id"]) == (200, run_id)
    cancelled = client.post(f"{BASE}/runs/{run_id}/cancel/", follow_redirects=False)
    assert cancelled.status_code == 200, cancelled.text
    assert client.get(f"{BASE}/nope/", follow_redirects=False).status_code == 404
    assert client.get(f"{BASE}/runs//", follow_redirects=False).status_code == 404
