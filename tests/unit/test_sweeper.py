"""The sweeper finds the runs whose next kick was lost and kicks them again, or fails them
`stalled`; it leaves alone the runs that are only waiting (a delay, an approval, a tenant slot).
On in-memory fakes with a fake clock (docs/engine.md, "How runs end")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.conftest import FakeClock, drain, make_fake
from tests.faults import Faulty, one_step_left
from workflows.clock import parse_iso
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import Run, RunStatus
from workflows.roots import sweeper as sweeper_root
from workflows.roots.parts import Parts

T = "default"
CALLER = Principal(T, "admin", ALL_PERMISSIONS)
GRACE = 900


class Killed(BaseException):
    """The process dying: nothing after it runs."""


def _parts(clock: FakeClock, **settings: Any) -> Parts:
    """Fake parts whose queue can lose kicks (`_queue`)."""
    parts = make_fake(clock, sweep_grace_sec=GRACE, sweep_max_rekicks=2, **settings)
    return parts.give(queue=Faulty(parts.queue))


def _queue(parts: Parts) -> Faulty:
    queue = parts.queue
    assert isinstance(queue, Faulty)
    return queue


def _submit(parts: Parts, steps: list[dict[str, Any]]) -> Run:
    definition = WorkflowDefinition.model_validate({"name": "swept", "steps": steps})
    return parts.run_service.submit(CALLER, definition, {})


LOGS = [{"id": f"s{i}", "type": "log", "config": {"message": f"m{i}"}} for i in range(1, 4)]


def _assert_gap_free(parts: Parts, run_id: str) -> list[str]:
    events = parts.runs.list_events(T, run_id, since=0, limit=1000).events
    assert [e.event_seq for e in events] == list(range(1, len(events) + 1))
    return [e.event_type for e in events]


def test_a_kick_lost_after_a_commit_is_found_and_the_run_finishes(clock: FakeClock) -> None:
    parts = _parts(clock, tenant_concurrency=1)
    run = _submit(parts, LOGS)
    [first] = parts.queue.receive()

    # The commit landed; the process died before the next kick was sent
    _queue(parts).fail("send", Killed())
    with pytest.raises(Killed):
        parts.engine.process(first, one_step_left)
    assert parts.runs.get(T, run.run_id).steps_executed == 1

    # SQS redelivers the first message 10 s later: the run is ahead of it, and it has not sat
    # still long enough to be believed lost, so nothing is sent.
    clock.advance(10)
    assert parts.engine.process(first).action == "stale"
    assert parts.queue.depth() == 0

    # Within the grace period the sweeper leaves it alone; past it, it kicks the run again.
    clock.advance(GRACE - 20)
    assert parts.sweeper.sweep().rekicked == 0
    clock.advance(20)
    report = parts.sweeper.sweep()
    assert (report.candidates, report.rekicked) == (1, 1)
    drain(parts)
    done = parts.runs.get(T, run.run_id)
    assert done.status == RunStatus.SUCCEEDED
    assert _assert_gap_free(parts, run.run_id).count("step_completed") == 3
    # Its tenant slot was released: the tenant's next run runs.
    other = _submit(parts, LOGS[:1])
    drain(parts)
    assert parts.runs.get(T, other.run_id).status == RunStatus.SUCCEEDED


def test_a_lost_delay_message_is_found_after_the_delay_and_its_grace(clock: FakeClock) -> None:
    parts = _parts(clock)
    steps = [{"id": "wait", "type": "delay", "config": {"seconds": 600}}, LOGS[0]]
    run = _submit(parts, steps)
    drain(parts)
    assert parts.runs.get(T, run.run_id).wait_until is not None
    parts.queue.messages.clear()  # the delayed kick is lost

    clock.advance(600 + GRACE - 30)
    early = parts.sweeper.sweep()
    assert early.rekicked == 0  # still owed its delay and grace
    assert early.candidates == 1
    clock.advance(60)
    assert parts.sweeper.sweep().rekicked == 1
    drain(parts)
    assert parts.runs.get(T, run.run_id).status == RunStatus.SUCCEEDED
    _assert_gap_free(parts, run.run_id)


@pytest.mark.parametrize("seconds", [7200, 86_400, 7 * 86_400])
def test_a_long_wait_costs_one_message_sent_by_the_sweeper_near_its_deadline(
    clock: FakeClock, seconds: int
) -> None:
    parts = _parts(clock)
    steps = [{"id": "wait", "type": "delay", "config": {"seconds": seconds}}, LOGS[0]]
    run = _submit(parts, steps)
    drain(parts)
    # Filed under its deadline: no chain of hops, nothing queued.
    assert parts.runs.get(T, run.run_id).wait_until is not None
    assert parts.queue.depth() == 0
    sends_before = _queue(parts).calls["send"]
    woken_at = None
    while parts.runs.get(T, run.run_id).status != RunStatus.SUCCEEDED:
        clock.advance(300)  # the sweeper's period
        report = parts.sweeper.sweep()
        assert report.rekicked == 0  # nothing was lost
        if report.woken:
            woken_at = clock()
        drain(parts)
    assert _queue(parts).calls["send"] - sends_before == 1  # the wake's kick, and nothing else
    assert woken_at is not None
    deadline = parse_iso(parts.runs.get(T, run.run_id).created_at) + timedelta(seconds=seconds)
    assert deadline - timedelta(seconds=900) <= woken_at <= deadline
    ended = parts.runs.get(T, run.run_id)
    assert ended.ended_at is not None
    assert parse_iso(ended.ended_at) - deadline < timedelta(seconds=301)  # at the deadline's sweep
    _assert_gap_free(parts, run.run_id)


def _sweep_moment(parts: Parts, after: datetime, deadline: datetime) -> datetime:
    """The first moment from `after`, on the sweeper's schedule, whose window holds `deadline`."""
    at = after
    while True:
        start, end = parts.sweeper.window(at)
        if start <= deadline < end:
            return at
        at += timedelta(seconds=300)


