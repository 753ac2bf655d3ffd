"""Every change of a run's state, typed: the run aggregate's transitions and their table.

A transition is a pure function of the run as read and of what happened (a step's result, a
person's action, the clock). It checks the table below, then returns one `Commit`: the run as
it will be stored, the events that describe the change, and the kick to send once it is stored
(None: nothing to send). The repository writes a commit with one conditional write
(`RunLog.commit(read, commit)`) and assigns what only it may: the version, the events'
sequence numbers and `updated_at`. Nothing else changes a run.

No dict of changes leaves this module: `_evolve` checks every name against the run's fields and
validates the result as a whole, so a misspelt or mistyped change raises here, before anything
is written (`TypeError`, or pydantic's `ValidationError`).

The table is written once (`TABLE`); docs/engine.md shows it, and a test holds the two equal.
For each action it lists the statuses the action may start from and, for each, the statuses it
may lead to, or `ALREADY`: the run is where the action leads, nothing is written and the caller
answers `already_applied`. An action from a status it does not list raises InvalidState (409).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Required, TypedDict, cast

from workflows.clock import iso
from workflows.domain import signals
from workflows.domain.fanout import Fanout
from workflows.domain.outputs import remember
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.domain.signals import Received, Signal, SignalWait
from workflows.errors import InvalidState

Q, R, P, W = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.WAITING_APPROVAL
S, F, C = RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED
END = "_end"


class Action(StrEnum):
    START = "start"
    BEGIN_STEP = "begin_step"
    CLAIM = "claim"
    COMPLETE_STEP = "complete_step"
    FAIL_STEP = "fail_step"
    RETRY_LATER = "retry_later"
    SUSPEND = "suspend"
    AWAIT_APPROVAL = "await_approval"
    RECORD_APPROVAL = "record_approval"
    AWAIT_SIGNAL = "await_signal"
    RECEIVE_SIGNAL = "receive_signal"
    AWAIT_CHILDREN = "await_children"
    RECORD_CHILDREN = "record_children"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY_FROM = "retry_from"
    REDRIVE = "redrive"
    GIVE_UP = "give_up"
    REKICK = "rekick"
    TOUCH = "touch"


class _Already:
    def __repr__(self) -> str:
        return "ALREADY"


# The run is already where the action leads: nothing is written.
ALREADY: Final = _Already()
Leads = frozenset[RunStatus] | _Already
_ACTIVE = (Q, R, W)

# action -> {status the run is in: statuses the action may lead to, or ALREADY}
TABLE: Final[Mapping[Action, Mapping[RunStatus, Leads]]] = {
    # A queued run's first kick. A paused run: it was paused while its first step executed.
    Action.START: {Q: frozenset({R}), P: frozenset({P})},
    # A step begins (its `step_started` event). A paused run: the step began before the pause.
    Action.BEGIN_STEP: {R: frozenset({R}), P: frozenset({P})},
    # An at-most-once step's lease, committed before it calls out. Not from paused: a run paused
    # before its call out does not make it.
    Action.CLAIM: {R: frozenset({R})},
    # A step's result. A step that was executing when the run was paused still commits, and the
    # run stays paused (unless that was its last step). From waiting: an approval decided.
    Action.COMPLETE_STEP: {R: frozenset({R, S}), P: frozenset({P, S}), W: frozenset({R, S})},
    # A step's failure, not retried: the run fails, or `on_failure`/`on_timeout` routes it on
    # (to `_end`: the run succeeds).
    Action.FAIL_STEP: {R: frozenset({R, S, F}), P: frozenset({P, S, F}), W: frozenset({R, S, F})},
    Action.RETRY_LATER: {R: frozenset({R}), P: frozenset({P})},
    # A step waits for its deadline (a delay).
    Action.SUSPEND: {R: frozenset({R}), P: frozenset({P})},
    Action.AWAIT_APPROVAL: {R: frozenset({W}), P: frozenset({P})},
    # An approval short of the step's quorum.
    Action.RECORD_APPROVAL: {W: frozenset({W})},
    # The step waits for signals (the run keeps running, its step suspended until its timeout).
    Action.AWAIT_SIGNAL: {R: frozenset({R}), P: frozenset({P})},
    # A signal the step waits for: recorded, and the step completes once the wait is satisfied.
    # A paused run records it too (and its step completes; the run rests until resumed).
    Action.RECEIVE_SIGNAL: {R: frozenset({R, S}), P: frozenset({P, S})},
    # The step runs child runs (branches, items, a saved workflow): their plan, and the first
    # ones, created just before. The run keeps running, its step waiting for them.
    Action.AWAIT_CHILDREN: {R: frozenset({R}), P: frozenset({P})},
    # Children ended (each recorded once) and the next ones started; once the join decides, the
    # step completes or fails in the same commit (complete_step or fail_step follows). A paused
    # run records them too, and starts no more.
    Action.RECORD_CHILDREN: {R: frozenset({R}), P: frozenset({P})},
    Action.PAUSE: {Q: frozenset({P}), R: frozenset({P}), W: frozenset({P}), P: ALREADY},
    Action.RESUME: {P: frozenset({Q, R, W}), Q: ALREADY, R: ALREADY, W: ALREADY},
    Action.CANCEL: {Q: frozenset({C}), R: frozenset({C}), P: frozenset({C}), W: frozenset({C}), C: ALREADY},
    # The one way out of `failed`.
    Action.RETRY_FROM: {F: frozenset({R})},
    # A child run (a branch, an item) that did not succeed, run again by its parent's retry:
    # failed, or cancelled when its step failed (queued again if it had not started).
    Action.REDRIVE: {F: frozenset({Q, R}), C: frozenset({Q, R})},
    # The service fails a run that cannot advance; a run that already ended is left as it is.
    Action.GIVE_UP: {
        Q: frozenset({F}),
        R: frozenset({F}),
        P: frozenset({F}),
        W: frozenset({F}),
        S: ALREADY,
        F: ALREADY,
        C: ALREADY,
    },
    # The sweeper's re-kick of a run it found idle past its grace.
    Action.REKICK: {Q: frozenset({Q}), R: frozenset({R}), W: frozenset({W})},
    # The sweeper schedules the end of a long wait (a delay's, an approval's or a signal wait's
    # timeout): its kick, delayed to the deadline, instead of a chain of hops.
    # A write that changes nothing but the version: waiting its turn is activity.
    Action.TOUCH: {Q: frozenset({Q}), R: frozenset({R})},
}

# Fields only the repository writes (RunLog.commit).
_STORE_FIELDS = frozenset({"version", "last_event_seq", "updated_at"})
# A commit that moves any of these moves the run on: the sweeper's count of re-kicks starts again
# (`stalled` means no progress since the last re-kick, not a run that lost a kick now and then).
PROGRESS_FIELDS = ("status", "current_step_id", "steps_executed", "attempt")


class RunError(TypedDict, total=False):
    """A run's (or a step's) `error` as stored and shown."""

    code: Required[str]
    message: Required[str]
    step_id: str
    correlation_id: str | None


@dataclass(frozen=True)
class Kick:
    """The message to send once a commit is stored: now, or after `delay_seconds`."""

    delay_seconds: float = 0.0
    # Epoch seconds: a kick deferred to its tenant's fair share keeps its reserved moment.
    not_before: float | None = None

    def seconds(self) -> int:
        """Whole seconds for the queue, rounded up: a kick that came back a moment before its
        deadline would only be sent again."""
        return max(0, math.ceil(self.delay_seconds - 1e-9))


@dataclass(frozen=True)
class Commit:
    """One transition's result: `run` as it will be stored, `events`, and `kick`.

    `read` is the run the transition started from: the repository writes `run` only over that
    version. Commits chain with `then` (a queued run started and its first step run, in one write).
    """

    action: Action
    read: Run
    run: Run
    events: tuple[NewEvent, ...] = ()
    kick: Kick | None = None
    # Every action of a chained commit, first to last.
    actions: tuple[Action, ...] = field(default=())

    def then(self, following: Commit) -> Commit:
        """This commit followed by one built from its result, as one write."""
        if following.read is not self.run:
            raise ValueError("a chained commit must start from the run the previous one left")
        return Commit(
            following.action,
            self.read,
            following.run,
            self.events + following.events,
            following.kick,
            self.chain + following.chain,
        )

    @property
    def chain(self) -> tuple[Action, ...]:
        return self.actions or (self.action,)


def leads(action: Action, status: RunStatus) -> Leads:
    """Where `action` may lead a run in `status`; InvalidState if it may not be taken."""
    found = TABLE[action].get(status)
    if found is None:
        raise InvalidState(
            f"cannot {action.value.replace('_', ' ')} a {status.value} run",
            details=[{"field": "status", "message": status.value}],
        )
    return found


def _check(action: Action, run: Run) -> bool:
    """True when the action changes the run; False when it is ALREADY done."""
    return leads(action, run.status) is not ALREADY


def _evolve(run: Run, **changes: Any) -> Run:
    """The run with `changes`, each a field of the run, validated as a whole."""
    unknown = set(changes) - set(Run.model_fields)
    if unknown:
        raise TypeError(f"not fields of a run: {', '.join(sorted(unknown))}")
    owned = set(changes) & _STORE_FIELDS
    if owned:
        raise TypeError(f"only the repository writes {', '.join(sorted(owned))}")
    moved = any(name in changes and changes[name] != getattr(run, name) for name in PROGRESS_FIELDS)
    if moved and run.sweeps and "sweeps" not in changes:
        changes["sweeps"] = 0
    return Run.model_validate({**run.__dict__, **changes})


def _commit(
    action: Action, read: Run, run: Run, events: Sequence[NewEvent] = (), kick: Kick | None = None
) -> Commit:
    target = leads(action, read.status)
    if isinstance(target, _Already) or run.status not in target:
        raise AssertionError(f"{action.value} led a {read.status.value} run to {run.status.value}")
    return Commit(action, read, run, tuple(events), kick)


def _seconds_until(moment: str | None, now: datetime) -> float:
    if not moment:
        return 0.0
    return max(0.0, (datetime.fromisoformat(moment.replace("Z", "+00:00")) - now).total_seconds())


def _land(read: Run, target: RunStatus, **changes: Any) -> tuple[Run, bool]:
    """A step's outcome on a run that may have been paused while it executed: it rests (and
    returns to `target` on resume) unless the outcome ends it. Whether the run goes on now."""
    if read.status == P and target not in (S, F, C):
        return _evolve(read, paused_from=target, **changes), False
    return _evolve(read, status=target, **changes), target in (R, W)


_STEP_DONE: Mapping[str, Any] = {
    "wait_until": None,
    "next_wake_at": None,
    "lease_expires_at": None,
    "signal_wait": None,
    "fanout": None,
}


# ---- the engine's transitions --------------------------------------------------------------


def start(run: Run, *, now: datetime) -> Commit:
    """A queued run starts."""
    _check(Action.START, run)
    if run.started_at is not None:
        raise InvalidState(f"run {run.run_id} started already")
    started, _ = _land(run, R, started_at=iso(now))
    event = NewEvent(event_type=EventType.RUN_STARTED, payload={"inputs": run.inputs})
    return _commit(Action.START, run, started, [event])


def begin_step(run: Run, step_id: str, step_type: str, *, now: datetime) -> Commit:
    """A step begins: its `step_started` event (none when a suspended step wakes)."""
    _check(Action.BEGIN_STEP, run)
    events = []
    if run.wait_until is None:
        payload = {"step_type": step_type, "attempt": run.attempt, "started_at": iso(now)}
        events.append(NewEvent(event_type=EventType.STEP_STARTED, step_id=step_id, payload=payload))
    return _commit(Action.BEGIN_STEP, run, _evolve(run), events)


def claim(run: Run, *, lease_until: str) -> Commit:
    """An at-most-once step's lease: no other dispatcher starts it before `lease_until`."""
    _check(Action.CLAIM, run)
    claimed = _evolve(run, lease_expires_at=lease_until, next_wake_at=lease_until)
    return _commit(Action.CLAIM, run, claimed)


