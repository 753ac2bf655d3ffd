"""Control actions on a run: pause, resume, cancel, retry, approve, reject.

Semantics (docs/engine.md):
- pause acts at the next step boundary: a step already executing commits its result, then the
  run rests. A delay keeps its deadline while paused; resumed after it, the delay ends at once.
- resume returns the run to where it was (running, queued, or waiting for approval).
- cancel is immediate; a step executing meanwhile loses its commit and its result is discarded.
- retry (only from failed) re-runs the failed step, or `from_step`, keeping earlier outputs;
  kicks from before the retry are stale by version.
- approve / reject act only on the approval step the run is waiting on. An approval step may
  need several distinct approvers (`required_approvals`): each approval is one conditional
  commit recording the approver (a repeat by the same approver changes nothing), the one that
  completes the quorum completes the step, and any rejection rejects it. A caller repeating
  their decision gets `already_applied` whatever the run did after it; another decision, or one
  by a caller who did not make it, once the step was decided raises InvalidState.
Each answers `applied`, or `already_applied` when the run is already where the action leads;
an action the status does not allow raises InvalidState (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from workflows.clock import Clock, iso, system_clock
from workflows.domain.approvals import quorum
from workflows.domain.backoff import attempts, full_jitter
from workflows.domain.failures import StepFailed
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import TRANSITIONS, EventType, NewEvent, Run, RunStatus, check_transition
from workflows.engine.advance import Engine, RunOutputs, parse_time
from workflows.errors import InvalidState, NotFound, StaleWrite, ValidationFailed
from workflows.ports import DispatchQueue, RunStore
from workflows.steps.base import StepResult
from workflows.steps.registry import canonical_type

Action = Literal["pause", "resume", "cancel", "retry"]
_ATTEMPTS = 5  # a control action re-reads and retries when the engine moved the run meanwhile
# A decision re-reads and retries too, longer: every approver of a quorum may approve at the same
# moment, each commit moves the run's version, and a vote that lost the race must still count.
_DECIDE_ATTEMPTS = 60


@dataclass(frozen=True)
class ControlResult:
    run_id: str
    action: str
    result: Literal["applied", "already_applied"]
    status: str
    # Decisions only: distinct approvals recorded so far, and how many the step needs.
    approvals: int | None = None
    required_approvals: int | None = None


class RunControl:
    def __init__(self, runs: RunStore, queue: DispatchQueue, engine: Engine, *, clock: Clock = system_clock):
        self._runs = runs
        self._queue = queue
        self._engine = engine
        self._clock = clock

    def act(
        self, tenant_id: str, run_id: str, action: str, actor: str, *, from_step: str | None = None
    ) -> ControlResult:
        handlers = {
            "pause": self._pause,
            "resume": self._resume,
            "cancel": self._cancel,
            "retry": self._retry,
        }
        if action not in handlers:
            raise NotFound(f"unknown action '{action}' (pause, resume, cancel, retry)")
        for _ in range(_ATTEMPTS):
            run = self._runs.get(tenant_id, run_id)
            try:
                return handlers[action](run, actor, from_step)
            except StaleWrite:
                continue
        raise StaleWrite(f"run {run_id} kept changing; try again")

    def decide(
        self,
        tenant_id: str,
        run_id: str,
        step_id: str,
        decision: Literal["approve", "reject"],
        actor: str,
        *,
        comment: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> ControlResult:
        for _ in attempts(_DECIDE_ATTEMPTS, _decision_delay):
            run, definition = self._runs.get_with_definition(tenant_id, run_id)
            try:
                step = definition.step(step_id)
            except KeyError:
                raise NotFound(f"run '{run_id}' has no step '{step_id}'") from None
            if canonical_type(step.type) != "approval":
                raise InvalidState(f"step '{step_id}' is not an approval step")
            action = decision
            if run.status != RunStatus.WAITING_APPROVAL or run.current_step_id != step_id:
                if self._decided_by(run, step_id, decision, actor):
                    return ControlResult(run_id, action, "already_applied", run.status.value)
                raise InvalidState(
                    f"step '{step_id}' is not waiting for approval (run is {run.status.value})",
                    details=[{"field": "status", "message": run.status.value}],
                )
            request = dict(run.approval or {})
            required, granted = quorum(request)
            approvers = [entry["approver"] for entry in granted]
            if decision == "approve" and actor in approvers:
                # Each approver counts once: a repeat records nothing.
                return ControlResult(
                    run_id, action, "already_applied", run.status.value, len(approvers), required
                )
            if decision == "approve":
                approvers.append(actor)
                granted.append({"approver": actor, "approved_at": iso(self._clock())})
            decided = {"decision": decision, "comment": comment, "fields": fields or {}, "approver": actor}
            # Each decision's event names its approver and the count so far.
            payload = {**decided, "approvals": len(approvers), "required_approvals": required}
            output = {**decided, "approvers": approvers}
            changes: dict[str, Any] = {"status": RunStatus.RUNNING, "next_wake_at": None}
            try:
                if decision == "approve" and len(approvers) < required:
                    # Short of the quorum: record the approval; the run keeps waiting.
                    updated = self._runs.transition(
                        run,
                        {"approval": {**request, "approvals": granted}},
                        [NewEvent(event_type=EventType.APPROVAL_GRANTED, step_id=step_id, payload=payload)],
                    )
                elif decision == "approve":
                    events = [
                        NewEvent(event_type=EventType.APPROVAL_GRANTED, step_id=step_id, payload=payload)
                    ]
                    updated = self._engine.complete_step(
                        run, definition, step, StepResult(output=output), changes, events
                    )
                else:
                    events = [
                        NewEvent(event_type=EventType.APPROVAL_REJECTED, step_id=step_id, payload=payload)
                    ]
                    failure = StepFailed("approval_rejected", f"rejected by {actor}", retryable=False)
                    updated = self._engine.fail_step(
                        run, definition, step, failure, changes, events, output=output
                    )
            except StaleWrite:
                continue  # another decision (or the engine) moved the run: read it again, recount
            if updated.status == RunStatus.WAITING_APPROVAL:
                self._kick_at_deadline(updated)
            self._kick_if_running(updated)
            if updated.is_terminal:
                self._engine.finished(updated, definition)
            return ControlResult(run_id, action, "applied", updated.status.value, len(approvers), required)
        raise StaleWrite(f"run {run_id} kept changing; try again")

    def _decided_by(self, run: Run, step_id: str, decision: str, actor: str) -> bool:
        """Whether the step's last decision is `decision` and counted `actor`: a caller repeating
        their decision gets the same answer whatever the run did after it (routed on, failed,
        finished). The decision is the step's output, recorded in the step's last event whether
        it ended the run or not (Engine.fail_step)."""
        found, output = self._runs.find_step_output(run.tenant_id, run.run_id, step_id)
        if not found:
            return False
        output = RunOutputs(self._runs, run).resolve(output)
        if not isinstance(output, dict) or output.get("decision") != decision:
            return False
        if decision == "approve":
            return actor in (output.get("approvers") or [])
        return bool(output.get("approver") == actor)

    # ---- actions ---------------------------------------------------------------------

    def _pause(self, run: Run, actor: str, _: str | None) -> ControlResult:
        if run.status == RunStatus.PAUSED:
            return self._already(run, "pause")
        self._refuse_unless(run, "pause", RunStatus.PAUSED)
        updated = self._runs.transition(
            run,
            {"status": RunStatus.PAUSED, "paused_from": run.status},
            [NewEvent(event_type=EventType.RUN_PAUSED, payload={"actor": actor, "from": run.status.value})],
        )
        return ControlResult(run.run_id, "pause", "applied", updated.status.value)

    def _resume(self, run: Run, actor: str, _: str | None) -> ControlResult:
        if run.status != RunStatus.PAUSED:
            if run.is_terminal:
                raise self._invalid(run, "resume")
            return self._already(run, "resume")
        target = run.paused_from or (RunStatus.RUNNING if run.started_at else RunStatus.QUEUED)
        check_transition(run.status, target)
        updated = self._runs.transition(
            run,
            run.with_progress({"status": target, "paused_from": None}),
            [NewEvent(event_type=EventType.RUN_RESUMED, payload={"actor": actor, "to": target.value})],
        )
        self._kick(updated)
        return ControlResult(run.run_id, "resume", "applied", updated.status.value)

    def _cancel(self, run: Run, actor: str, _: str | None) -> ControlResult:
        if run.status == RunStatus.CANCELLED:
            return self._already(run, "cancel")
        self._refuse_unless(run, "cancel", RunStatus.CANCELLED)
        now = iso(self._clock())
        updated = self._runs.transition(
            run,
            {
                "status": RunStatus.CANCELLED,
                "ended_at": now,
                "status_reason": "cancelled",
                "paused_from": None,
                "wait_until": None,
                "next_wake_at": None,
            },
            [
                NewEvent(event_type=EventType.CANCEL_ACKNOWLEDGED, payload={"actor": actor}),
                NewEvent(
                    event_type=EventType.RUN_CANCELLED,
                    payload={"actor": actor, "step_id": run.current_step_id},
                ),
            ],
        )
        definition = self._runs.get_with_definition(run.tenant_id, run.run_id)[1]
        self._engine.finished(updated, definition)
        return ControlResult(run.run_id, "cancel", "applied", updated.status.value)

    def _retry(self, run: Run, actor: str, from_step: str | None) -> ControlResult:
        self._refuse_unless(run, "retry", RunStatus.RUNNING, only_from=RunStatus.FAILED)
        _, definition = self._runs.get_with_definition(run.tenant_id, run.run_id)
        failed_step = (run.error or {}).get("step_id") or run.current_step_id or definition.first_step_id()
        start = from_step or failed_step
        if start not in {s.id for s in definition.steps}:
            raise ValidationFailed(
                f"from_step: run has no step '{start}'",
                details=[{"field": "from_step", "message": "unknown step"}],
            )
        updated = self._runs.transition(
            run,
            run.with_progress(
                {
                    "status": RunStatus.RUNNING,
                    "current_step_id": start,
                    "attempt": 1,
                    "error": None,
                    "status_reason": None,
                    "ended_at": None,
                    "wait_until": None,
                    "next_wake_at": None,
                    "approval": None,
                }
            ),
            [
                NewEvent(
                    event_type=EventType.RUN_RESUMED,
                    payload={"actor": actor, "reason": "retry", "from_step": start},
                )
            ],
        )
        self._kick(updated)
        return ControlResult(run.run_id, "retry", "applied", updated.status.value)

    # ---- helpers -----------------------------------------------------------------------

    def _kick(self, run: Run) -> None:
        self._queue.send(AdvanceMessage(tenant_id=run.tenant_id, run_id=run.run_id, version=run.version))

    def _kick_if_running(self, run: Run) -> None:
        if run.status == RunStatus.RUNNING:
            self._kick(run)

    def _kick_at_deadline(self, run: Run) -> None:
        """An approval short of its quorum moved the run's version, which makes the timeout's
        pending kick stale: send the one that will find the deadline (chained past 15 minutes)."""
        delay = 0.0
        if run.wait_until:
            delay = max(0.0, (parse_time(run.wait_until) - self._clock()).total_seconds())
        message = AdvanceMessage(tenant_id=run.tenant_id, run_id=run.run_id, version=run.version)
        self._queue.send(message, delay_seconds=round(delay))

    @staticmethod
    def _already(run: Run, action: str) -> ControlResult:
        return ControlResult(run.run_id, action, "already_applied", run.status.value)

    @staticmethod
    def _invalid(run: Run, action: str) -> InvalidState:
        return InvalidState(
            f"cannot {action} a {run.status.value} run",
            details=[{"field": "status", "message": run.status.value}],
        )

    def _refuse_unless(
        self, run: Run, action: str, target: RunStatus, *, only_from: RunStatus | None = None
    ) -> None:
        allowed = run.status == only_from if only_from else target in TRANSITIONS[run.status]
        if not allowed:
            raise self._invalid(run, action)


def _decision_delay(attempt: int) -> float:
    # Full jitter: approvers who lost a race to each other do not retry in lock step.
    return full_jitter(attempt, 0.01, 0.2)
