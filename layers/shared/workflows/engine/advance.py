"""Advance a run in response to one dispatch message, one committed step at a time.

Invariants (docs/engine.md; each is tested):
1. A message whose version differs from the run's is stale: it changes nothing.
2. A step's result, the run's new state and the events describing them are one conditional
   write; if another writer moved the run first, this write fails and nothing is recorded.
3. The next message is sent only after that write succeeded. If the process dies in between,
   a redelivered older message finds the run ahead of it and, once the run has sat still past a
   grace period with no wake-up due, re-sends the lost kick.
4. Terminal and paused runs ignore kicks; a run waiting for approval only acts on its timeout.
5. Every run ends (docs/engine.md, "How runs end"). A step's failure is recorded on the run,
   and so is anything else a step raises (`internal_error`, with a correlation id) or an output
   the run cannot store (`output_too_large`). Any other error (storage, a bug here) raises so
   SQS delivers the message again, until its last receive: then the run fails (`give_up`).
6. Consecutive cheap steps (`inline`) run in one invocation while time is left, each committed
   before the next starts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from workflows.clock import Clock, iso, system_clock
from workflows.domain.approvals import quorum
from workflows.domain.definition import END, StepSpec, WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.json import JsonValue
from workflows.domain.messages import AdvanceMessage
from workflows.domain.outputs import INLINE_OUTPUT_BYTES, KEPT_STEP_OUTPUTS, encode, is_ref, remember
from workflows.domain.run import TERMINAL, EventType, NewEvent, Run, RunStatus, check_transition
from workflows.engine import retry
from workflows.errors import NotFound, PayloadTooLarge, StaleWrite
from workflows.observability import logger, metrics
from workflows.ports import ArtifactStore, DispatchQueue, RunStore
from workflows.steps.approval import ApprovalConfig
from workflows.steps.base import StepContext, StepResult, Suspend
from workflows.steps.registry import StepRegistry, parse_config

RemainingMs = Callable[[], int]

# A kick lost between a commit and its send is re-sent by a redelivered older message once the
# run has sat still this long; shorter waits would double-send on ordinary duplicates.
LOST_KICK_GRACE = timedelta(seconds=60)
# Time kept back from the Lambda's remaining time: committing and sending the next kick.
RESERVE_MS = 5_000
DEFAULT_STEP_TIMEOUT_SECONDS = 60.0
# A lease outlives the step's time budget by this much: committing the result takes time too.
LEASE_SLACK = timedelta(seconds=30)
TIMEOUT = "timeout"
INTERNAL_ERROR = "internal_error"
OUTPUT_TOO_LARGE = "output_too_large"
RUN_TOO_LARGE = "run_too_large"
# SQS delays a message at most this long; longer waits are sent in hops.
MAX_DELAY_SECONDS = 900
# Commits of a give-up that lose a race before one lands (each re-reads the run).
GIVE_UP_WRITES = 3


def internal_error(what: str, correlation_id: str | None, exc: BaseException | None = None) -> dict[str, Any]:
    """A run's `error` for a failure of the service itself: no internals, a key to the logs."""
    code = RUN_TOO_LARGE if isinstance(exc, PayloadTooLarge) else INTERNAL_ERROR
    message = what if exc is None else f"{what} ({type(exc).__name__})"
    if correlation_id:
        message += f"; the service's logs hold the details under correlation_id {correlation_id}"
    return {"code": code, "message": message, "correlation_id": correlation_id}


class Slots(Protocol):
    """The per-tenant limit on runs executing at once (engine.slots.TenantSlots)."""

    def take(self, tenant_id: str, run_id: str) -> bool: ...

    def release(self, tenant_id: str, run_id: str) -> None: ...


class Shares(Protocol):
    """Each tenant's share of the dispatcher (engine.shares.TenantShares)."""

    call_recheck_seconds: float

    def admission_delay(self, tenant_id: str, now: float, not_before: float | None, steps: int) -> float: ...

    def charge(self, tenant_id: str, steps: int, now: float) -> None: ...

    def take_call(self, tenant_id: str, holder: str, lease_until: float, now: float) -> bool: ...

    def give_back_call(self, tenant_id: str, holder: str) -> None: ...


class Notifier(Protocol):
    """Run-completion notifications (the definition's `on_completion_webhook`)."""

    def notify(self, run: Run, url: str) -> object: ...