def complete_step(
    run: Run,
    step_id: str,
    output: Any,
    *,
    next_step: str | None,
    now: datetime,
    fields: Mapping[str, Any] | None = None,
    cause: Sequence[NewEvent] = (),
) -> Commit:
    """The step succeeded with `output` (as stored: the value or its reference); the run goes to
    `next_step`, or ends succeeded when it is None or `_end`. `cause` precedes the step's
    `step_completed` event (an approval's decision)."""
    _check(Action.COMPLETE_STEP, run)
    payload = {"output": output, "attempt": run.attempt, **(fields or {})}
    events = [*cause, NewEvent(event_type=EventType.STEP_COMPLETED, step_id=step_id, payload=payload)]
    kept, dropped = remember(run.step_outputs, step_id, output)
    progress = {
        **_STEP_DONE,
        "step_outputs": kept,
        "outputs_dropped": run.outputs_dropped or dropped,
        "last_output": output,
        "steps_executed": run.steps_executed + 1,
        "attempt": 1,
        "approval": None,
    }
    if next_step is None or next_step == END:
        return _succeed(Action.COMPLETE_STEP, run, output, events, now, progress)
    moved, goes_on = _land(run, R, current_step_id=next_step, **progress)
    return _commit(Action.COMPLETE_STEP, run, moved, events, Kick() if goes_on else None)


