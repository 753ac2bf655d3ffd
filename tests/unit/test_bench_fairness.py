"""The fairness benchmark's receivers, comparisons and table rows (no stack is started here)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from bench import fairness, report


def _post(receiver: fairness.Receiver, path: str, webhook_id: str) -> httpx.Response:
    return httpx.post(receiver.url(path), content=b"{}", headers={"webhook-id": webhook_id}, timeout=30)


def test_fail_then_ok_answers_503_then_200_to_the_same_webhook_id() -> None:
    with fairness.Receiver() as receiver:
        first = _post(receiver, "/fail-then-ok/b", "msg_1")
        second = _post(receiver, "/fail-then-ok/b", "msg_1")
        other = _post(receiver, "/fail-then-ok/b", "msg_2")
    assert [first.status_code, second.status_code, other.status_code] == [503, 200, 503]
    assert [a.answer for a in receiver.answered("/fail-then-ok/", "200")] == ["200"]


def _in_background(
    receiver: fairness.Receiver, path: str, webhook_id: str
) -> tuple[threading.Thread, list[Any]]:
    """A POST on its own thread; its answer, or the transport error it ended with."""
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(_post(receiver, path, webhook_id))
        except httpx.TransportError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    return caller, outcome


def _held(receiver: fairness.Receiver, count: int) -> bool:
    # The bound only keeps a broken receiver from hanging the suite; nothing is timed.
    deadline = time.monotonic() + 30
    return bool(fairness._wait(lambda: receiver.hanging == count, deadline=deadline, interval=0.01))


def test_hang_never_answers_until_the_receiver_stops() -> None:
    with fairness.Receiver() as receiver:
        caller, outcome = _in_background(receiver, "/hang/1", "msg_1")
        assert _held(receiver, 1)
        assert outcome == []
    caller.join(timeout=30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)
    assert receiver.hanging == 0


def test_fail_then_hang_holds_the_second_request_of_a_webhook_id() -> None:
    with fairness.Receiver() as receiver:
        assert _post(receiver, "/fail-then-hang/a", "msg_1").status_code == 503
        caller, _ = _in_background(receiver, "/fail-then-hang/a", "msg_1")
        assert _held(receiver, 1)
    caller.join(timeout=30)
    assert [a.answer for a in receiver.arrivals] == ["503", "hang"]


def _scenarios(**dlq: Any) -> dict[str, dict[str, Any]]:
    base = {"b_run_p95_s": 0.1, "b_list_p95_s": 0.05, "b_dlq_delivery_s": 3.0}
    return {"baseline": dict(base), "dlq": {**base, **dlq}}


def test_a_p95_within_two_seconds_of_the_baseline_meets_the_target() -> None:
    scenarios = _scenarios(b_run_p95_s=2.0, b_dlq_delivery_s=5.5)
    fairness._compare(scenarios)
    assert scenarios["dlq"]["b_run_p95_s_met"] is True
    assert scenarios["dlq"]["b_dlq_delivery_s_met"] is False
    assert scenarios["dlq"]["b_dlq_delivery_s_delta"] == pytest.approx(2.5)


def test_a_lower_bound_never_meets_the_target() -> None:
    scenarios = _scenarios(b_run_p95_s=0.1, b_run_p95_s_lower_bound=True)
    fairness._compare(scenarios)
    assert scenarios["dlq"]["b_run_p95_s_met"] is False


def test_the_table_marks_lower_bounds_and_keeps_the_scenarios_order() -> None:
    scenarios: dict[str, dict[str, Any]] = {
        "flood": {"b_run_p50_s": 0.2, "b_run_p95_s": 9.0, "a_submitted": 100, "a_ended_at_b_end": 40},
        "hanging_webhooks": {
            "b_run_p50_s": 50.0,
            "b_run_p95_s": 60.0,
            "b_run_p95_s_lower_bound": True,
            "error": "0 of 5 runs of B ended within 240 s",
        },
        "baseline": {"b_run_p50_s": 0.05, "b_run_p95_s": 0.1},
        "dlq": {"error": "RuntimeError: the local stack exited during start-up", "seconds": 1.0},
    }
    fairness._compare(scenarios)
    results = {"fairness": {"scenarios": scenarios, "target_delta_seconds": 2.0, "hanging_runs": 8}}
    rows = {row[0]: row for row in report.rows(results)}
    names = [name.split(":")[1].strip() for name in rows]
    assert list(dict.fromkeys(names)) == ["baseline", "hanging_webhooks", "flood", "dlq"]
    hanging = rows["fairness: hanging_webhooks: B one-step run, submit to end, p50 / p95 s"]
    assert hanging[1] == ">= 50.00 / >= 60.00"
    assert hanging[5] == "MISSED"
    assert rows["fairness: flood: B one-step run, submit to end, p50 / p95 s"][3] == "+8.90 s"
    assert "fairness: dlq: FAILED" in rows