def _advance_to(parts: Parts, clock: FakeClock, moment: Any) -> None:
    """Move the clock to `moment` (no earlier than now), delivering what falls due on the way."""
    while clock() < moment:
        clock.advance(min(60.0, (moment - clock()).total_seconds()))
        drain(parts)


def test_long_waits_are_each_kicked_once_by_the_sweep_of_their_window_and_the_sweeper_writes_nothing(
    clock: FakeClock,
) -> None:
    parts = _parts(clock)
    # Deadlines spread over an hour and a half, on and off the 5-minute grid.
    offsets = [7200 + 137 * i for i in range(40)]
    runs = []
    for seconds in offsets:
        steps = [{"id": "wait", "type": "delay", "config": {"seconds": seconds}}, LOGS[0]]
        runs.append(_submit(parts, steps))
        drain(parts)
    suspended = {r.run_id: parts.runs.get(T, r.run_id) for r in runs}
    assert all(s.wait_until is not None and s.long_wait_deadline() for s in suspended.values())
    sends_before = _queue(parts).calls["send"]
    woken = 0
    start = clock()
    while clock() < start + timedelta(seconds=max(offsets) + 900):
        _advance_to(parts, clock, clock() + timedelta(seconds=300))  # the sweeper's schedule
        report = parts.sweeper.sweep()
        assert report.rekicked == 0
        assert report.stalled == 0
        woken += report.woken
        for run_id, before in suspended.items():
            now_stored = parts.runs.get(T, run_id)
            if now_stored.status == RunStatus.RUNNING and now_stored.wait_until == before.wait_until:
                assert now_stored.version == before.version  # a wake is no write
        drain(parts)
    assert woken == len(runs)
    assert _queue(parts).calls["send"] - sends_before == len(runs)  # one kick each, nothing else
    for run in runs:
        ended = parts.runs.get(T, run.run_id)
        assert ended.status == RunStatus.SUCCEEDED
        deadline = parse_iso(suspended[run.run_id].wait_until or "")
        # Ended at its deadline (the fake queue delivers on the minute this test moves by).
        assert timedelta(0) <= parse_iso(ended.ended_at or "") - deadline < timedelta(seconds=61)
        _assert_gap_free(parts, run.run_id)


