"""The chaos run's checks, held to recorded runs, events, answers and deliveries (no stack here)."""

from __future__ import annotations

from typing import Any

from chaos.invariants import (
    Delivery,
    Recorded,
    check,
    child_violations,
    decision_violations,
    delivery_violations,
    double_commit_violations,
    gap_violations,
    key_violations,
    repeated_deliveries,
    terminal_violations,
)


def _events(*types: str | tuple[str, str | None, dict[str, Any]]) -> list[dict[str, Any]]:
    events = []
    for seq, item in enumerate(types, start=1):
        event_type, step_id, payload = (item, None, {}) if isinstance(item, str) else item
        events.append({"event_seq": seq, "event_type": event_type, "step_id": step_id, "payload": payload})
    return events


def _run(status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"run_id": "r1", "status": status, "error": error}


def _completed(step: str, attempt: int = 1) -> tuple[str, str, dict[str, Any]]:
    return ("step_completed", step, {"attempt": attempt})


RETRY = ("run_resumed", None, {"reason": "retry"})


def test_a_succeeded_run_whose_last_event_ends_it_holds() -> None:
    assert terminal_violations(_run("succeeded"), _events("run_started", "run_completed")) == []


def test_a_run_still_running_is_reported() -> None:
    found = terminal_violations(_run("running"), _events("run_started"))
    assert [(v.rule, v.detail) for v in found] == [("terminal", "still running")]


def test_a_failed_run_without_an_error_code_is_reported() -> None:
    found = terminal_violations(_run("failed", {"message": "x"}), _events("run_started", "run_failed"))
    assert [v.detail for v in found] == ["failed without an error code"]


def test_a_terminal_run_whose_last_event_is_not_its_end_is_reported() -> None:
    found = terminal_violations(_run("succeeded"), _events("run_started", "step_started"))
    assert [v.detail for v in found] == ["succeeded, but its last event is step_started"]


def test_sequence_one_to_n_has_no_gap() -> None:
    assert gap_violations("r1", _events("run_started", "step_started", "run_completed")) == []


def test_a_missing_sequence_number_is_a_gap() -> None:
    events = _events("run_started", "step_started", "run_completed")
    del events[1]
    assert "missing [2]" in gap_violations("r1", events)[0].detail


def test_a_repeated_sequence_number_is_a_gap() -> None:
    events = _events("run_started", "run_completed")
    events.insert(1, dict(events[0]))
    assert "repeated [1]" in gap_violations("r1", events)[0].detail


def test_two_completions_of_one_step_attempt_are_a_double_commit() -> None:
    found = double_commit_violations("r1", _events("run_started", _completed("a"), _completed("a")))
    assert [v.rule for v in found] == ["step committed twice"]


def test_completions_of_different_attempts_are_not_a_double_commit() -> None:
    assert double_commit_violations("r1", _events(_completed("a", 1), _completed("a", 2))) == []


def test_a_retry_of_the_failed_run_starts_a_new_round_of_attempts() -> None:
    assert (
        double_commit_violations("r1", _events(_completed("a"), "run_failed", RETRY, _completed("a"))) == []
    )


def test_approve_and_reject_of_one_waiting_step_are_two_decisions() -> None:
    events = _events(
        ("waiting_approval", "review", {}),
        ("approval_granted", "review", {}),
        ("approval_rejected", "review", {}),
    )
    assert [v.rule for v in decision_violations("r1", events)] == ["decided twice"]


def test_one_decision_per_round_holds_across_a_retry() -> None:
    events = _events(
        ("approval_rejected", "review", {}),
        "run_failed",
        RETRY,
        ("approval_granted", "review", {}),
    )
    assert decision_violations("r1", events) == []


def test_every_202_for_a_key_naming_one_run_holds() -> None:
    recorded = Recorded(runs={"r1": _run("succeeded")}, answers={"k1": ["r1", "r1"]})
    assert key_violations(recorded) == []


def test_two_runs_named_for_one_key_are_reported() -> None:
    recorded = Recorded(runs={"r1": _run("succeeded"), "r2": _run("succeeded")}, answers={"k1": ["r1", "r2"]})
    assert [(v.rule, v.subject) for v in key_violations(recorded)] == [("one run per key", "k1")]


def test_a_run_no_202_named_is_reported_when_no_key_went_unanswered() -> None:
    recorded = Recorded(runs={"r1": _run("succeeded"), "r2": _run("succeeded")}, answers={"k1": ["r1"]})
    assert [v.subject for v in key_violations(recorded)] == ["*"]


def test_a_key_that_went_unanswered_may_account_for_one_unnamed_run() -> None:
    recorded = Recorded(
        runs={"r1": _run("succeeded"), "r2": _run("succeeded")},
        answers={"k1": ["r1"], "k2": []},
        unanswered={"k2"},
    )
    assert key_violations(recorded) == []


def test_repeated_deliveries_with_the_same_webhook_id_hold_and_are_counted() -> None:
    deliveries = [Delivery("r1", "notify", "msg_a")] * 3
    assert delivery_violations(deliveries) == []
    assert repeated_deliveries(deliveries) == 2


def test_one_step_sending_two_webhook_ids_is_reported() -> None:
    deliveries = [Delivery("r1", "notify", "msg_a"), Delivery("r1", "notify", "msg_b")]
    assert [v.rule for v in delivery_violations(deliveries)] == ["webhook-id"]


def test_check_finds_nothing_in_a_clean_recording() -> None:
    recorded = Recorded(
        runs={"r1": _run("succeeded")},
        events={"r1": _events("run_started", _completed("a"), "run_completed")},
        answers={"k1": ["r1"]},
        deliveries=[Delivery("r1", "notify", "msg_a")],
    )
    assert check(recorded) == []


def test_a_child_started_and_counted_once_holds_and_twice_is_reported() -> None:
    def started(*ids: str) -> dict[str, Any]:
        return {"event_type": "children_started", "payload": {"children": [{"run_id": i} for i in ids]}}

    def ended(child: str) -> dict[str, Any]:
        return {"event_type": "child_ended", "payload": {"run_id": child, "status": "succeeded"}}

    assert child_violations("p", [started("a", "b"), ended("b"), ended("a")]) == []
    twice = child_violations("p", [started("a"), started("a"), ended("a"), ended("a"), ended("z")])
    assert [v.rule for v in twice] == ["child started twice", "child counted twice", "child ended unstarted"]


def test_a_child_run_needs_no_key_of_its_own() -> None:
    runs = {"p": _run("succeeded"), "c": {**_run("succeeded"), "parent_run_id": "p"}}
    assert key_violations(Recorded(runs=runs, answers={"k": ["p"]}, unanswered=set(), deliveries=[])) == []
    runs["x"] = _run("succeeded")
    assert (
        len(key_violations(Recorded(runs=runs, answers={"k": ["p"]}, unanswered=set(), deliveries=[]))) == 1
    )
