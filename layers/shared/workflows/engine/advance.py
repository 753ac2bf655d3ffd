"""Advance a run by one step in response to one dispatch message.

Invariants (docs/engine.md tests each):
1. A message whose version differs from the run's is stale: it changes nothing.
2. A step's result, the run's new state and the events describing them are one conditional
   write; if another writer moved the run first, this write fails and nothing is recorded.
3. The next message is sent only after that write succeeded; if the process dies in between,
   the redelivered message finds the run one version ahead and, once a grace period has passed,
   re-sends the lost kick.
4. A terminal run, a paused run and a run waiting for approval ignore kicks.
5. Step failures (StepFailed) are recorded on the run; anything else raises so SQS redelivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workflows.clock import Clock, iso, system_clock
from workflows.domain.definition import StepSpec, WorkflowDefinition
from workflows.domain.run import EventType, NewEvent, Run, RunStatus, check_transition
from workflows.engine import retry
from workflows.engine.errors import StepFailed
from workflows.engine.messages import AdvanceMessage, DispatchQueue
from workflows.errors import NotFound, StaleWrite
from workflows.observability import logger
from workflows.steps.base import StepContext, StepResult
from workflows.steps.registry import REGISTRY, parse_config
from workflows.storage.runs import RunRepository

# A kick lost between a commit and its send is re-sent by the redelivered message once the
# run has sat still this long; shorter waits would double-send on ordinary duplicates.
LOST_KICK_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Outcome:
    """What processing a message did; for logs, metrics and tests."""

    action: str
    run_status: str | None = None
    version: int | None = None


class Engine:
    def __init__(
        self,
        runs: RunRepository,
        queue: DispatchQueue,
        *,
        clock: Clock = system_clock,
        max_steps_per_run: int = 1000,
    ) -> None:
        self._runs = runs
        self._queue = queue
        self._clock = clock
        self._max_steps = max_steps_per_run

    def process(self, message: AdvanceMessage) -> Outcome:
        try:
            run, definition = self._runs.get_with_definition(message.tenant_id, message.run_id)
        except NotFound:
            logger.warning("kick for unknown run", extra={"run_id": message.run_id})
            return Outcome("unknown_run")
        if run.version != message.version:
            return self._stale(run, message)
        if run.is_terminal or run.status in (RunStatus.PAUSED, RunStatus.WAITING_APPROVAL):
            return Outcome("ignored", run.status.value, run.version)
        try:
            updated, delay = self._advance(run, definition)
        except StaleWrite:
            # Another writer (a control action, a duplicate kick) moved the run first; its
            # write decides what happens next.
            return Outcome("lost_race", run.status.value, run.version)
        if not updated.is_terminal and updated.status == RunStatus.RUNNING:
            self._kick(updated, delay)
        return Outcome("advanced", updated.status.value, updated.version)

    # ---- internals ------------------------------------------------------------------

    def _stale(self, run: Run, message: AdvanceMessage) -> Outcome:
        lost_kick = (
            run.version == message.version + 1
            and run.status == RunStatus.RUNNING
            and self._clock() - _parse(run.updated_at) >= LOST_KICK_GRACE
        )
        if lost_kick:
            logger.info("re-sending a kick lost after commit", extra={"run_id": run.run_id})
            self._kick(run, 0)
            return Outcome("resent", run.status.value, run.version)
        return Outcome("stale", run.status.value, run.version)

    def _kick(self, run: Run, delay_seconds: float) -> None:
        message = AdvanceMessage(tenant_id=run.tenant_id, run_id=run.run_id, version=run.version)
        self._queue.send(message, delay_seconds=round(delay_seconds))

    def _advance(self, run: Run, definition: WorkflowDefinition) -> tuple[Run, float]:
        now = iso(self._clock())
        events: list[NewEvent] = []
        changes: dict[str, Any] = {}
        if run.status == RunStatus.QUEUED:
            check_transition(run.status, RunStatus.RUNNING)
            changes.update(status=RunStatus.RUNNING, started_at=now)
            events.append(NewEvent(event_type=EventType.RUN_STARTED, payload={"inputs": run.inputs}))
        if run.steps_executed >= self._max_steps:
            error = {"code": "max_steps_exceeded", "message": f"run executed {self._max_steps} steps"}
            return self._fail_run(run, changes, events, error, now), 0
        step_id = run.current_step_id or definition.first_step_id()
        step = definition.step(step_id)
        events.append(
            NewEvent(
                event_type=EventType.STEP_STARTED,
                step_id=step.id,
                payload={"step_type": step.type, "attempt": run.attempt, "started_at": now},
            )
        )
        context = StepContext(
            run_id=run.run_id,
            tenant_id=run.tenant_id,
            workflow_id=run.workflow_id,
            step_id=step.id,
            attempt=run.attempt,
            inputs=run.inputs,
            step_outputs=run.step_outputs,
            last=run.last_output,
        )
        try:
            result = self._execute(step, context)
        except StepFailed as failure:
            return self._on_failure(run, definition, step, failure, changes, events, now)
        return self._on_success(run, definition, step, result, changes, events, now), 0

    @staticmethod
    def _execute(step: StepSpec, context: StepContext) -> StepResult:
        step_type = REGISTRY.get(step.type)
        if step_type is None:
            # A definition is validated on submission; this only happens if a step type is
            # removed while runs that use it are still in flight.
            raise StepFailed(
                "unknown_step_type", f"step type '{step.type}' is not available", retryable=False
            )
        config = parse_config(step_type, step.config)
        return step_type.execute(config, context)

    def _on_success(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        result: StepResult,
        changes: dict[str, Any],
        events: list[NewEvent],
        now: str,
    ) -> Run:
        step_outputs = {**run.step_outputs, step.id: result.output}
        events.append(
            NewEvent(
                event_type=EventType.STEP_COMPLETED,
                step_id=step.id,
                payload={"output": result.output, "attempt": run.attempt, **result.event_fields},
            )
        )
        changes.update(
            step_outputs=step_outputs,
            last_output=result.output,
            steps_executed=run.steps_executed + 1,
            attempt=1,
        )
        next_step = definition.next_after_success(step.id)
        if next_step is None:
            check_transition(RunStatus.RUNNING, RunStatus.SUCCEEDED)
            changes.update(
                status=RunStatus.SUCCEEDED,
                outputs=result.output,
                current_step_id=None,
                ended_at=now,
                status_reason=None,
            )
            events.append(NewEvent(event_type=EventType.RUN_COMPLETED, payload={"outputs": result.output}))
        else:
            changes.update(current_step_id=next_step)
        return self._runs.transition(run, changes, events)

    def _on_failure(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        failure: StepFailed,
        changes: dict[str, Any],
        events: list[NewEvent],
        now: str,
    ) -> tuple[Run, float]:
        error = {"code": failure.code, "message": failure.message, "step_id": step.id}
        decision = retry.decide(step.retry, failure, run.attempt)
        if decision.retry:
            events.append(
                NewEvent(
                    event_type=EventType.STEP_RETRYING,
                    step_id=step.id,
                    payload={
                        "error": error,
                        "attempt": run.attempt,
                        "next_attempt": run.attempt + 1,
                        "delay_seconds": decision.delay_seconds,
                    },
                )
            )
            changes.update(attempt=run.attempt + 1, steps_executed=run.steps_executed + 1)
            return self._runs.transition(run, changes, events), decision.delay_seconds
        events.append(
            NewEvent(
                event_type=EventType.STEP_FAILED,
                step_id=step.id,
                payload={"error": error, "attempt": run.attempt},
            )
        )
        changes.update(steps_executed=run.steps_executed + 1)
        if step.on_failure is not None and step.on_failure != "_end":
            changes.update(
                current_step_id=step.on_failure,
                attempt=1,
                step_outputs={**run.step_outputs, step.id: {"error": error}},
                last_output={"error": error},
            )
            return self._runs.transition(run, changes, events), 0
        return self._fail_run(run, changes, events, error, now), 0

    def _fail_run(
        self, run: Run, changes: dict[str, Any], events: list[NewEvent], error: dict[str, Any], now: str
    ) -> Run:
        changes.update(
            status=RunStatus.FAILED,
            error=error,
            status_reason=error["code"],
            ended_at=now,
        )
        events.append(NewEvent(event_type=EventType.RUN_FAILED, payload={"error": error}))
        return self._runs.transition(run, changes, events)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