def test_consecutive_sweep_windows_tile_time_without_gap_or_overlap(clock: FakeClock) -> None:
    sweeper = _parts(clock).sweeper
    at = clock() + timedelta(seconds=17)
    previous_end = None
    for _ in range(30):
        start, end = sweeper.window(at)
        assert end - start == timedelta(seconds=300)
        assert (
            at + timedelta(seconds=300)
            <= start + timedelta(seconds=300)
            <= end
            <= at + timedelta(seconds=900)
        )
        if previous_end is not None:
            assert start == previous_end
        previous_end = end
        at += timedelta(seconds=300)


def test_a_retried_sweep_sends_its_window_again_and_the_run_still_ends_once(clock: FakeClock) -> None:
    parts = _parts(clock)
    steps = [{"id": "wait", "type": "delay", "config": {"seconds": 7200}}, LOGS[0]]
    run = _submit(parts, steps)
    drain(parts)
    deadline = parse_iso(parts.runs.get(T, run.run_id).wait_until or "")
    at = _sweep_moment(parts, clock(), deadline)
    _advance_to(parts, clock, at + timedelta(seconds=20))
    assert parts.sweeper.sweep(at).woken == 1
    clock.advance(40)  # the schedule's retry of the same invocation: the same scheduled time
    assert parts.sweeper.sweep(at).woken == 1
    _advance_to(parts, clock, deadline + timedelta(seconds=120))
    ended = parts.runs.get(T, run.run_id)
    assert ended.status == RunStatus.SUCCEEDED
    types = _assert_gap_free(parts, run.run_id)
    assert types.count("run_completed") == 1
    assert types.count("step_completed") == 2


def test_a_long_wait_whose_sweep_never_ran_is_re_kicked_a_grace_period_after_its_deadline(
    clock: FakeClock,
) -> None:
    parts = _parts(clock)
    steps = [{"id": "wait", "type": "delay", "config": {"seconds": 7200}}, LOGS[0]]
    run = _submit(parts, steps)
    drain(parts)
    deadline = parse_iso(parts.runs.get(T, run.run_id).wait_until or "")
    missed = 0
    while parts.runs.get(T, run.run_id).status != RunStatus.SUCCEEDED:
        clock.advance(300)
        start, end = parts.sweeper.window(clock())
        if start <= deadline < end:
            missed += 1  # the invocation that would have woken it never runs
        else:
            parts.sweeper.sweep()
        drain(parts)
        assert clock() < deadline + timedelta(seconds=GRACE + 900)
    assert missed == 1
    ended = parse_iso(parts.runs.get(T, run.run_id).ended_at or "")
    assert deadline + timedelta(seconds=GRACE) <= ended
    _assert_gap_free(parts, run.run_id)


def test_a_sweep_about_to_time_out_stops_waking_and_leaves_the_rest_to_the_re_kick(clock: FakeClock) -> None:
    parts = _parts(clock)
    steps = [{"id": "wait", "type": "delay", "config": {"seconds": 7200}}, LOGS[0]]
    runs = [_submit(parts, steps) for _ in range(3)]  # the same deadline: one window
    drain(parts)
    deadline = parse_iso(parts.runs.get(T, runs[0].run_id).wait_until or "")
    _advance_to(parts, clock, _sweep_moment(parts, clock(), deadline))
    times_left = iter([60_000, 5_000, 5_000])  # the invocation's time, asked before each wake
    report = parts.sweeper.sweep(remaining_ms=lambda: next(times_left))
    assert report.woken == 1
    _advance_to(parts, clock, deadline + timedelta(seconds=60))
    statuses = sorted(parts.runs.get(T, r.run_id).status.value for r in runs)
    assert statuses == ["running", "running", "succeeded"]  # two still wait for their kick
    while any(parts.runs.get(T, r.run_id).status != RunStatus.SUCCEEDED for r in runs):
        _advance_to(parts, clock, clock() + timedelta(seconds=300))
        parts.sweeper.sweep()
        assert clock() < deadline + timedelta(seconds=GRACE + 900)
    for run in runs:
        _assert_gap_free(parts, run.run_id)