@dataclass(frozen=True)
class Outcome:
    """What processing a message did; for logs, metrics and tests."""

    action: str
    run_status: str | None = None
    version: int | None = None
    steps: int = 0


@dataclass(frozen=True)
class _Advanced:
    run: Run
    wake_in: float | None = None  # seconds until the next (delayed) kick; None = kick now


class RunOutputs(Mapping[str, Any]):
    """A run's step outputs as its templates see them (domain.outputs): inline values as the
    run item holds them, a reference read when a template first asks for it, and a step the
    run item no longer remembers found in the run's events."""

    def __init__(self, runs: RunStore, run: Run) -> None:
        self._runs = runs
        self._run = run
        self._loaded: dict[str, Any] = {}

    def resolve(self, value: object) -> object:
        if not is_ref(value):
            return value
        return self._runs.read_outputs(self._run.tenant_id, self._run.run_id, [value])[0]

    def __getitem__(self, step_id: str) -> Any:
        if step_id in self._loaded:
            return self._loaded[step_id]
        if step_id in self._run.step_outputs:
            value = self._run.step_outputs[step_id]
        elif len(self._run.step_outputs) >= KEPT_STEP_OUTPUTS:
            # Only a run that has forgotten some outputs looks further back.
            found, value = self._runs.find_step_output(self._run.tenant_id, self._run.run_id, step_id)
            if not found:
                raise KeyError(step_id)
        else:
            raise KeyError(step_id)
        self._loaded[step_id] = self.resolve(value)
        return self._loaded[step_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.step_outputs)

    def __len__(self) -> int:
        return len(self._run.step_outputs)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Engine:
    """Advances runs. `artifacts` and `notifier` are factories: most runs save no artifact and
    notify nobody, so the S3 client and the webhook delivery code are built for the first that
    does (cold start)."""

    def __init__(
        self,
        runs: RunStore,
        queue: DispatchQueue,
        registry: StepRegistry,
        *,
        clock: Clock = system_clock,
        max_steps_per_run: int = 1000,
        max_inline_steps: int = 25,
        artifacts: Callable[[], ArtifactStore] | None = None,
        notifier: Callable[[], Notifier] | None = None,
        slots: Slots | None = None,
        slot_recheck_seconds: int = 5,
        max_receives: int = 5,
        sweep_grace_seconds: float | None = None,
        shares: Shares | None = None,
    ) -> None:
        self._runs = runs
        self._queue = queue
        self._registry = registry
        self._clock = clock
        self._max_steps = max_steps_per_run
        self._max_inline = max_inline_steps
        self._artifacts = artifacts
        self._notifier = notifier
        self._slots = slots
        self._slot_recheck = slot_recheck_seconds
        self._max_receives = max_receives
        self._sweep_grace = sweep_grace_seconds
        self._shares = shares

    # ---- the message loop ------------------------------------------------------------

    def process(
        self,
        message: AdvanceMessage,
        remaining_ms: RemainingMs | None = None,
        *,
        receive_count: int = 1,
        correlation_id: str | None = None,
    ) -> Outcome:
        """Act on one message. `receive_count` is how often the queue has delivered it (this
        time included): an error on the last delivery the queue allows fails the run."""
        keys = {"run_id": message.run_id, "receive_count": receive_count, "correlation_id": correlation_id}
        try:
            return self._process(message, remaining_ms, correlation_id)
        except Exception as exc:
            if receive_count < self._max_receives:
                logger.warning(
                    "kick failed; the queue delivers it again",
                    extra={**keys, "error_type": type(exc).__name__},
                    exc_info=True,
                )
                raise
            logger.exception("kick failed on its last delivery; the run fails", extra=keys)
            error = internal_error("the run could not advance", correlation_id, exc)
            return self.give_up(message.tenant_id, message.run_id, error)

    def give_up(self, tenant_id: str, run_id: str, error: dict[str, Any]) -> Outcome:
        """Fail a run that cannot advance (an error on every delivery of its message, or its
        message dead-lettered): its events written, its slot released, its completion webhook
        sent. A run that already ended is left as it is."""
        for _ in range(GIVE_UP_WRITES):
            definition: WorkflowDefinition | None = None
            try:
                try:
                    run, definition = self._runs.get_with_definition(tenant_id, run_id)
                except NotFound:
                    raise
                except Exception:  # noqa: BLE001 - the pinned definition may be what is broken
                    logger.exception("the run's definition cannot be read; failing it without")
                    run = self._runs.get(tenant_id, run_id)
            except NotFound:
                logger.warning("give-up for unknown run", extra={"run_id": run_id})
                return Outcome("unknown_run")
            if run.is_terminal:
                return Outcome("ignored", run.status.value, run.version)
            failed_error = {**error, "step_id": run.current_step_id} if run.current_step_id else dict(error)
            events: list[NewEvent] = []
            if run.current_step_id and run.status in (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL):
                events.append(
                    NewEvent(
                        event_type=EventType.STEP_FAILED,
                        step_id=run.current_step_id,
                        payload={"error": failed_error, "attempt": run.attempt},
                    )
                )
            events.append(NewEvent(event_type=EventType.RUN_FAILED, payload={"error": failed_error}))
            changes: dict[str, Any] = {
                "status": RunStatus.FAILED,
                "error": failed_error,
                "status_reason": failed_error["code"],
                "ended_at": iso(self._clock()),
                "paused_from": None,
                "lease_expires_at": None,
                "next_wake_at": None,
                "wait_until": None,
                "approval": None,
            }
            check_transition_if_changed(run.status, RunStatus.FAILED)
            try:
                failed = self._runs.transition(run, changes, events)
            except StaleWrite:
                continue  # a control action or a late commit moved it: look again
            logger.error(
                "run failed by the service",
                extra={"run_id": run_id, "tenant_id": tenant_id, "error_code": failed_error["code"]},
            )
            metrics.add_metric(name="RunsFailedInternal", unit="Count", value=1)
            self.finished(failed, definition)
            return Outcome("failed", failed.status.value, failed.version)
        raise StaleWrite(f"run {run_id} kept changing while it was being failed")

    def _process(
        self, message: AdvanceMessage, remaining_ms: RemainingMs | None, correlation_id: str | None
    ) -> Outcome:
        try:
            run, definition = self._runs.get_with_definition(message.tenant_id, message.run_id)
        except NotFound:
            logger.warning("kick for unknown run", extra={"run_id": message.run_id})
            return Outcome("unknown_run")
        if run.version != message.version:
            return self._stale(run, message)
        if run.is_terminal or run.status == RunStatus.PAUSED:
            return Outcome("ignored", run.status.value, run.version)
        if run.lease_expires_at and self._clock() < parse_time(run.lease_expires_at):
            # Another dispatcher is executing an at-most-once step; its commit sends the next
            # kick. If it died, the older message it was processing recovers the run (_stale).
            return Outcome("leased", run.status.value, run.version)
        if run.wait_until and self._clock() < parse_time(run.wait_until):
            # A hop of a chained wait (SQS delays at most 15 minutes): not due yet, no write.
            self._kick(run, (parse_time(run.wait_until) - self._clock()).total_seconds())
            return Outcome("waiting", run.status.value, run.version)
        if run.status == RunStatus.WAITING_APPROVAL:
            try:
                updated = self._approval_timed_out(run, definition)
            except StaleWrite:
                return Outcome("lost_race", run.status.value, run.version)
            self._after(updated, definition, None)
            return Outcome("advanced", updated.status.value, updated.version, 1)
        # Tenant concurrency limit: a run starts only with one of its tenant's slots. Without one
        # it stays queued, unchanged, and this same kick comes back later (no write, so the
        # version still matches). Slots are given back in `finished`.
        slots = self._slots
        if run.status == RunStatus.QUEUED and slots is not None and not slots.take(run.tenant_id, run.run_id):
            grace = self._sweep_grace
            if grace is not None and self._clock() - parse_time(run.updated_at) > timedelta(
                seconds=grace / 2
            ):
                # Waiting its turn is activity: a write now and then keeps the sweeper away.
                try:
                    run = self._runs.transition(run, {}, [])
                except StaleWrite:
                    return Outcome("lost_race", run.status.value, run.version)
            self._kick(run, self._slot_recheck)
            return Outcome("throttled", run.status.value, run.version)

        # Fair shares (engine.shares): a kick over its tenant's step rate, or a call out while the
        # tenant's (or everyone's) calls in flight are at their bound, is sent again for later,
        # unchanged: it costs its own tenant time, never another's worker.
        shares = self._shares
        holds_call = False
        expected = 1
        if shares is not None:
            now = self._clock().timestamp()
            # Charged up front for every step this kick may run, so a burst of kicks reserves
            # what it will cost; what it did not run is given back after.
            expected = self._steps_expected(run, definition)
            delay = shares.admission_delay(run.tenant_id, now, message.not_before, expected)
            if delay > 0:
                return self._defer(
                    run, delay, not_before=message.not_before or now + delay, action="deferred"
                )
            step = definition.step(run.current_step_id or definition.first_step_id())
            step_type = self._registry.get(step.type)
            if step_type is not None and not step_type.inline:
                lease_until = now + self._budget(step, remaining_ms) + LEASE_SLACK.total_seconds()
                if not shares.take_call(run.tenant_id, run.run_id, lease_until, now):
                    # Admitted already (`not_before` now): the recheck is not charged again.
                    return self._defer(
                        run, shares.call_recheck_seconds, not_before=now, action="call_deferred"
                    )
                holds_call = True
        try:
            outcome = self._run_steps(run, definition, remaining_ms, correlation_id)
        finally:
            if holds_call and shares is not None:
                shares.give_back_call(run.tenant_id, run.run_id)
        if shares is not None and outcome.steps != expected:
            shares.charge(run.tenant_id, outcome.steps - expected, self._clock().timestamp())
        return outcome

    def _steps_expected(self, run: Run, definition: WorkflowDefinition) -> int:
        """The steps one kick may run: the current step, then the inline steps after it on the
        success path, as many as one invocation runs (a branch or a failure may run fewer)."""
        step_id = run.current_step_id or definition.first_step_id()
        expected = 1
        while expected < self._max_inline:
            following = definition.next_after_success(step_id)
            step_type = self._registry.get(definition.step(following).type) if following else None
            if following is None or step_type is None or not step_type.inline:
                break
            expected += 1
            step_id = following
        return expected

    def _run_steps(
        self,
        run: Run,
        definition: WorkflowDefinition,
        remaining_ms: RemainingMs | None,
        correlation_id: str | None,
    ) -> Outcome:
        steps = 0
        while True:
            try:
                advanced = self._advance(run, definition, remaining_ms, correlation_id)
            except StaleWrite:
                # A control action or a duplicate kick moved the run first; its write decides.
                return Outcome("lost_race", run.status.value, run.version, steps)
            steps += 1
            if run.status == RunStatus.QUEUED:
                metrics.add_metric(name="RunsStarted", unit="Count", value=1)
            updated = advanced.run
            ready = updated.status == RunStatus.RUNNING and advanced.wake_in is None
            if ready and steps < self._max_inline and self._can_inline(updated, definition, remaining_ms):
                run = updated
                continue
            self._after(updated, definition, advanced.wake_in)
            metrics.add_metric(name="StepsExecuted", unit="Count", value=steps)
            return Outcome("advanced", updated.status.value, updated.version, steps)

    def _defer(self, run: Run, delay: float, *, not_before: float, action: str) -> Outcome:
        """Send this kick again after `delay` seconds, the run unchanged. A deferral that would
        leave the run without a write for half the sweeper's grace writes one first (waiting its
        turn is activity), and a long one is sent in hops no longer than that."""
        now = self._clock()
        hop = min(delay, MAX_DELAY_SECONDS)
        grace = self._sweep_grace
        if grace is not None:
            hop = min(hop, grace / 2)
            if (now - parse_time(run.updated_at)).total_seconds() + hop >= grace / 2:
                try:
                    run = self._runs.transition(run, {}, [])
                except StaleWrite:
                    return Outcome("lost_race", run.status.value, run.version)
        message = AdvanceMessage(
            tenant_id=run.tenant_id, run_id=run.run_id, version=run.version, not_before=round(not_before, 3)
        )
        # Rounded up: a kick that came back a moment early would only be deferred again.
        self._queue.send(message, delay_seconds=math.ceil(hop))
        metrics.add_metric(name="KicksDeferred", unit="Count", value=1)
        return Outcome(action, run.status.value, run.version)

    def _after(self, run: Run, definition: WorkflowDefinition, wake_in: float | None) -> None:
        """Send what comes next: a kick, a delayed kick, or nothing for a resting run."""
        if run.status == RunStatus.RUNNING:
            self._kick(run, wake_in or 0)
        elif run.status == RunStatus.WAITING_APPROVAL and run.wait_until:
            self._kick(run, (parse_time(run.wait_until) - self._clock()).total_seconds())
        if run.is_terminal:
            self.finished(run, definition)

    def finished(self, run: Run, definition: WorkflowDefinition | None) -> None:
        """After a terminal commit: metrics and the completion notification (any terminal status;
        none without the definition, which names the webhook)."""
        if self._slots is not None:
            self._slots.release(run.tenant_id, run.run_id)  # idempotent; a no-op if never taken
        metrics.add_metric(name=f"Runs{run.status.value.title()}", unit="Count", value=1)
        if run.ended_at:
            duration = parse_time(run.ended_at) - parse_time(run.started_at or run.created_at)
            metrics.add_metric(name="RunDuration", unit="Milliseconds", value=duration.total_seconds() * 1000)
        if self._notifier is not None and definition is not None and definition.on_completion_webhook:
            self._notifier().notify(run, definition.on_completion_webhook)

    def _can_inline(self, run: Run, definition: WorkflowDefinition, remaining_ms: RemainingMs | None) -> bool:
        if run.current_step_id is None:
            return False
        step_type = self._registry.get(definition.step(run.current_step_id).type)
        if step_type is None or not step_type.inline:
            return False
        return remaining_ms is None or remaining_ms() > 2 * RESERVE_MS

    def _stale(self, run: Run, message: AdvanceMessage) -> Outcome:
        now = self._clock()
        wake_due = run.next_wake_at is None or now >= parse_time(run.next_wake_at) + LOST_KICK_GRACE
        lost_kick = (
            message.version < run.version
            and run.status == RunStatus.RUNNING
            and wake_due
            and now - parse_time(run.updated_at) >= LOST_KICK_GRACE
        )
        if lost_kick:
            logger.info("re-sending a kick lost after commit", extra={"run_id": run.run_id})
            self._kick(run, 0)
            return Outcome("resent", run.status.value, run.version)
        return Outcome("stale", run.status.value, run.version)

    def _kick(self, run: Run, delay_seconds: float) -> None:
        message = AdvanceMessage(tenant_id=run.tenant_id, run_id=run.run_id, version=run.version)
        self._queue.send(message, delay_seconds=max(0, round(delay_seconds)))

    # ---- one step ----------------------------------------------------------------------

    @staticmethod
    def _budget(step: StepSpec, remaining_ms: RemainingMs | None) -> float:
        """Seconds the step may take: its timeout, within the invocation's time left."""
        budget = step.timeout_seconds or DEFAULT_STEP_TIMEOUT_SECONDS
        if remaining_ms is not None:
            budget = max(1.0, min(budget, (remaining_ms() - RESERVE_MS) / 1000))
        return budget

    def _advance(
        self,
        run: Run,
        definition: WorkflowDefinition,
        remaining_ms: RemainingMs | None,
        correlation_id: str | None = None,
    ) -> _Advanced:
        now_dt = self._clock()
        now = iso(now_dt)
        events: list[NewEvent] = []
        changes: dict[str, Any] = {"next_wake_at": None, "lease_expires_at": None}
        if run.status == RunStatus.QUEUED:
            check_transition(run.status, RunStatus.RUNNING)
            changes.update(status=RunStatus.RUNNING, started_at=now)
            events.append(NewEvent(event_type=EventType.RUN_STARTED, payload={"inputs": run.inputs}))
        if run.steps_executed >= self._max_steps:
            error = {"code": "max_steps_exceeded", "message": f"run executed {self._max_steps} steps"}
            return _Advanced(self._finish_failed(run, changes, events, error))
        step = definition.step(run.current_step_id or definition.first_step_id())
        if run.wait_until is None:
            events.append(
                NewEvent(
                    event_type=EventType.STEP_STARTED,
                    step_id=step.id,
                    payload={"step_type": step.type, "attempt": run.attempt, "started_at": now},
                )
            )
        budget = self._budget(step, remaining_ms)
        step_type = self._registry.get(step.type)
        if step_type is not None and step_type.delivery == "at_most_once":
            # Claim first: the lease, and the events so far, are committed before the call out,
            # so a duplicate kick cannot call too. The result then commits onto the claimed run.
            lease = iso(now_dt + timedelta(seconds=budget) + LEASE_SLACK)
            claim = {**changes, "lease_expires_at": lease, "next_wake_at": lease}
            run = self._commit(run, claim, events)
            changes, events = {"next_wake_at": None, "lease_expires_at": None}, []
        outputs = RunOutputs(self._runs, run)
        context = StepContext(
            run_id=run.run_id,
            tenant_id=run.tenant_id,
            workflow_id=run.workflow_id,
            step_id=step.id,
            attempt=run.attempt,
            inputs=run.inputs,
            step_outputs=outputs,
            last=outputs.resolve(run.last_output),
            now=now_dt,
            wait_until=parse_time(run.wait_until) if run.wait_until else None,
            time_budget_seconds=budget,
        )
        try:
            started = time.monotonic()
            try:
                outcome = self._execute(step, context)
            finally:
                elapsed_ms = (time.monotonic() - started) * 1000
                metrics.add_metric(name="StepDuration", unit="Milliseconds", value=elapsed_ms)
        except StepFailed as failure:
            return self._on_failure(run, definition, step, failure, changes, events)
        except Exception as exc:  # noqa: BLE001 - recorded on the run, logged with its traceback
            # A bug in the step, or a template that exhausted the interpreter: a failure of this
            # step (its retry policy and on_failure apply), not a message to redeliver forever.
            logger.exception(
                "step raised an internal error",
                extra={"run_id": run.run_id, "step_id": step.id, "correlation_id": correlation_id},
            )
            error = internal_error("the step stopped on an internal error", correlation_id, exc)
            internal = StepFailed(INTERNAL_ERROR, error["message"], correlation_id=correlation_id)
            return self._on_failure(run, definition, step, internal, changes, events)
        if isinstance(outcome, Suspend):
            return self._suspend(run, step, outcome, changes, events, now_dt)
        return _Advanced(self._on_success(run, definition, step, outcome, changes, events))

    def _execute(self, step: StepSpec, context: StepContext) -> StepResult | Suspend:
        step_type = self._registry.get(step.type)
        if step_type is None:
            # Definitions are validated on submission; this only happens if a step type is
            # removed while runs that use it are still in flight.
            raise StepFailed(
                "unknown_step_type", f"step type '{step.type}' is not available", retryable=False
            )
        config = parse_config(step_type, step.config)
        # Imported here: jinja2 stays off the cold-start path until a step runs.
        from workflows.templating import render_budget

        # Every template the step renders shares one budget of time (at most the step's own),
        # loop iterations and allocations.
        with render_budget(context.time_budget_seconds):
            return step_type.execute(config, context)

    def _suspend(
        self,
        run: Run,
        step: StepSpec,
        outcome: Suspend,
        changes: dict[str, Any],
        events: list[NewEvent],
        now: datetime,
    ) -> _Advanced:
        until = iso(outcome.until)
        changes.update(wait_until=until, next_wake_at=until)
        if outcome.waiting_approval:
            request = {"step_id": step.id, **outcome.payload, "requested_at": iso(now), "timeout_at": until}
            check_transition(RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)
            changes.update(status=RunStatus.WAITING_APPROVAL, approval=request)
            events.append(NewEvent(event_type=EventType.WAITING_APPROVAL, step_id=step.id, payload=request))
            return _Advanced(self._commit(run, changes, events))
        return _Advanced(self._commit(run, changes, events), (outcome.until - now).total_seconds())

    def complete_step(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        result: StepResult,
        changes: dict[str, Any],
        events: list[NewEvent],
    ) -> Run:
        """Record a step's result and move on; public so approve can finish an approval step."""
        return self._on_success(run, definition, step, result, changes, events)

    def _on_success(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        result: StepResult,
        changes: dict[str, Any],
        events: list[NewEvent],
    ) -> Run:
        # As they were before this result: an output the run cannot store fails the step instead.
        changes_before, events_before = dict(changes), list(events)
        try:
            return self._record_success(run, definition, step, result, changes, events)
        except PayloadTooLarge as exc:
            failure = StepFailed(
                OUTPUT_TOO_LARGE, f"the step's output cannot be stored: {exc.message}", retryable=False
            )
            return self._on_failure(run, definition, step, failure, changes_before, events_before).run

    def _record_success(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        result: StepResult,
        changes: dict[str, Any],
        events: list[NewEvent],
    ) -> Run:
        fields = dict(result.event_fields)
        if fields.pop("save_artifact", False) and self._artifacts is not None:
            fields["artifact_id"] = self._save_artifact(run, step, result.output)
        stored = self._stored(run, result.output)
        events.append(
            NewEvent(
                event_type=EventType.STEP_COMPLETED,
                step_id=step.id,
                payload={"output": stored, "attempt": run.attempt, **fields},
            )
        )
        changes.update(
            step_outputs=remember(run.step_outputs, step.id, stored),
            last_output=stored,
            steps_executed=run.steps_executed + 1,
            attempt=1,
            wait_until=None,
            approval=None,
        )
        if result.next_step is not None:
            next_step = None if result.next_step == END else result.next_step
        else:
            next_step = definition.next_after_success(step.id)
        if next_step is None:
            return self._finish_succeeded(run, changes, events, stored)
        changes.update(current_step_id=next_step)
        return self._commit(run, changes, events)

    def _stored(self, run: Run, value: object) -> Any:
        """What the run records for an output: the value, or past INLINE_OUTPUT_BYTES a
        reference to the item it is written to now (PayloadTooLarge if it cannot be)."""
        if len(encode(value)) <= INLINE_OUTPUT_BYTES:
            return value
        return self._runs.put_output(run.tenant_id, run.run_id, value)

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

    def fail_step(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        failure: StepFailed,
        changes: dict[str, Any],
        events: list[NewEvent],
        *,
        output: dict[str, Any] | None = None,
    ) -> Run:
        """Record a failed step (no retry); public so reject can fail an approval step."""
        failure.retryable = False
        return self._on_failure(run, definition, step, failure, changes, events, output).run

    def _on_failure(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        failure: StepFailed,
        changes: dict[str, Any],
        events: list[NewEvent],
        output: dict[str, Any] | None = None,
    ) -> _Advanced:
        error: dict[str, Any] = {"code": failure.code, "message": failure.message, "step_id": step.id}
        if failure.correlation_id:
            error["correlation_id"] = failure.correlation_id
        decision = retry.decide(step.retry, failure, run.attempt)
        changes.update(steps_executed=run.steps_executed + 1, wait_until=None, approval=None)
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
            wake = self._clock() + timedelta(seconds=decision.delay_seconds)
            changes.update(attempt=run.attempt + 1, next_wake_at=iso(wake))
            metrics.add_metric(name="StepRetries", unit="Count", value=1)
            return _Advanced(self._commit(run, changes, events), decision.delay_seconds)
        timed_out = failure.code == TIMEOUT or failure.code.endswith("_timeout")
        event_type = EventType.STEP_TIMEOUT if timed_out else EventType.STEP_FAILED
        payload: dict[str, Any] = {"error": error, "attempt": run.attempt}
        metrics.add_metric(name="StepFailures", unit="Count", value=1)
        route = (step.on_timeout if timed_out else None) or step.on_failure
        if route is None:
            if output is not None:
                # A decision that failed the run is still the step's output: a repeat of it is
                # recognised from this event (RunControl.decide).
                payload["output"] = self._stored(run, {**output, "error": error})
            events.append(NewEvent(event_type=event_type, step_id=step.id, payload=payload))
            return _Advanced(self._finish_failed(run, changes, events, error))
        # A routed failure is the step's output (`steps.<id>.output.error`), recorded in its event.
        stored = self._stored(run, {**(output or {}), "error": error})
        events.append(NewEvent(event_type=event_type, step_id=step.id, payload={**payload, "output": stored}))
        kept = remember(run.step_outputs, step.id, stored)
        changes.update(step_outputs=kept, last_output=stored, attempt=1)
        if route == END:
            # The failure was handled by routing it to the end: the run finishes successfully.
            return _Advanced(self._finish_succeeded(run, changes, events, stored))
        changes.update(current_step_id=route)
        return _Advanced(self._commit(run, changes, events))

    def _approval_timed_out(self, run: Run, definition: WorkflowDefinition) -> Run:
        step = definition.step(run.current_step_id or definition.first_step_id())
        config = parse_config(self._registry.get(step.type), step.config)  # type: ignore[arg-type]
        assert isinstance(config, ApprovalConfig)
        changes: dict[str, Any] = {"status": RunStatus.RUNNING, "next_wake_at": None}
        # Approvals short of the quorum do not decide anything: `on_timeout` does, and the
        # output still lists who had approved.
        required, granted = quorum(run.approval)
        approvers = [entry["approver"] for entry in granted]
        events = [
            NewEvent(
                event_type=EventType.STEP_TIMEOUT,
                step_id=step.id,
                payload={
                    "on_timeout": config.on_timeout,
                    "approvals": len(approvers),
                    "required_approvals": required,
                },
            )
        ]
        decision: dict[str, Any] = {
            "comment": None,
            "fields": {},
            "approver": "system:timeout",
            "approvers": approvers,
        }
        if config.on_timeout == "approve":
            output = {"decision": "approve", **decision}
            events.append(NewEvent(event_type=EventType.APPROVAL_GRANTED, step_id=step.id, payload=output))
            return self.complete_step(run, definition, step, StepResult(output=output), changes, events)
        if config.on_timeout == "reject":
            output = {"decision": "reject", **decision}
            events.append(NewEvent(event_type=EventType.APPROVAL_REJECTED, step_id=step.id, payload=output))
            failure = StepFailed("approval_rejected", "approval timed out and was rejected", retryable=False)
            return self.fail_step(run, definition, step, failure, changes, events, output=output)
        failure = StepFailed(TIMEOUT, "approval timed out", retryable=False)
        return self._on_failure(run, definition, step, failure, changes, events[:0]).run

    # ---- endings and the one write -----------------------------------------------------

    def _finish_succeeded(
        self, run: Run, changes: dict[str, Any], events: list[NewEvent], outputs: JsonValue
    ) -> Run:
        # The run ends when its terminal commit is built, after its last step executed, not when
        # that step started (up to a step's whole time budget earlier): so in _finish_failed too.
        changes.update(
            status=RunStatus.SUCCEEDED,
            outputs=outputs,
            current_step_id=None,
            ended_at=iso(self._clock()),
            status_reason=None,
            paused_from=None,
        )
        events.append(NewEvent(event_type=EventType.RUN_COMPLETED, payload={"outputs": outputs}))
        return self._commit(run, changes, events)

    def _finish_failed(
        self, run: Run, changes: dict[str, Any], events: list[NewEvent], error: dict[str, Any]
    ) -> Run:
        changes.update(
            status=RunStatus.FAILED,
            error=error,
            status_reason=error["code"],
            ended_at=iso(self._clock()),
            paused_from=None,
        )
        events.append(NewEvent(event_type=EventType.RUN_FAILED, payload={"error": error}))
        return self._commit(run, changes, events)

    def _commit(self, run: Run, changes: dict[str, Any], events: list[NewEvent]) -> Run:
        """One conditional write. If the run was paused while this step executed, the step's
        result still commits (pause acts at the step boundary) and the run stays paused."""
        target = changes.get("status", run.status)
        # A queued run that starts and finishes in one write, or an approval that resumes the
        # run and finishes it, passes through running.
        through_running = "started_at" in changes or (
            run.status == RunStatus.WAITING_APPROVAL and target in TERMINAL
        )
        check_transition_if_changed(RunStatus.RUNNING if through_running else run.status, target)
        changes = run.with_progress(changes)
        try:
            return self._runs.transition(run, changes, events)
        except StaleWrite:
            fresh = self._runs.get(run.tenant_id, run.run_id)
            same_step = (
                fresh.status == RunStatus.PAUSED
                and fresh.current_step_id == run.current_step_id
                and fresh.attempt == run.attempt
                and fresh.steps_executed == run.steps_executed
            )
            if not same_step:
                raise
            merged = dict(changes)
            if target not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                merged.pop("status", None)
                if target in (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL):
                    merged["paused_from"] = target
            events = [e for e in events if e.event_type != EventType.RUN_STARTED]
            return self._runs.transition(fresh, merged, events)


def check_transition_if_changed(current: RunStatus, target: RunStatus) -> None:
    if current != target:
        check_transition(current, target)
