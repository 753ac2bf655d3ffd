"""The run's transitions (domain.transitions): every (status, action) pair yields what the table
says or is refused with invalid_state, the table is the one docs/engine.md shows, and a change
that names no field of a run, or the wrong type, cannot become a commit."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.conftest import log_definition
from tests.fakes import FakeRunLog
from workflows.domain import fanout
from workflows.domain import transitions as t
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.domain.signals import Signal, SignalWait
from workflows.domain.transitions import ALREADY, TABLE, Action, Commit
from workflows.errors import InvalidState
from workflows.ports import RunLog

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ENGINE_DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"
ERROR: t.RunError = {"code": "boom", "message": "it broke"}


def _run(status: RunStatus, *, started: bool = True) -> Run:
    fields: dict[str, object] = {}
    if status == RunStatus.PAUSED:
        fields["paused_from"] = RunStatus.RUNNING if started else RunStatus.QUEUED
    if status == RunStatus.WAITING_APPROVAL:
        fields.update(
            wait_until="2026-01-01T13:00:00.000Z",
            approval={"step_id": "a", "required_approvals": 2, "approvals": []},
        )
    if status == RunStatus.FAILED:
        fields.update(error=dict(ERROR), status_reason="boom")
    if status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
        fields["ended_at"] = "2026-01-01T11:59:00.000Z"
    return Run(
        run_id="r1",
        tenant_id="t1",
        owner_id="u1",
        definition_version=1,
        definition_name="d",
        status=status,
        current_step_id="a",
        started_at="2026-01-01T11:00:00.000Z" if started else None,
        created_at="2026-01-01T11:00:00.000Z",
        updated_at="2026-01-01T11:00:00.000Z",
        **fields,  # type: ignore[arg-type]
    )


GRANTED = NewEvent(event_type=EventType.APPROVAL_GRANTED, step_id="a")
WAIT: SignalWait = {
    "step_id": "a",
    "mode": "any",
    "signals": [{"name": "paid", "match": {"order": 7}}],
    "since": "2026-01-01T11:59:00.000Z",
    "timeout_at": "2026-01-01T13:00:00.000Z",
    "received": {},
}
PAID = Signal(name="paid", signal_id="s1", data={"order": 7}, sent_at="2026-01-01T12:00:00.000Z")


PLANNED = fanout.plan("a", "map", 1, 3, max_concurrency=2)
STARTED = {**PLANNED, "started": 2}
STARTED_EVENT = NewEvent(event_type=EventType.CHILDREN_STARTED, step_id="a", payload={"children": []})
ENDED_EVENT = NewEvent(event_type=EventType.CHILD_ENDED, step_id="a", payload={"index": 0})


def _fanning(run: Run) -> Run:
    """The run, its step waiting for children (what await_children leaves)."""
    return run.model_copy(update={"fanout": dict(STARTED)})


def _waiting(run: Run) -> Run:
    """The run, its step waiting for WAIT's signals (what await_signal leaves)."""
    return run.model_copy(update={"signal_wait": dict(WAIT)})


# Each action taken the way the service takes it, over a run in any status.
TAKE: dict[Action, Callable[[Run], Commit | None]] = {
    Action.START: lambda run: t.start(run, now=NOW),
    Action.BEGIN_STEP: lambda run: t.begin_step(run, "a", "log", now=NOW),
    Action.CLAIM: lambda run: t.claim(run, lease_until="2026-01-01T12:01:30.000Z"),
    Action.COMPLETE_STEP: lambda run: t.complete_step(run, "a", {"ok": 1}, next_step="b", now=NOW),
    Action.FAIL_STEP: lambda run: t.fail_step(run, "a", ERROR, timed_out=False, route=None, now=NOW),
    Action.RETRY_LATER: lambda run: t.retry_later(run, "a", ERROR, delay_seconds=2.5, now=NOW),
    Action.SUSPEND: lambda run: t.suspend(run, until="2026-01-01T12:00:05.000Z", now=NOW),
    Action.AWAIT_APPROVAL: lambda run: t.await_approval(
        run, "a", {"required_approvals": 1}, until="2026-01-01T13:00:00.000Z", now=NOW
    ),
    Action.RECORD_APPROVAL: lambda run: t.record_approval(
        run, [{"approver": "ann", "approved_at": "x"}], GRANTED, now=NOW
    ),
    Action.AWAIT_SIGNAL: lambda run: t.await_signal(run, WAIT, until="2026-01-01T13:00:00.000Z", now=NOW),
    Action.RECEIVE_SIGNAL: lambda run: t.receive_signal(_waiting(run), PAID, next_step="b", now=NOW),
    Action.AWAIT_CHILDREN: lambda run: t.await_children(
        run, STARTED, [STARTED_EVENT], until="2026-01-02T12:00:00.000Z"
    ),
    Action.RECORD_CHILDREN: lambda run: t.record_children(
        _fanning(run), fanout.mark_ended(STARTED, 0, "succeeded", "c0", None), [ENDED_EVENT]
    ),
    Action.PAUSE: lambda run: t.pause(run, actor="op"),
    Action.RESUME: lambda run: t.resume(run, actor="op", now=NOW),
    Action.CANCEL: lambda run: t.cancel(run, actor="op", now=NOW),
    Action.RETRY_FROM: lambda run: t.retry_from(run, "a", actor="op"),
    Action.REDRIVE: lambda run: t.redrive_child(run, "a"),
    Action.GIVE_UP: lambda run: t.give_up(run, ERROR, now=NOW),
    Action.REKICK: lambda run: t.rekick(run),
    Action.TOUCH: lambda run: t.touch(run),
}

