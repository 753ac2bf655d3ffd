"""The chaos run's checks, held to recorded runs, events, answers and deliveries (no stack here)."""

from __future__ import annotations

from typing import Any

from chaos.invariants import (
    Delivery,
    Recorded,
    SignalPlan,
    check,
    child_violations,
    decision_violations,
    delivery_violations,
    double_commit_violations,
    gap_violations,
    inline_item_violations,
    key_violations,
    repeated_deliveries,
    signal_answer_violations,
    signal_plan_violations,
    signal_wait_violations,
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


def test_an_item_run_inside_the_run_recorded_once_in_order_holds() -> None:
    def said(index: int) -> dict[str, Any]:
        return {"event_type": "step_completed", "step_id": "say", "payload": {"attempt": 1, "index": index}}

    branch = {"event_type": "step_completed", "step_id": "a1", "payload": {"attempt": 1, "branch": "a"}}
    assert inline_item_violations("p", [said(0), said(1), said(2), branch]) == []
    assert double_commit_violations("p", [said(0), said(1)]) == []
    wrong = inline_item_violations("p", [said(0), said(1), said(1), said(0), branch, branch])
    assert sorted(v.rule for v in wrong) == [
        "item recorded out of order",
        "item recorded twice",
        "item recorded twice",
        "item recorded twice",
    ]


def test_a_child_run_needs_no_key_of_its_own() -> None:
    runs = {"p": _run("succeeded"), "c": {**_run("succeeded"), "parent_run_id": "p"}}
    assert key_violations(Recorded(runs=runs, answers={"k": ["p"]}, unanswered=set(), deliveries=[])) == []
    runs["x"] = _run("succeeded")
    assert (
        len(key_violations(Recorded(runs=runs, answers={"k": ["p"]}, unanswered=set(), deliveries=[]))) == 1
    )


WAITING = ("waiting_signal", "wait", {"mode": "any"})


def _received(signal_id: str, name: str = "paid") -> tuple[str, str, dict[str, Any]]:
    return ("signal_received", "wait", {"name": name, "id": signal_id})


def _took(*names: str) -> tuple[str, str, dict[str, Any]]:
    return ("step_completed", "wait", {"attempt": 1, "output": {"signals": {n: {} for n in names}}})


def test_a_wait_that_takes_its_signal_and_ends_once_holds() -> None:
    events = _events("run_started", WAITING, _received("s1"), _took("paid"), "run_completed")
    assert signal_wait_violations("r1", events) == []


def test_a_wait_that_ends_twice_is_reported() -> None:
    events = _events(WAITING, _received("s1"), _took("paid"), _took("paid"), "run_completed")
    assert [v.rule for v in signal_wait_violations("r1", events)] == ["wait ended twice"]


def test_a_wait_that_never_ends_is_reported_unless_its_run_was_cancelled() -> None:
    assert [v.rule for v in signal_wait_violations("r1", _events(WAITING, "run_completed"))] == [
        "wait never ended"
    ]
    assert signal_wait_violations("r1", _events(WAITING, "cancel_acknowledged", "run_cancelled")) == []


def test_a_wait_that_times_out_ends_once() -> None:
    timeout = ("step_timeout", "wait", {"error": {"code": "timeout"}})
    assert signal_wait_violations("r1", _events(WAITING, timeout, "run_completed")) == []


def test_a_signal_id_taken_twice_is_reported() -> None:
    events = _events(WAITING, _received("s1"), _received("s1"), _took("paid"), "run_completed")
    rules = [v.rule for v in signal_wait_violations("r1", events)]
    assert rules == ["signal counted twice", "signal counted twice"]  # the name again, the id again


def test_a_signal_taken_after_its_wait_ended_is_reported() -> None:
    events = _events(WAITING, _received("s1"), _took("paid"), _received("s2", "voided"), "run_completed")
    assert [v.rule for v in signal_wait_violations("r1", events)] == ["signal outside a wait"]


def test_a_completed_wait_whose_output_differs_from_what_it_took_is_reported() -> None:
    events = _events(WAITING, _received("s1"), _took("paid", "voided"), "run_completed")
    assert [v.rule for v in signal_wait_violations("r1", events)] == ["signal output"]


def test_a_retry_waits_anew_and_may_take_the_same_id_again() -> None:
    failed = ("step_timeout", "wait", {"error": {"code": "timeout"}})
    events = _events(
        WAITING, failed, "run_failed", RETRY, WAITING, _received("s1"), _took("paid"), "run_completed"
    )
    assert signal_wait_violations("r1", events) == []


def test_repeats_of_a_signal_id_answering_the_first_signal_hold() -> None:
    first = {"name": "paid", "sent_at": "2026-12-06T10:00:00.000Z", "duplicate": False}
    repeat = {**first, "duplicate": True}
    assert signal_answer_violations({"s1": [repeat, first, repeat]}) == []


def test_an_id_answered_as_new_twice_or_as_another_signal_is_reported() -> None:
    first = {"name": "paid", "sent_at": "2026-12-06T10:00:00.000Z", "duplicate": False}
    later = {**first, "sent_at": "2026-12-06T10:00:01.000Z", "duplicate": True}
    assert [v.rule for v in signal_answer_violations({"s1": [first, first]})] == ["signal id sent twice"]
    assert [v.rule for v in signal_answer_violations({"s1": [first, later]})] == ["signal id sent twice"]


def test_a_run_that_took_what_its_client_sent_holds_and_one_that_did_not_is_reported() -> None:
    took = _events(WAITING, _received("s1"), _took("paid"), "run_completed")
    timed_out = _events(WAITING, ("step_timeout", "wait", {}), "run_completed")
    assert signal_plan_violations("r1", SignalPlan("wait", received=1), took) == []
    assert signal_plan_violations("r1", SignalPlan("wait", received=0, timed_out=True), timed_out) == []
    lost = signal_plan_violations("r1", SignalPlan("wait", received=1), timed_out)
    assert [v.rule for v in lost] == ["signals taken", "signals taken"]


def test_check_holds_a_run_to_its_signal_plan() -> None:
    recorded = Recorded(
        runs={"r1": _run("succeeded")},
        events={"r1": _events("run_started", WAITING, ("step_timeout", "wait", {}), "run_completed")},
        answers={"k1": ["r1"]},
        signal_plans={"r1": SignalPlan("wait", received=1)},
    )
    assert {v.rule for v in check(recorded)} == {"signals taken"}
