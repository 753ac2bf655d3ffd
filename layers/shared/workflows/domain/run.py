"""Runs, their events, and the run state machine's transition table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


SCHEDULE_OWNER_PREFIX = "schedule:"
TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_RETRYING = "step_retrying"
    STEP_TIMEOUT = "step_timeout"
    RUN_PAUSED = "run_paused"
    RUN_RESUMED = "run_resumed"
    CANCEL_ACKNOWLEDGED = "cancel_acknowledged"
    RUN_CANCELLED = "run_cancelled"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    WAITING_APPROVAL = "waiting_approval"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_REJECTED = "approval_rejected"
    WEBHOOK_DELIVERY = "webhook_delivery"
    WAITING_SIGNAL = "waiting_signal"
    SIGNAL_RECEIVED = "signal_received"
    CHILDREN_STARTED = "children_started"
    CHILD_ENDED = "child_ended"


class NewEvent(BaseModel):
    """An event before it has a sequence number; the repository assigns `event_seq`."""

    event_type: EventType
    payload: dict[str, Any] = Field(default_factory=dict)
    step_id: str | None = None


class RunEvent(BaseModel):
    event_seq: int
    event_type: str
    payload: dict[str, Any]
    step_id: str | None = None
    created_at: str


# Statuses in which the service owes the run its next step (a paused run waits for a person).
SWEPT = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL})
# A wait longer than this (an approval, a long delay) is looked at by the sweeper only once its
# deadline has come (Run.long_wait_deadline).
LONG_WAIT_SECONDS = 3600


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Run(BaseModel):
    """A run as stored. `version` guards every state change; `last_event_seq` numbers events."""

    run_id: str
    tenant_id: str
    owner_id: str
    # The permissions the owner held when submitting the run (multi-user mode), sorted: what the
    # run may do on their behalf, such as starting another user's saved workflow (docs/auth.md).
    # None on a child run (its root run's apply), in single-user mode, and on runs stored before
    # they were recorded.
    owner_permissions: list[str] | None = None
    workflow_id: str | None = None
    definition_version: int
    definition_name: str
    status: RunStatus
    status_reason: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: Any = None
    error: dict[str, Any] | None = None
    current_step_id: str | None = None
    attempt: int = 1
    step_outputs: dict[str, Any] = Field(default_factory=dict)
    last_output: Any = None
    steps_executed: int = 0
    # Whether `step_outputs` ever dropped an output to stay small (domain.outputs.remember): a
    # template naming a step it does not remember then looks for it in the run's events.
    outputs_dropped: bool = False
    # The current step's own deadline while it is suspended (a delay's end, an approval's
    # timeout); None while no step is suspended.
    wait_until: str | None = None
    # When the engine expects its next (delayed) kick: a delay, a retry backoff, a timeout.
    next_wake_at: str | None = None
    # Held while an at-most-once step (a webhook) executes: no other dispatcher starts it
    # before this time; after it (a crashed Lambda), the step is claimed and run again.
    lease_expires_at: str | None = None
    # The status a paused run returns to on resume.
    paused_from: RunStatus | None = None
    # The pending approval request: step_id, instructions, assignees, required_approvals,
    # requested_at, timeout_at, and `approvals` ({approver, approved_at}) granted so far.
    approval: dict[str, Any] | None = None
    # The signals the current step waits for (domain.signals.SignalWait): what it expects, what
    # it has received, from when a signal counts; None while no step waits for signals.
    signal_wait: dict[str, Any] | None = None
    created_at: str
    updated_at: str
    started_at: str | None = None
    ended_at: str | None = None
    version: int = 1
    last_event_seq: int = 0
    # The SHA-256 of the pinned definition's canonical JSON: its snapshot is stored once per
    # content and tenant, not once per run (None for runs stored before that).
    definition_hash: str | None = None
    # Times the sweeper re-kicked the run since it last made progress (docs/engine.md, "How runs
    # end"); past its limit the run fails `stalled`.
    sweeps: int = 0
    # A child run (a `workflow` step's run, a parallel's branch, a map's item): the run and step
    # that started it, and where it sits among that step's children (domain.fanout.ChildPlace:
    # pass, index, branch); None for a run started by a caller or a schedule, and for a child
    # nobody waits for (`wait: false`), which has no place.
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    child: dict[str, Any] | None = None
    # How many parents above this run (0: a run started by a caller or a schedule).
    depth: int = 0
    # What a child's templates see besides inputs and steps: `item` and `index` (a map's item),
    # `branch` (a parallel's branch); None for a run that is no branch or item.
    scope: dict[str, Any] | None = None
    # The children the current step waits for (domain.fanout.Fanout); kept on a run cancelled
    # or failed meanwhile, so its children are cancelled too.
    fanout: dict[str, Any] | None = None
    # The events the run's latest commit appended (set by the repository; not a stored field).
    # A default, not a default_factory: pydantic inspects a factory's signature on every model
    # built, which was most of the time it took to build a run.
    _latest_events: list[RunEvent] | None = PrivateAttr(default=None)

    @property
    def owed_step(self) -> bool:
        """Whether the service owes the run its next step: queued, running or waiting for an
        approval (a decision or its timeout); not once it ended, nor while a person paused it.
        The sweeper looks only at such runs (engine.sweep)."""
        return self.status in SWEPT

    def long_wait_deadline(self) -> str | None:
        """The deadline of the wait the run is in (a delay's end, an approval's timeout) when
        that wait is longer than LONG_WAIT_SECONDS, else None: nothing is owed such a run before
        its deadline, so the sweeper need not look at it until then. Shorter waits are looked at
        every sweep."""
        wait = self.wait_until
        if wait and _parse(wait) - _parse(self.updated_at) > timedelta(seconds=LONG_WAIT_SECONDS):
            return wait
        return None

    def decision_requested_at(self) -> str | None:
        """When the approval the run waits for was requested, while it waits for a decision;
        None otherwise (a paused run cannot be decided). Derived from the run itself, so the
        commit that suspends the run puts it in the approvals inbox and the commit that leaves
        the wait takes it out: nothing else writes the inbox."""
        if self.status != RunStatus.WAITING_APPROVAL or not self.approval:
            return None
        return str(self.approval.get("requested_at", self.updated_at))

    def last_activity(self) -> str:
        """The latest moment the service promised to act on the run by: its last write, or a
        wake-up it scheduled (a delay, a retry's backoff, a lease, an approval's timeout)."""
        return max(t for t in (self.updated_at, self.next_wake_at, self.wait_until) if t)

    @property
    def latest_events(self) -> list[RunEvent]:
        return self._latest_events if self._latest_events is not None else []

    @latest_events.setter
    def latest_events(self, events: list[RunEvent]) -> None:
        self._latest_events = events

    @property
    def schedule_id(self) -> str | None:
        """The schedule that started this run: scheduled runs are owned by `schedule:<id>`."""
        return (
            self.owner_id.removeprefix(SCHEDULE_OWNER_PREFIX)
            if self.owner_id.startswith(SCHEDULE_OWNER_PREFIX)
            else None
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class EventPage:
    events: list[RunEvent]
    next_since: int
    has_more: bool