def fail_step(
    run: Run,
    step_id: str,
    error: RunError,
    *,
    timed_out: bool,
    route: str | None,
    output: Any = None,
    now: datetime,
    cause: Sequence[NewEvent] = (),
) -> Commit:
    """The step failed and is not retried. Without a route the run fails; with one (the step's
    `on_failure` or `on_timeout`) the failure is the step's `output` (its `error` inside) and the
    run goes on there, or succeeds when the route is `_end`. Without a route, `output` (a
    rejected decision) is still recorded in the step's event."""
    _check(Action.FAIL_STEP, run)
    payload: dict[str, Any] = {"error": dict(error), "attempt": run.attempt}
    if output is not None:
        payload["output"] = output
    event_type = EventType.STEP_TIMEOUT if timed_out else EventType.STEP_FAILED
    events = [*cause, NewEvent(event_type=event_type, step_id=step_id, payload=payload)]
    progress: dict[str, Any] = {**_STEP_DONE, "steps_executed": run.steps_executed + 1, "approval": None}
    if route is None:
        # The children the step waited for stay on record: they are cancelled once this is
        # stored, and a retry of the run from this step runs again those that did not succeed.
        if run.fanout is not None and run.fanout.get("step_id") == step_id:
            progress["fanout"] = run.fanout
        return _fail(Action.FAIL_STEP, run, error, events, now, progress)
    kept, dropped = remember(run.step_outputs, step_id, output)
    progress.update(
        step_outputs=kept, outputs_dropped=run.outputs_dropped or dropped, last_output=output, attempt=1
    )
    if route == END:
        return _succeed(Action.FAIL_STEP, run, output, events, now, progress)
    moved, goes_on = _land(run, R, current_step_id=route, **progress)
    return _commit(Action.FAIL_STEP, run, moved, events, Kick() if goes_on else None)


