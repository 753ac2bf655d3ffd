"""Control actions on a run: pause, resume, cancel, retry, approve, reject.

Semantics (docs/engine.md):
- pause acts at the next step boundary: a step already executing commits its result, then the
  run rests. A delay keeps its deadline while paused; resumed after it, the delay ends at once.
- resume returns the run to where it was (running, queued, or waiting for approval).
- a run paused or resumed while its step waits for child runs pauses or resumes them too (their
  own children follow); items run inside the run simply stop between batches.
- cancel is immediate; a step executing meanwhile loses its commit and its result is discarded.
- retry (only from failed) re-runs the failed step, or `from_step`, keeping earlier outputs; a
  run failed at a `parallel` or `map` whose children are runs runs again only the branches or
  items that did not succeed (from their failed step, or from `from_step` inside them);
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
from datetime import timedelta
from typing import Any, Literal, cast

from workflows.clock import Clock, iso, system_clock
from workflows.domain import fanout, transitions
from workflows.domain.approvals import quorum
from workflows.domain.backoff import attempts, full_jitter
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.fanout import Fanout
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.domain.transitions import Commit
from workflows.engine.endings import Endings
from workflows.engine.kicks import Kicks
from workflows.engine.outcomes import StepCommits
from workflows.engine.outputs import RunOutputs
from workflows.errors import InvalidState, NotFound, StaleWrite, ValidationFailed
from workflows.ports import DispatchQueue, RunLog, RunOutputStore
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
    def __init__(
        self,
        runs: RunLog,
        outputs: RunOutputStore,
        kicks: Kicks,
        commits: StepCommits,
        endings: Endings,
        *,
        queue: DispatchQueue | None = None,
        child_wait_seconds: int = 30 * 24 * 3600,
        clock: Clock = system_clock,
    ):
        self._queue = queue
        self._child_wait_seconds = child_wait_seconds
        self._runs = runs
        self._outputs = outputs
        self._kicks = kicks
        self._commits = commits
        self._endings = endings
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
            if decision == "approve":
                event = NewEvent(event_type=EventType.APPROVAL_GRANTED, step_id=step_id, payload=payload)
            else:
                event = NewEvent(event_type=EventType.APPROVAL_REJECTED, step_id=step_id, payload=payload)
            try:
                if decision == "approve" and len(approvers) < required:
                    # Short of the quorum: record the approval; the run keeps waiting.
                    commit = transitions.record_approval(run, granted, event, now=self._clock())
                    updated, kick = self._runs.commit(commit), commit.kick
                else:
                    if decision == "approve":
                        build = self._commits.succeeded(
                            run, definition, step, StepResult(output=output), cause=[event]
                        )
                    else:
                        failure = StepFailed("approval_rejected", f"rejected by {actor}", retryable=False)
                        build = self._commits.failed(run, step, failure, output=output, cause=[event])
                    written = self._commits.write(run, build)
                    updated, kick = written.run, written.kick
            except StaleWrite:
                continue  # another decision (or the engine) moved the run: read it again, recount
            self._kicks.send(updated, kick)
            if updated.is_terminal:
                self._endings.finished(updated, definition)
            return ControlResult(run_id, action, "applied", updated.status.value, len(approvers), required)
        raise StaleWrite(f"run {run_id} kept changing; try again")

    def _decided_by(self, run: Run, step_id: str, decision: str, actor: str) -> bool:
        """Whether the step's last decision is `decision` and counted `actor`: a caller repeating
        their decision gets the same answer whatever the run did after it (routed on, failed,
        finished). The decision is the step's output, recorded in the step's last event whether
        it ended the run or not (Engine.fail_step)."""
        found, output = self._outputs.find_step_output(run.tenant_id, run.run_id, step_id)
        if not found:
            return False
        output = RunOutputs(self._outputs, run).resolve(output)
        if not isinstance(output, dict) or output.get("decision") != decision:
            return False
        if decision == "approve":
            return actor in (output.get("approvers") or [])
        return bool(output.get("approver") == actor)

    # ---- actions ---------------------------------------------------------------------

    def _pause(self, run: Run, actor: str, _: str | None) -> ControlResult:
        result = self._apply(run, "pause", transitions.pause(run, actor=actor))
        self._children_follow(run, result, "pause")
        return result

    def _resume(self, run: Run, actor: str, _: str | None) -> ControlResult:
        result = self._apply(run, "resume", transitions.resume(run, actor=actor, now=self._clock()))
        self._children_follow(run, result, "resume")
        return result

    def _children_follow(self, run: Run, result: ControlResult, action: Literal["pause", "resume"]) -> None:
        """A run paused or resumed while its step waits for child runs: they are paused or
        resumed too, a page of them per message (engine.children.Children.control_page)."""
        if result.result != "applied" or self._queue is None:
            return
        message = fanout.following(
            run.tenant_id, run.run_id, cast(Fanout | None, run.fanout), run.current_step_id, action
        )
        if message is not None:
            self._queue.send(message)

    def _cancel(self, run: Run, actor: str, _: str | None) -> ControlResult:
        return self._apply(run, "cancel", transitions.cancel(run, actor=actor, now=self._clock()))

    def _retry(self, run: Run, actor: str, from_step: str | None) -> ControlResult:
        transitions.leads(transitions.Action.RETRY_FROM, run.status)  # 409 before any read
        _, definition = self._runs.get_with_definition(run.tenant_id, run.run_id)
        failed_step = (run.error or {}).get("step_id") or run.current_step_id or definition.first_step_id()
        record = cast(Fanout | None, run.fanout)
        redrives = (
            record is not None
            and record.get("step_id") == failed_step
            and record["kind"] in ("parallel", "map")
            and not record.get("inline")
        )
        inside = _item_steps(definition, failed_step)
        if from_step is not None and from_step in inside and not redrives:
            raise ValidationFailed(
                f"from_step: '{from_step}' is a step of the items of '{failed_step}', which ran no child"
                f" runs to retry; retry from '{failed_step}' to run every item again",
                details=[{"field": "from_step", "message": "not retryable inside its items"}],
            )
        if redrives and (from_step is None or from_step in inside):
            # A failed parallel or map runs again only the branches or items that did not
            # succeed, each in place, from its failed step or from `from_step` inside it.
            assert record is not None
            until = iso(self._clock() + timedelta(seconds=self._child_wait_seconds))
            again = fanout.redrive(record, from_step)
            commit = transitions.retry_from(run, failed_step, actor=actor, redrive=again, until=until)
            return self._apply(run, "retry", commit, definition)
        start = from_step or failed_step
        if start not in {s.id for s in definition.steps}:
            raise ValidationFailed(
                f"from_step: run has no step '{start}'",
                details=[{"field": "from_step", "message": "unknown step"}],
            )
        return self._apply(run, "retry", transitions.retry_from(run, start, actor=actor), definition)

    def _apply(
        self, run: Run, action: str, commit: Commit | None, definition: WorkflowDefinition | None = None
    ) -> ControlResult:
        """Write the action's commit, send its kick, and see a run it ended off; an action the
        run is already past (None) answers `already_applied`."""
        if commit is None:
            return ControlResult(run.run_id, action, "already_applied", run.status.value)
        updated = self._runs.commit(commit)
        self._kicks.send(updated, commit.kick)
        if updated.is_terminal:
            if definition is None:
                definition = self._runs.get_with_definition(run.tenant_id, run.run_id)[1]
            self._endings.finished(updated, definition)
        return ControlResult(run.run_id, action, "applied", updated.status.value)


def _item_steps(definition: WorkflowDefinition, step_id: str) -> set[str]:
    """The ids of the steps a `parallel`'s branches or a `map`'s items run (none for another
    type): where a retry of a run that failed at that step may start each of them again."""
    try:
        config = definition.step(step_id).config
    except KeyError:
        return set()
    lists = list((config.get("branches") or {}).values()) if isinstance(config.get("branches"), dict) else []
    if isinstance(config.get("steps"), list):
        lists.append(config["steps"])
    return {step["id"] for steps in lists for step in steps if isinstance(step, dict) and "id" in step}


def _decision_delay(attempt: int) -> float:
    # Full jitter: approvers who lost a race to each other do not retry in lock step.
    return full_jitter(attempt, 0.01, 0.2)
