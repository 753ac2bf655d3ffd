"""Runs, their events, and the run state machine's transition table."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from workflows.errors import InvalidState


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

# The only transitions a run may make. `retry` is the one way out of `failed`.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.PAUSED,
            RunStatus.WAITING_APPROVAL,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        }
    ),
    # A step already executing when the run was paused still commits; if it was the last
    # step, the paused run finishes (paused -> succeeded / failed).
    RunStatus.PAUSED: frozenset(
        {
            RunStatus.RUNNING,
            RunStatus.QUEUED,
            RunStatus.WAITING_APPROVAL,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        }
    ),
    RunStatus.WAITING_APPROVAL: frozenset(
        {RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
    RunStatus.CANCELLED: frozenset(),
}


def check_transition(current: RunStatus, target: RunStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidState(f"a {current.value} run cannot become {target.value}")


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
# Partitions of the index of active runs (spreads its writes; the sweeper reads each).
ACTIVE_SHARDS = 8
# A wait longer than this (an approval, a long delay) files the run under its deadline.
LONG_WAIT_SECONDS = 3600
# A commit that moves any of these moves the run on: the sweeper's count of re-kicks starts again
# (`stalled` means no progress since the last re-kick, not a run that lost a kick now and then).
PROGRESS_FIELDS = ("status", "current_step_id", "steps_executed", "attempt")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Run(BaseModel):
    """A run as stored. `version` guards every state change; `last_event_seq` numbers events."""

    run_id: str
    tenant_id: str
    owner_id: str
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
    # The events the run's latest commit appended (set by the repository; not a stored field).
    _latest_events: list[RunEvent] = PrivateAttr(default_factory=list)

    def sweep_key(self) -> tuple[str, str] | None:
        """The run's place in the sparse index of active runs: (shard, due), None when it is not
        waiting for anything the service owes it (ended, or paused). `due` is "0" except during
        a long wait (then its deadline), so an ordinary commit does not rewrite the index entry."""
        if self.status not in SWEPT:
            return None
        shard = str(int(hashlib.sha256(self.run_id.encode()).hexdigest()[:4], 16) % ACTIVE_SHARDS)
        # Only a long wait moves the run in the index (a key change there is a delete and a put):
        # the sweeper then skips it until its deadline. Shorter waits are read at every sweep.
        wait = self.wait_until
        if wait and _parse(wait) - _parse(self.updated_at) > timedelta(seconds=LONG_WAIT_SECONDS):
            return shard, wait
        return shard, "0"

    def inbox_key(self) -> tuple[str, str] | None:
        """The run's place in the sparse index of pending approvals: (tenant, "<requested_at>#
        <run_id>") while it waits for a decision, None otherwise (a paused run cannot be decided).
        Derived from the run itself, so the commit that suspends the run writes it and the commit
        that leaves the wait removes it: nothing else writes the index."""
        if self.status != RunStatus.WAITING_APPROVAL or not self.approval:
            return None
        return self.tenant_id, f"{self.approval.get('requested_at', self.updated_at)}#{self.run_id}"

    def with_progress(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """`changes`, with the sweeper's count reset when they move the run on (PROGRESS_FIELDS)."""
        moved = any(name in changes and changes[name] != getattr(self, name) for name in PROGRESS_FIELDS)
        return {**changes, "sweeps": 0} if moved and self.sweeps else dict(changes)

    def last_activity(self) -> str:
        """The latest moment the service promised to act on the run by: its last write, or a
        wake-up it scheduled (a delay, a retry's backoff, a lease, an approval's timeout)."""
        return max(t for t in (self.updated_at, self.next_wake_at, self.wait_until) if t)

    @property
    def latest_events(self) -> list[RunEvent]:
        return self._latest_events

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