# What each action records, taken the way TAKE takes it over a run that is running (or, for
# the actions that start elsewhere, over the status named).
EVENTS: dict[tuple[Action, RunStatus], list[EventType]] = {
    (Action.START, RunStatus.QUEUED): [EventType.RUN_STARTED],
    (Action.BEGIN_STEP, RunStatus.RUNNING): [EventType.STEP_STARTED],
    (Action.CLAIM, RunStatus.RUNNING): [],
    (Action.COMPLETE_STEP, RunStatus.RUNNING): [EventType.STEP_COMPLETED],
    (Action.FAIL_STEP, RunStatus.RUNNING): [EventType.STEP_FAILED, EventType.RUN_FAILED],
    (Action.RETRY_LATER, RunStatus.RUNNING): [EventType.STEP_RETRYING],
    (Action.SUSPEND, RunStatus.RUNNING): [],
    (Action.AWAIT_APPROVAL, RunStatus.RUNNING): [EventType.WAITING_APPROVAL],
    (Action.RECORD_APPROVAL, RunStatus.WAITING_APPROVAL): [EventType.APPROVAL_GRANTED],
    (Action.AWAIT_SIGNAL, RunStatus.RUNNING): [EventType.WAITING_SIGNAL],
    (Action.RECEIVE_SIGNAL, RunStatus.RUNNING): [EventType.SIGNAL_RECEIVED, EventType.STEP_COMPLETED],
    (Action.AWAIT_CHILDREN, RunStatus.RUNNING): [EventType.CHILDREN_STARTED],
    (Action.RECORD_CHILDREN, RunStatus.RUNNING): [EventType.CHILD_ENDED],
    (Action.PAUSE, RunStatus.RUNNING): [EventType.RUN_PAUSED],
    (Action.RESUME, RunStatus.PAUSED): [EventType.RUN_RESUMED],
    (Action.CANCEL, RunStatus.RUNNING): [EventType.CANCEL_ACKNOWLEDGED, EventType.RUN_CANCELLED],
    (Action.RETRY_FROM, RunStatus.FAILED): [EventType.RUN_RESUMED],
    (Action.REDRIVE, RunStatus.CANCELLED): [EventType.RUN_RESUMED],
    (Action.GIVE_UP, RunStatus.RUNNING): [EventType.STEP_FAILED, EventType.RUN_FAILED],
    (Action.REKICK, RunStatus.RUNNING): [],
    (Action.TOUCH, RunStatus.RUNNING): [],
}


def test_every_action_is_taken_somewhere() -> None:
    assert set(TAKE) == set(Action) == set(TABLE)
    assert {action for action, _ in EVENTS} == set(Action)


@pytest.mark.parametrize(("action", "status"), list(itertools.product(Action, RunStatus)))
def test_every_status_and_action_yields_the_table_or_is_refused(action: Action, status: RunStatus) -> None:
    run = _run(status, started=action != Action.START)
    leads = TABLE[action].get(status)
    if leads is None:
        with pytest.raises(InvalidState) as refused:
            TAKE[action](run)
        assert refused.value.code == "invalid_state"
        return
    commit = TAKE[action](run)
    if leads is ALREADY:
        assert commit is None  # nothing to write: the caller answers already_applied
        return
    assert commit is not None
    assert isinstance(leads, frozenset)
    assert commit.run.status in leads
    assert commit.read.run_id == run.run_id
    assert commit.action == action
    # What only the repository writes is left as read.
    assert (commit.run.version, commit.run.last_event_seq) == (run.version, run.last_event_seq)
    expected = EVENTS.get((action, status))
    if expected is not None:
        assert [event.event_type for event in commit.events] == expected


def test_a_step_outcome_on_a_paused_run_keeps_it_paused_unless_it_ends() -> None:
    paused = _run(RunStatus.PAUSED)
    completed = t.complete_step(paused, "a", 1, next_step="b", now=NOW)
    assert completed.run.status == RunStatus.PAUSED
    assert completed.run.paused_from == RunStatus.RUNNING
    assert completed.run.current_step_id == "b"
    assert completed.kick is None  # resume sends it
    ended = t.complete_step(paused, "a", 1, next_step=None, now=NOW)
    assert ended.run.status == RunStatus.SUCCEEDED
    assert ended.run.paused_from is None