def retry_later(run: Run, step_id: str, error: RunError, *, delay_seconds: float, now: datetime) -> Commit:
    """The step failed and its retry policy tries it again after `delay_seconds`."""
    _check(Action.RETRY_LATER, run)
    wake = now + timedelta(seconds=delay_seconds)
    payload = {
        "error": dict(error),
        "attempt": run.attempt,
        "next_attempt": run.attempt + 1,
        "delay_seconds": delay_seconds,
    }
    event = NewEvent(event_type=EventType.STEP_RETRYING, step_id=step_id, payload=payload)
    moved, goes_on = _land(
        run,
        R,
        **{**_STEP_DONE, "next_wake_at": iso(wake)},
        steps_executed=run.steps_executed + 1,
        attempt=run.attempt + 1,
        approval=None,
    )
    return _commit(Action.RETRY_LATER, run, moved, [event], Kick(delay_seconds) if goes_on else None)


def suspend(run: Run, *, until: str, now: datetime) -> Commit:
    """The step waits for `until` (a delay): it runs again then, and ends or waits more."""
    _check(Action.SUSPEND, run)
    moved, goes_on = _land(run, R, lease_expires_at=None, wait_until=until, next_wake_at=until)
    return _commit(Action.SUSPEND, run, moved, (), Kick(_seconds_until(until, now)) if goes_on else None)


