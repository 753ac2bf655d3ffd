"""A loop is refused when no route of any of its steps leads out of it, whatever kind of route
stays inside: next steps, a branch's two targets, on_failure, on_timeout. A loop with one way
out (a branch target, a routed failure, `_end`, an approval a person may reject) is accepted."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

P = "/api/v1/workflows"


def _log(step_id: str, **routes: str) -> dict[str, Any]:
    return {"id": step_id, "type": "log", "config": {"message": step_id}, **routes}


def _branch(step_id: str, true_next: str, false_next: str, **routes: str) -> dict[str, Any]:
    config = {"condition": "inputs.again", "true_next": true_next, "false_next": false_next}
    return {"id": step_id, "type": "branch", "config": config, **routes}


def _approval(step_id: str, **routes: str) -> dict[str, Any]:
    return {"id": step_id, "type": "approval", "config": {"assignees": ["alice"]}, **routes}


def _definition(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "loops", "steps": list(steps)}


def _refused(client: TestClient, definition: dict[str, Any], field: str, loop: str) -> None:
    response = client.post(P, json=definition)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == field
    assert f"steps {loop} loop forever" in detail["message"]
    assert client.get(P).json()["workflows"] == []


def test_a_branch_whose_two_targets_stay_in_the_loop_is_refused(client: TestClient) -> None:
    definition = _definition(_log("work"), _branch("again", "work", "work"))
    _refused(client, definition, "steps[0]", "work -> again -> work")


def test_a_failure_routed_back_into_the_loop_is_refused(client: TestClient) -> None:
    definition = _definition(
        _log("ping", on_success="pong"), _log("pong", on_success="ping", on_failure="ping")
    )
    _refused(client, definition, "steps[0]", "ping -> pong -> ping")


def test_a_timeout_routed_back_into_the_loop_is_refused(client: TestClient) -> None:
    definition = _definition(_log("ping", on_timeout="pong"), _log("pong", on_success="ping"))
    _refused(client, definition, "steps[0]", "ping -> pong -> ping")


def test_a_loop_after_the_first_step_is_named_by_one_of_its_steps(client: TestClient) -> None:
    definition = _definition(
        _log("start"), _log("spin"), _branch("check", "spin", "twice"), _log("twice", on_success="spin")
    )
    _refused(client, definition, "steps[1]", "spin -> check -> spin")


def test_an_approval_whose_rejection_is_routed_back_into_the_loop_is_refused(client: TestClient) -> None:
    definition = _definition(_approval("review", on_success="review", on_failure="review"))
    _refused(client, definition, "steps[0]", "review -> review")


def test_an_approval_a_person_may_reject_is_a_way_out(client: TestClient) -> None:
    definition = _definition(_log("draft"), _approval("review", on_success="draft"))
    assert client.post(P, json=definition).status_code == 201


def test_a_retry_loop_with_a_branch_target_outside_it_is_accepted(client: TestClient) -> None:
    definition = _definition(_log("call", on_failure="again"), _branch("again", "call", "_end"))
    assert client.post(P, json=definition).status_code == 201


def test_a_loop_whose_failure_goes_to_a_step_outside_it_is_accepted(client: TestClient) -> None:
    definition = _definition(
        _log("ping", on_success="pong"),
        _log("pong", on_success="ping", on_failure="cleanup"),
        _log("cleanup"),
    )
    assert client.post(P, json=definition).status_code == 201