def test_kicks_follow_from_the_transition() -> None:
    running = _run(RunStatus.RUNNING)
    assert t.complete_step(running, "a", 1, next_step="b", now=NOW).kick == t.Kick()
    assert t.retry_later(running, "a", ERROR, delay_seconds=2.5, now=NOW).kick == t.Kick(2.5)
    assert t.suspend(running, until="2026-01-01T12:00:05.000Z", now=NOW).kick == t.Kick(5.0)
    assert t.claim(running, lease_until="2026-01-01T12:01:00.000Z").kick is None
    assert t.complete_step(running, "a", 1, next_step=None, now=NOW).kick is None
    assert t.Kick(2.01).seconds() == 3
    assert t.Kick(5.0).seconds() == 5


def test_moving_on_resets_the_sweepers_count_and_a_rekick_does_not() -> None:
    swept = t.rekick(t.rekick(_run(RunStatus.RUNNING)).run).run
    assert swept.sweeps == 2
    assert t.touch(swept).run.sweeps == 2
    assert t.complete_step(swept, "a", 1, next_step="b", now=NOW).run.sweeps == 0


def test_chained_commits_start_from_the_run_the_previous_one_left() -> None:
    queued = _run(RunStatus.QUEUED, started=False)
    started = t.start(queued, now=NOW)
    both = started.then(t.complete_step(started.run, "a", 1, next_step="b", now=NOW))
    assert both.read is queued
    assert both.chain == (Action.START, Action.COMPLETE_STEP)
    assert [e.event_type for e in both.events] == [EventType.RUN_STARTED, EventType.STEP_COMPLETED]
    with pytest.raises(ValueError, match="chained"):
        started.then(t.complete_step(_run(RunStatus.RUNNING), "a", 1, next_step="b", now=NOW))


def test_a_misspelt_or_mistyped_change_cannot_become_a_commit() -> None:
    run = _run(RunStatus.RUNNING)
    with pytest.raises(TypeError, match="staus"):
        t._evolve(run, staus=RunStatus.FAILED)
    with pytest.raises(ValidationError):
        t._evolve(run, status="finished")
    with pytest.raises(ValidationError):
        t._evolve(run, attempt="twice")
    with pytest.raises(TypeError, match="version"):
        t._evolve(run, version=9)  # only the repository numbers versions


def test_the_store_takes_a_commit_not_a_dict_of_changes() -> None:
    store: RunLog = FakeRunLog()
    run = _run(RunStatus.QUEUED, started=False).model_copy(update={"current_step_id": "s1"})
    store.create(run, WorkflowDefinition.model_validate(log_definition("a")))
    with pytest.raises(AttributeError):
        store.transition(run, {"staus": "failed"}, [])  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        store.commit({"status": RunStatus.FAILED})  # type: ignore[arg-type]
    stored = store.commit(t.start(run, now=NOW))
    assert (stored.status, stored.version, stored.last_event_seq) == (RunStatus.RUNNING, 2, 1)


def _doc_rows() -> list[str]:
    statuses = list(RunStatus)
    rows = ["| action | " + " | ".join(s.value for s in statuses) + " |"]
    rows.append("|---" * (len(statuses) + 1) + "|")
    for action in Action:
        cells = []
        for status in statuses:
            leads = TABLE[action].get(status)
            if leads is None:
                cells.append("")
            elif leads is ALREADY:
                cells.append("=")
            else:
                assert isinstance(leads, frozenset)
                cells.append(", ".join(s.value for s in statuses if s in leads))
        rows.append(f"| `{action.value}` | " + " | ".join(cells) + " |")
    return rows


def test_docs_show_the_table() -> None:
    text = ENGINE_DOC.read_text()
    missing = [row for row in _doc_rows() if row not in text]
    assert not missing, "docs/engine.md's transition table differs; expected rows:\n" + "\n".join(_doc_rows())


def test_a_signal_the_wait_does_not_take_changes_nothing() -> None:
    waiting = _waiting(_run(RunStatus.RUNNING))
    other_order = Signal(name="paid", signal_id="s2", data={"order": 8}, sent_at=PAID.sent_at)
    too_early = Signal(name="paid", signal_id="s3", data={"order": 7}, sent_at="2026-01-01T11:00:00.000Z")
    to_another_run = Signal(name="paid", signal_id="s4", data={"order": 7}, sent_at=PAID.sent_at, run_id="r2")
    for signal in (other_order, too_early, to_another_run):
        assert t.receive_signal(waiting, signal, next_step="b", now=NOW) is None
    assert t.receive_signal(_run(RunStatus.RUNNING), PAID, next_step="b", now=NOW) is None  # not waiting
    done = t.receive_signal(waiting, PAID, next_step="b", now=NOW)
    assert done is not None
    assert done.run.signal_wait is None
    assert done.run.current_step_id == "b"