def await_approval(
    run: Run, step_id: str, request: Mapping[str, Any], *, until: str, now: datetime
) -> Commit:
    """The approval step waits for a decision until `until` (its timeout)."""
    _check(Action.AWAIT_APPROVAL, run)
    approval = {"step_id": step_id, **request, "requested_at": iso(now), "timeout_at": until}
    event = NewEvent(event_type=EventType.WAITING_APPROVAL, step_id=step_id, payload=approval)
    moved, goes_on = _land(
        run, W, lease_expires_at=None, wait_until=until, next_wake_at=until, approval=approval
    )
    return _commit(
        Action.AWAIT_APPROVAL, run, moved, [event], Kick(_seconds_until(until, now)) if goes_on else None
    )


def record_approval(
    run: Run, granted: Sequence[Mapping[str, Any]], event: NewEvent, *, now: datetime
) -> Commit:
    """An approval short of the step's quorum: recorded, the run keeps waiting. Its version
    moved, so the timeout's pending kick is stale: this commit sends the one for the deadline."""
    _check(Action.RECORD_APPROVAL, run)
    moved = _evolve(run, approval={**(run.approval or {}), "approvals": [dict(g) for g in granted]})
    return _commit(Action.RECORD_APPROVAL, run, moved, [event], Kick(_seconds_until(run.wait_until, now)))


def await_signal(run: Run, wait: SignalWait, *, until: str, now: datetime) -> Commit:
    """The step waits for the signals `wait` names until `until` (its timeout). Its kick comes at
    once: the engine then looks back for signals sent before the wait began, and sends the hops
    to the deadline (the timeout fails the step)."""
    _check(Action.AWAIT_SIGNAL, run)
    request = {key: value for key, value in wait.items() if key != "received"}
    event = NewEvent(event_type=EventType.WAITING_SIGNAL, step_id=wait["step_id"], payload=request)
    moved, goes_on = _land(
        run, R, lease_expires_at=None, wait_until=until, next_wake_at=until, signal_wait=dict(wait)
    )
    return _commit(Action.AWAIT_SIGNAL, run, moved, [event], Kick() if goes_on else None)


def receive_signal(
    run: Run,
    signal: Signal,
    *,
    next_step: str | None,
    now: datetime,
    store: Callable[[dict[str, Any]], Any] = lambda output: output,
) -> Commit | None:
    """A signal the run's step may wait for: None when it does not (another name, fields that do
    not match, sent before the wait counts, to another run, received already: a repeat changes
    nothing). Otherwise it is recorded, and once the wait is satisfied the step completes with
    every signal received (`next_step`: where the run goes then; `store`: the output as the run
    records it, a reference past the inline size)."""
    leads(Action.RECEIVE_SIGNAL, run.status)
    if run.signal_wait is None or run.current_step_id != run.signal_wait.get("step_id"):
        return None
    wait = cast(SignalWait, run.signal_wait)
    name = signals.accepts(wait, signal, run.run_id)
    if name is None:
        return None
    received: Received = {"id": signal.signal_id, "data": signal.data, "sent_at": signal.sent_at}
    wait = cast(SignalWait, {**wait, "received": {**wait["received"], name: received}})
    event = NewEvent(
        event_type=EventType.SIGNAL_RECEIVED,
        step_id=wait["step_id"],
        payload={"name": name, "id": signal.signal_id, "data": signal.data, "sent_at": signal.sent_at},
    )
    if signals.satisfied(wait):
        return _as(
            Action.RECEIVE_SIGNAL,
            complete_step(
                run, wait["step_id"], store(signals.output(wait)), next_step=next_step, now=now, cause=[event]
            ),
        )
    # The commit moves the run's version, which makes the wait's pending kick stale: it sends the
    # one for the deadline (a paused run gets it when resumed).
    kick = Kick(_seconds_until(run.wait_until, now)) if run.status == R else None
    return _commit(Action.RECEIVE_SIGNAL, run, _evolve(run, signal_wait=dict(wait)), [event], kick)


