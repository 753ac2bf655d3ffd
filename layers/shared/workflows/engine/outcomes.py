"""A step's outcome as a commit: its output stored, its retry policy and routes applied, and the
one conditional write that records it (the engine's steps and a person's approval decisions).

An outcome is a `Build`: a function from the run as read to its commit (domain.transitions), so
the same outcome can be written over the run as it is found at commit time. Side effects (an
output too big for the run item written to its own item, an artifact saved) happen once, when
the build is made, never when it is applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workflows.clock import Clock, system_clock
from workflows.domain import transitions
from workflows.domain.backoff import step_retry_delay
from workflows.domain.definition import END, StepSpec, WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.json import JsonValue
from workflows.domain.run import NewEvent, Run, RunStatus
from workflows.domain.transitions import Commit, Kick, RunError
from workflows.engine.outputs import store_output
from workflows.errors import InvalidState, PayloadTooLarge, StaleWrite
from workflows.observability import metrics
from workflows.ports import ArtifactStore, RunLog, RunOutputStore
from workflows.steps.base import StepResult

TIMEOUT = "timeout"
OUTPUT_TOO_LARGE = "output_too_large"

Build = Callable[[Run], Commit]


def step_error(step: StepSpec, failure: StepFailed) -> RunError:
    error: RunError = {"code": failure.code, "message": failure.message, "step_id": step.id}
    if failure.correlation_id:
        error["correlation_id"] = failure.correlation_id
    return error


class StepCommits:
    """`artifacts` is a factory: most runs save no artifact, so the S3 client is built for the
    first that does (cold start)."""

    def __init__(
        self,
        runs: RunLog,
        outputs: RunOutputStore,
        *,
        artifacts: Callable[[], ArtifactStore] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._runs = runs
        self._outputs = outputs
        self._artifacts = artifacts
        self._clock = clock

    def succeeded(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        result: StepResult,
        *,
        cause: Sequence[NewEvent] = (),
    ) -> Build:
        """The step's result recorded and the run moved on (its next step, or its end). An
        output the run cannot store fails the step instead (`output_too_large`)."""
        now = self._clock()
        fields = dict(result.event_fields)
        try:
            if fields.pop("save_artifact", False) and self._artifacts is not None:
                fields["artifact_id"] = self._save_artifact(run, step, result.output)
            stored = store_output(self._outputs, run, result.output)
        except PayloadTooLarge as exc:
            return self.too_large(run, step, exc, cause=cause)
        if result.next_step is not None:
            next_step = None if result.next_step == END else result.next_step
        else:
            next_step = definition.next_after_success(step.id)

        def build(base: Run) -> Commit:
            return transitions.complete_step(
                base, step.id, stored, next_step=next_step, now=now, fields=fields, cause=cause
            )

        return build

    def too_large(
        self, run: Run, step: StepSpec, exc: PayloadTooLarge, *, cause: Sequence[NewEvent] = ()
    ) -> Build:
        failure = StepFailed(
            OUTPUT_TOO_LARGE, f"the step's output cannot be stored: {exc.message}", retryable=False
        )
        return self.failed(run, step, failure, cause=cause)

    def failed(
        self,
        run: Run,
        step: StepSpec,
        failure: StepFailed,
        *,
        output: dict[str, Any] | None = None,
        cause: Sequence[NewEvent] = (),
    ) -> Build:
        """The step failed: retried after its policy's backoff, or routed by `on_failure` /
        `on_timeout`, or the run fails. `output` (a rejected decision) is recorded with it."""
        now = self._clock()
        error = step_error(step, failure)
        delay = step_retry_delay(step.retry, failure, run.attempt)
        if delay is not None:
            metrics.add_metric(name="StepRetries", unit="Count", value=1)
            return lambda base: transitions.retry_later(base, step.id, error, delay_seconds=delay, now=now)
        metrics.add_metric(name="StepFailures", unit="Count", value=1)
        timed_out = failure.code == TIMEOUT or failure.code.endswith("_timeout")
        route = (step.on_timeout if timed_out else None) or step.on_failure
        stored: Any = None
        if route is not None or output is not None:
            # A routed failure is the step's output (`steps.<id>.output.error`); a decision that
            # failed the run is still the step's output: a repeat of it is recognised from it.
            stored = store_output(self._outputs, run, {**(output or {}), "error": dict(error)})

        def build(base: Run) -> Commit:
            return transitions.fail_step(
                base, step.id, error, timed_out=timed_out, route=route, output=stored, now=now, cause=cause
            )

        return build

    def write(
        self, read: Run, build: Build, *, too_large: Callable[[PayloadTooLarge], Build] | None = None
    ) -> Written:
        """Write the build's commit over `read`: the run as stored and the kick to send.

        A run paused while the step executed is written too (pause acts at the step boundary):
        the same outcome, built again over the paused run, keeps it paused. A commit too big for
        the run item is replaced by `too_large`'s, if given. StaleWrite if the run moved
        otherwise."""
        try:
            return self._write(read, build)
        except PayloadTooLarge as exc:
            if too_large is None:
                raise
            return self._write(read, too_large(exc))

    def _write(self, read: Run, build: Build) -> Written:
        commit = build(read)
        try:
            return _stored(commit, self._runs.commit(commit))
        except StaleWrite:
            fresh = self._runs.get(read.tenant_id, read.run_id)
            # Paused, and nothing else moved: not the step, nor its wait, lease or decisions.
            same_step = fresh.status == RunStatus.PAUSED and all(
                getattr(fresh, name) == getattr(read, name)
                for name in (
                    "current_step_id",
                    "attempt",
                    "steps_executed",
                    "wait_until",
                    "lease_expires_at",
                    "approval",
                    "signal_wait",
                    "fanout",
                )
            )
            if not same_step:
                raise
            try:
                again = build(fresh)
            except InvalidState as exc:
                raise StaleWrite(f"run {read.run_id} was paused before its step could commit") from exc
            return _stored(again, self._runs.commit(again))

    def _save_artifact(self, run: Run, step: StepSpec, output: JsonValue) -> str:
        """Store a step's output as an artifact before the commit that records it (a lost
        commit leaves an unreferenced object, which the bucket's lifecycle rule removes)."""
        assert self._artifacts is not None
        if isinstance(output, dict) and isinstance(output.get("text"), str):
            content, mime, name = output["text"].encode(), "text/plain; charset=utf-8", f"{step.id}.txt"
        else:
            content, mime, name = json.dumps(output).encode(), "application/json", f"{step.id}.json"
        meta = self._artifacts().save(
            run.tenant_id, run.run_id, step_id=step.id, name=name, content=content, mime_type=mime
        )
        return meta.artifact_id


@dataclass(frozen=True)
class Written:
    """A commit once written: the run as stored (its version) and the kick to send now."""

    run: Run
    kick: Kick | None


def _stored(commit: Commit, run: Run) -> Written:
    return Written(run, commit.kick)