def test_the_handler_sweeps_the_slot_of_the_schedule_s_time_not_of_its_own_clock() -> None:
    assert sweeper_root.scheduled_time({"time": "2026-11-25T12:00:00Z"}) == parse_iso("2026-11-25T12:00:00Z")
    for hostile in ({}, {"time": None}, {"time": 5}, {"time": "yesterday"}, {"time": "9" * 500}):
        assert sweeper_root.scheduled_time(hostile) is None
    assert sweeper_root.scheduled_time({"time": "2026-11-25T12:00:00"}) is None  # no zone


def test_a_run_whose_kicks_are_always_lost_fails_stalled_after_the_re_kicks(clock: FakeClock) -> None:
    parts = _parts(clock, tenant_concurrency=1)
    run = _submit(parts, LOGS)
    queue = _queue(parts).drop("send", times=None)
    queue.messages.clear()
    for expected in (1, 1, 0):
        clock.advance(GRACE + 1)
        assert parts.sweeper.sweep().rekicked == expected
    stalled = parts.runs.get(T, run.run_id)
    assert stalled.status == RunStatus.FAILED
    assert stalled.error is not None
    assert stalled.error["code"] == "stalled"
    assert _assert_gap_free(parts, run.run_id)[-1] == "run_failed"
    queue.heal()
    assert parts.slots is not None
    assert parts.slots.take(T, "another-run")  # its slot was released


def test_runs_waiting_for_something_are_not_swept(clock: FakeClock) -> None:
    parts = _parts(clock, tenant_concurrency=1, tenant_concurrency_recheck_sec=60)
    approval = [{"id": "ok", "type": "approval", "config": {"timeout_seconds": 86_400}}]
    waiting = _submit(parts, approval)
    drain(parts)
    assert parts.runs.get(T, waiting.run_id).status == RunStatus.WAITING_APPROVAL
    queued = _submit(parts, LOGS)  # waits for the tenant's only slot
    paused = _submit(parts, LOGS)
    parts.control_service.act(CALLER, paused.run_id, "pause", from_step=None)
    rekicked = 0
    for _ in range(3 * GRACE // 60):  # three grace periods, the throttled kick coming back each minute
        clock.advance(60)
        drain(parts)
        rekicked += parts.sweeper.sweep().rekicked
    assert rekicked == 0
    assert parts.runs.get(T, queued.run_id).status == RunStatus.QUEUED
    assert parts.runs.get(T, paused.run_id).status == RunStatus.PAUSED
    assert parts.runs.get(T, waiting.run_id).status == RunStatus.WAITING_APPROVAL


def test_the_function_sweeps_through_its_root(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _parts(clock)
    monkeypatch.setattr(sweeper_root, "parts", lambda: parts)
    _submit(parts, LOGS)
    parts.queue.messages.clear()
    clock.advance(GRACE + 1)

    class Context:
        function_name = "SweeperFunction"
        function_version = "$LATEST"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:SweeperFunction"
        aws_request_id = "sweep-1"

    result = sweeper_root.handle({}, Context())  # type: ignore[arg-type]
    assert result["rekicked"] == 1
    assert parts.queue.depth() == 1


def test_settings_refuse_a_grace_shorter_than_a_redelivery() -> None:
    from workflows.settings import Settings

    with pytest.raises(ValueError, match="visibility timeout"):
        Settings(dispatch_visibility_timeout_sec=720, sweep_grace_sec=600)
    assert Settings(dispatch_visibility_timeout_sec=10, sweep_grace_sec=150).sweep_grace_sec == 150