def await_children(run: Run, fanout: Fanout, events: Sequence[NewEvent], *, until: str | None) -> Commit:
    """The step waits for the children `fanout` plans until `until`: then the children still
    running are cancelled and the step fails with `timeout`. The first children are created
    just before; the kick that comes once this is stored (a running run's) kicks them and starts
    the rest of the first window. Items run inside the run (`inline`) wait for nothing: `until`
    is None, and each kick runs a batch of them."""
    _check(Action.AWAIT_CHILDREN, run)
    moved, goes_on = _land(
        run, R, lease_expires_at=None, wait_until=until, next_wake_at=None, fanout=dict(fanout)
    )
    return _commit(Action.AWAIT_CHILDREN, run, moved, events, Kick() if goes_on else None)


def record_children(
    run: Run, fanout: Fanout, events: Sequence[NewEvent], *, more_to_start: bool = False
) -> Commit:
    """Children of the step ended (`fanout`: the record with them counted, and with the next
    ones started). `more_to_start`: the window has room for children this commit did not start;
    its kick starts them. A join's outcome chains onto it (complete_step, fail_step)."""
    _check(Action.RECORD_CHILDREN, run)
    if run.fanout is None or run.fanout.get("step_id") != fanout["step_id"]:
        raise InvalidState(f"run {run.run_id} waits for no children of step '{fanout['step_id']}'")
    kick = Kick() if more_to_start and run.status == R else None
    return _commit(Action.RECORD_CHILDREN, run, _evolve(run, fanout=dict(fanout)), events, kick)


def _as(action: Action, commit: Commit) -> Commit:
    """A commit another transition built, under this action's name (its table checked too)."""
    return _commit(action, commit.read, commit.run, commit.events, commit.kick)


def _succeed(
    action: Action, run: Run, outputs: Any, events: list[NewEvent], now: datetime, progress: Mapping[str, Any]
) -> Commit:
    # The run ends when its terminal commit is built, after its last step executed, not when
    # that step started (up to a step's whole time budget earlier).
    ended = _evolve(
        run,
        **progress,
        status=S,
        outputs=outputs,
        current_step_id=None,
        ended_at=iso(now),
        status_reason=None,
        paused_from=None,
    )
    events = [*events, NewEvent(event_type=EventType.RUN_COMPLETED, payload={"outputs": outputs})]
    return _commit(action, run, ended, events)


def _fail(
    action: Action,
    run: Run,
    error: RunError,
    events: list[NewEvent],
    now: datetime,
    progress: Mapping[str, Any],
) -> Commit:
    ended = _evolve(
        run,
        **progress,
        status=F,
        error=dict(error),
        status_reason=error["code"],
        ended_at=iso(now),
        paused_from=None,
    )
    events = [*events, NewEvent(event_type=EventType.RUN_FAILED, payload={"error": dict(error)})]
    return _commit(action, run, ended, events)


# ---- control, the service's own ------------------------------------------------------------


def pause(run: Run, *, actor: str) -> Commit | None:
    """The run rests at its next step boundary (a step executing commits its result)."""
    if not _check(Action.PAUSE, run):
        return None
    event = NewEvent(event_type=EventType.RUN_PAUSED, payload={"actor": actor, "from": run.status.value})
    return _commit(Action.PAUSE, run, _evolve(run, status=P, paused_from=run.status), [event])


def resume(run: Run, *, actor: str, now: datetime) -> Commit | None:
    """The run returns to where it was paused from (queued, running or waiting for approval)."""
    if not _check(Action.RESUME, run):
        return None
    target = run.paused_from or (R if run.started_at else Q)
    event = NewEvent(event_type=EventType.RUN_RESUMED, payload={"actor": actor, "to": target.value})
    moved = _evolve(run, status=target, paused_from=None)
    # A delay or an approval keeps its deadline while paused: the kick finds it (or its end). A
    # step waiting for children starts the ones it held back meanwhile, now.
    delay = 0.0 if run.fanout is not None else _seconds_until(run.wait_until, now)
    return _commit(Action.RESUME, run, moved, [event], Kick(delay))


def cancel(run: Run, *, actor: str, now: datetime) -> Commit | None:
    """The run ends now; a step executing meanwhile loses its commit."""
    if not _check(Action.CANCEL, run):
        return None
    ended = _evolve(
        run,
        status=C,
        ended_at=iso(now),
        status_reason="cancelled",
        paused_from=None,
        wait_until=None,
        next_wake_at=None,
        signal_wait=None,
    )
    events = [
        NewEvent(event_type=EventType.CANCEL_ACKNOWLEDGED, payload={"actor": actor}),
        NewEvent(
            event_type=EventType.RUN_CANCELLED, payload={"actor": actor, "step_id": run.current_step_id}
        ),
    ]
    return _commit(Action.CANCEL, run, ended, events)


def retry_from(
    run: Run, step_id: str, *, actor: str, redrive: Fanout | None = None, until: str | None = None
) -> Commit:
    """A failed run runs again from `step_id`, keeping the outputs of the steps before it. With
    `redrive` (domain.fanout.redrive: the step is the run's failed `parallel` or `map`), the step
    is not run again: it waits, until `until`, for its children that did not succeed to run again
    (the others keep their outputs)."""
    _check(Action.RETRY_FROM, run)
    moved = _evolve(
        run,
        status=R,
        current_step_id=step_id,
        attempt=1,
        error=None,
        status_reason=None,
        ended_at=None,
        wait_until=until if redrive is not None else None,
        next_wake_at=None,
        approval=None,
        signal_wait=None,
        fanout=dict(redrive) if redrive is not None else None,
    )
    payload: dict[str, Any] = {"actor": actor, "reason": "retry", "from_step": step_id}
    if redrive is not None:
        payload["redrive"] = True
        if "redo_from" in redrive:
            payload["items_from_step"] = redrive["redo_from"]
    event = NewEvent(event_type=EventType.RUN_RESUMED, payload=payload)
    return _commit(Action.RETRY_FROM, run, moved, [event], Kick())


def redrive_child(run: Run, step_id: str) -> Commit:
    """A child run that did not succeed runs again from `step_id`, as its parent's retry asks
    (Children: the parent's record lists it as running again)."""
    _check(Action.REDRIVE, run)
    moved = _evolve(
        run,
        status=R if run.started_at else Q,
        current_step_id=step_id,
        attempt=1,
        error=None,
        status_reason=None,
        ended_at=None,
        wait_until=None,
        next_wake_at=None,
        lease_expires_at=None,
        approval=None,
        signal_wait=None,
        fanout=None,
        paused_from=None,
    )
    event = NewEvent(
        event_type=EventType.RUN_RESUMED, payload={"actor": "parent", "reason": "retry", "from_step": step_id}
    )
    return _commit(Action.REDRIVE, run, moved, [event], Kick())


def give_up(run: Run, error: RunError, *, now: datetime, blame_step: bool = True) -> Commit | None:
    """The service fails a run that cannot advance (an error on every delivery of its kick, its
    kick dead-lettered, no progress after the sweeper's re-kicks, too many steps, a kick that
    could not be queued). With `blame_step`, the step it was on is named in the error and, if it
    had begun, fails too. A run that already ended is left as it is (None)."""
    if not _check(Action.GIVE_UP, run):
        return None
    failed: RunError = {**error}
    if blame_step and run.current_step_id:
        failed["step_id"] = run.current_step_id
    events: list[NewEvent] = []
    if blame_step and run.current_step_id and run.status in (R, W):
        payload = {"error": dict(failed), "attempt": run.attempt}
        events.append(
            NewEvent(event_type=EventType.STEP_FAILED, step_id=run.current_step_id, payload=payload)
        )
    # The children the step waited for stay on record: they are cancelled once this is stored.
    progress = {**_STEP_DONE, "approval": None, "fanout": run.fanout}
    return _fail(Action.GIVE_UP, run, failed, events, now, progress)


def rekick(run: Run) -> Commit:
    """The sweeper found the run idle past its grace: a new version (a late kick from before is
    stale) and a kick. `sweeps` counts the re-kicks since the run last moved on."""
    _check(Action.REKICK, run)
    return _commit(Action.REKICK, run, _evolve(run, sweeps=run.sweeps + 1), (), Kick())


def touch(run: Run) -> Commit:
    """A write that changes nothing but the version: a run waiting its turn (a tenant's slot or
    share) shows the sweeper it is not lost. Its kick is the caller's (a deferral)."""
    _check(Action.TOUCH, run)
    return _commit(Action.TOUCH, run, _evolve(run))
