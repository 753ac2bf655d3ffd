"""Advance a run in response to one dispatch message, one committed step at a time.

Invariants (docs/engine.md; each is tested):
1. A message whose version differs from the run's is stale: it changes nothing.
2. A step's result, the run's new state and the events describing them are one conditional
   write (a transition of domain.transitions); if another writer moved the run first, this
   write fails and nothing is recorded.
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

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from workflows.clock import Clock, iso, parse_iso, system_clock
from workflows.domain import transitions
from workflows.domain.definition import StepSpec, WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.messages import AdvanceMessage
from workflows.domain.outputs import is_ref
from workflows.domain.run import Run, RunStatus
from workflows.domain.signals import SignalWait
from workflows.domain.transitions import Commit, Kick
from workflows.engine.children import Children
from workflows.engine.endings import INTERNAL_ERROR, Endings, Slots, internal_error
from workflows.engine.kicks import MAX_DELAY_SECONDS, Kicks
from workflows.engine.outcomes import Build, StepCommits, Written
from workflows.engine.outputs import RunOutputs, WithParent
from workflows.engine.signals import SignalWaits
from workflows.errors import NotFound, PayloadTooLarge, StaleWrite
from workflows.observability import count, logger, metrics
from workflows.ports import RunLog, RunOutputStore
from workflows.steps.base import DecidesAtDeadline, Spawn, StepContext, StepResult, Suspend
from workflows.steps.registry import StepRegistry, parse_config, reads

RemainingMs = Callable[[], int]

# A kick lost between a commit and its send is re-sent by a redelivered older message once the
# run has sat still this long; shorter waits would double-send on ordinary duplicates.
LOST_KICK_GRACE = timedelta(seconds=60)
# Time kept back from the Lambda's remaining time: committing and sending the next kick.
RESERVE_MS = 5_000
DEFAULT_STEP_TIMEOUT_SECONDS = 60.0
# A lease outlives the step's time budget by this much: committing the result takes time too.
LEASE_SLACK = timedelta(seconds=30)


class Shares(Protocol):
    """Each tenant's share of the dispatcher (engine.shares.TenantShares)."""

    call_recheck_seconds: float

    def admission_delay(self, tenant_id: str, now: float, not_before: float | None, steps: int) -> float: ...

    def charge(self, tenant_id: str, steps: int, now: float) -> None: ...

    def take_call(self, tenant_id: str, holder: str, lease_until: float, now: float) -> bool: ...

    def give_back_call(self, tenant_id: str, holder: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What processing a message did; for logs, metrics and tests."""

    action: str
    run_status: str | None = None
    version: int | None = None
    steps: int = 0

    @classmethod
    def of(cls, action: str, run: Run, steps: int = 0) -> Outcome:
        return cls(action, run.status.value, run.version, steps)


class Engine:
    def __init__(
        self,
        runs: RunLog,
        outputs: RunOutputStore,
        kicks: Kicks,
        registry: StepRegistry,
        commits: StepCommits,
        endings: Endings,
        *,
        clock: Clock = system_clock,
        max_steps_per_run: int = 1000,
        max_inline_steps: int = 25,
        slots: Slots | None = None,
        slot_recheck_seconds: int = 5,
        max_receives: int = 5,
        sweep_grace_seconds: float | None = None,
        shares: Shares | None = None,
        signals: SignalWaits | None = None,
        children: Children | None = None,
    ) -> None:
        self._runs = runs
        self._outputs = outputs
        self._kicks = kicks
        self._registry = registry
        self._commits = commits
        self._endings = endings
        self._clock = clock
        self._max_steps = max_steps_per_run
        self._max_inline = max_inline_steps
        self._slots = slots
        self._slot_recheck = slot_recheck_seconds
        self._max_receives = max_receives
        self._sweep_grace = sweep_grace_seconds
        self._shares = shares
        self._signals = signals
        self._children = children
        # (definition, step) -> whether the step's templates name `last` (steps.registry.reads).
        self._last_readers: dict[tuple[str, str], bool] = {}

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

    def give_up(self, tenant_id: str, run_id: str, error: transitions.RunError) -> Outcome:
        """Fail a run that cannot advance (Endings.give_up)."""
        return Outcome(self._endings.give_up(tenant_id, run_id, error))

    def _process(
        self, message: AdvanceMessage, remaining_ms: RemainingMs | None, correlation_id: str | None
    ) -> Outcome:
        try:
            run, definition = self._runs.get_with_definition(message.tenant_id, message.run_id)
        except NotFound:
            logger.warning("kick for unknown run", extra={"run_id": message.run_id})
            return Outcome("unknown_run")
        resting = self._not_now(run, message)
        if resting is not None:
            return resting
        if self._children is not None and self._children.waits(run):
            return self._children_kick(run, definition, message)
        # A child's first kick reads its parent once: a child its parent no longer waits for
        # (created by a commit that lost its race to the step's end) never runs.
        first_of_child = run.status == RunStatus.QUEUED and run.child is not None
        if first_of_child and self._children is not None and self._children.orphaned(run):
            self._children.drop(run)
            return Outcome.of("orphan_cancelled", self._runs.get(run.tenant_id, run.run_id))
        if run.status == RunStatus.WAITING_APPROVAL:
            return self._deadline(run, definition)
        if run.status == RunStatus.QUEUED and not self._has_slot(run):
            return self._defer(run, self._slot_recheck, not_before=None, action="throttled")
        return self._admitted(run, definition, message, remaining_ms, correlation_id)

    def _children_kick(self, run: Run, definition: WorkflowDefinition, message: AdvanceMessage) -> Outcome:
        """A kick for a step that waits for children (engine.children). Items run inside the run
        are steps like any: their batch is admitted and charged by the tenant's share."""
        assert self._children is not None
        shares = self._shares
        expected = self._children.batch_steps(run) if shares is not None else 0
        now = self._clock().timestamp()
        if shares is not None and expected:
            delay = shares.admission_delay(run.tenant_id, now, message.not_before, expected)
            if delay > 0:
                return self._defer(
                    run, delay, not_before=message.not_before or now + delay, action="deferred"
                )
        action, moved, steps = self._children.advance(run, definition)
        if shares is not None and expected and steps != expected:
            shares.charge(run.tenant_id, steps - expected, self._clock().timestamp())
        if steps:
            metrics.add_metric(name="StepsExecuted", unit="Count", value=steps)
        return Outcome.of(action, moved, steps)

    def _not_now(self, run: Run, message: AdvanceMessage) -> Outcome | None:
        """What a kick does when the run has nothing for it to do now; None when it has."""
        if run.is_terminal and run.child is not None:
            # A child that ended: its parent is told again (the first message may have been lost).
            self._endings.tell_parent(run)
        if run.version != message.version:
            return self._stale(run, message)
        if run.is_terminal or run.status == RunStatus.PAUSED:
            return Outcome.of("ignored", run)
        if run.fanout is not None:
            return None  # its step waits for children: the kick is theirs (Children.advance)
        now = self._clock()
        if run.lease_expires_at and now < parse_iso(run.lease_expires_at):
            # Another dispatcher is executing an at-most-once step; its commit sends the next kick.
            return self._after_lease(run, now, "leased")
        wait_until = run.wait_until
        if wait_until and now < parse_iso(wait_until):
            if run.signal_wait is not None and self._signals is not None:
                # Signals sent before the wait began (its lookback), or whose delivery was lost.
                looked, completed = self._signals.look_back(run)
                if completed or looked.version != run.version:
                    return Outcome.of("signalled", looked)  # its commit sent what comes next
            # A hop of a chained wait (SQS delays at most 15 minutes): not due yet, no write.
            self._kicks.send(run, Kick((parse_iso(wait_until) - now).total_seconds()))
            return Outcome.of("waiting", run)
        if run.next_wake_at and now < parse_iso(run.next_wake_at):
            # A retry's backoff longer than SQS's longest delay: not due yet, no write.
            self._kicks.send(run, Kick((parse_iso(run.next_wake_at) - now).total_seconds()))
            return Outcome.of("waiting", run)
        return None

    def _has_slot(self, run: Run) -> bool:
        """Tenant concurrency limit: a run starts only with one of its tenant's slots. Without one
        it stays queued and this kick comes back later. Slots are given back in Endings.finished.
        A child its parent waits for (a branch, an item, a waited-for workflow) runs within its
        parent's slot; a child nobody waits for (`wait: false`) takes one of its own."""
        return self._slots is None or run.child is not None or self._slots.take(run.tenant_id, run.run_id)

    def _admitted(
        self,
        run: Run,
        definition: WorkflowDefinition,
        message: AdvanceMessage,
        remaining_ms: RemainingMs | None,
        correlation_id: str | None,
    ) -> Outcome:
        """Fair shares (engine.shares): a kick over its tenant's step rate, or a call out while the
        tenant's (or everyone's) calls in flight are at their bound, is sent again for later,
        unchanged: it costs its own tenant time, never another's worker."""
        shares = self._shares
        if shares is None:
            return self._run_steps(run, definition, remaining_ms, correlation_id)
        now = self._clock().timestamp()
        # Charged up front for every step this kick may run, so a burst of kicks reserves what it
        # will cost; what it did not run is given back after.
        expected = self._steps_expected(run, definition)
        delay = shares.admission_delay(run.tenant_id, now, message.not_before, expected)
        if delay > 0:
            return self._defer(run, delay, not_before=message.not_before or now + delay, action="deferred")
        step = self._step(run, definition)
        step_type = self._registry.get(step.type)
        holds_call = step_type is not None and not step_type.inline
        if holds_call:
            lease_until = now + self._budget(step, remaining_ms) + LEASE_SLACK.total_seconds()
            if not shares.take_call(run.tenant_id, run.run_id, lease_until, now):
                # Admitted already (`not_before` now): the recheck is not charged again.
                return self._defer(run, shares.call_recheck_seconds, not_before=now, action="call_deferred")
        try:
            outcome = self._run_steps(run, definition, remaining_ms, correlation_id)
        finally:
            if holds_call:
                shares.give_back_call(run.tenant_id, run.run_id)
        if outcome.steps != expected:
            shares.charge(run.tenant_id, outcome.steps - expected, self._clock().timestamp())
        return outcome

    def _steps_expected(self, run: Run, definition: WorkflowDefinition) -> int:
        """The steps one kick may run: the current step, then the inline steps after it on the
        success path, as many as one invocation runs (a branch or a failure may run fewer)."""
        step_id = self._step(run, definition).id
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
                written = self._advance(run, definition, remaining_ms, correlation_id)
            except StaleWrite:
                # A control action or a duplicate kick moved the run first; its write decides.
                return Outcome.of("lost_race", run, steps)
            steps += 1
            if run.status == RunStatus.QUEUED:
                metrics.add_metric(name="RunsStarted", unit="Count", value=1)
            updated = written.run
            # A step suspended (a delay, a wait for signals) is not run again here: its kick does.
            # Nor a step retried after a backoff, even one of 0 s: its kick runs it.
            # Nor a step whose children (or items run inside the run) are now the run's work.
            ready = (
                updated.status == RunStatus.RUNNING
                and updated.fanout is None
                and updated.wait_until is None
                and updated.next_wake_at is None
                and written.kick == Kick()
            )
            if ready and steps < self._max_inline and self._can_inline(updated, definition, remaining_ms):
                run = updated
                continue
            self._after(written, definition)
            metrics.add_metric(name="StepsExecuted", unit="Count", value=steps)
            return Outcome.of("advanced", updated, steps)

    def _defer(self, run: Run, delay: float, *, not_before: float | None, action: str) -> Outcome:
        """Send this kick again after `delay` seconds, the run unchanged. A deferral that would
        leave the run without a write for half the sweeper's grace writes one first (waiting its
        turn is activity), and a long one is sent in hops no longer than that."""
        hop = min(delay, MAX_DELAY_SECONDS)
        grace = self._sweep_grace
        if grace is not None:
            hop = min(hop, grace / 2)
            if (self._clock() - parse_iso(run.updated_at)).total_seconds() + hop >= grace / 2:
                try:
                    run = self._runs.commit(transitions.touch(run))
                except StaleWrite:
                    return Outcome.of("lost_race", run)
        self._kicks.send(run, Kick(hop, not_before))
        count("KicksDeferred", reason=action)
        return Outcome.of(action, run)

    def _after(self, written: Written, definition: WorkflowDefinition) -> None:
        """Send what comes next: a kick, a delayed kick, or nothing for a resting run."""
        self._kicks.send(written.run, written.kick)
        if written.run.is_terminal:
            self._endings.finished(written.run, definition)

    def _can_inline(self, run: Run, definition: WorkflowDefinition, remaining_ms: RemainingMs | None) -> bool:
        if run.current_step_id is None:
            return False
        step_type = self._registry.get(definition.step(run.current_step_id).type)
        if step_type is None or not step_type.inline:
            return False
        return remaining_ms is None or remaining_ms() > 2 * RESERVE_MS

    def _after_lease(self, run: Run, now: datetime, action: str) -> Outcome:
        """A kick that finds an at-most-once step's lease live comes back when the lease ends:
        by then the step's commit has made it stale, or the dispatcher that held the lease died
        and this kick claims the step again. One delayed message, and a crash mid-call costs the
        run the lease's length, not the sweeper's grace."""
        assert run.lease_expires_at is not None
        self._kicks.send(run, Kick((parse_iso(run.lease_expires_at) - now).total_seconds() + 1))
        return Outcome.of(action, run)

    def _stale(self, run: Run, message: AdvanceMessage) -> Outcome:
        now = self._clock()
        if (
            message.version < run.version
            and run.status == RunStatus.RUNNING
            and run.lease_expires_at
            and now < parse_iso(run.lease_expires_at)
        ):
            # The kick the leaseholder was working on, delivered again: it may have died mid-call.
            return self._after_lease(run, now, "stale_leased")
        wake_due = run.next_wake_at is None or now >= parse_iso(run.next_wake_at) + LOST_KICK_GRACE
        lost_kick = (
            message.version < run.version
            and run.status == RunStatus.RUNNING
            and wake_due
            and now - parse_iso(run.updated_at) >= LOST_KICK_GRACE
        )
        if lost_kick:
            logger.info("re-sending a kick lost after commit", extra={"run_id": run.run_id})
            self._kicks.send(run)
            return Outcome.of("resent", run)
        return Outcome.of("stale", run)

    # ---- one step ----------------------------------------------------------------------

    @staticmethod
    def _step(run: Run, definition: WorkflowDefinition) -> StepSpec:
        return definition.step(run.current_step_id or definition.first_step_id())

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
        correlation_id: str | None,
    ) -> Written:
        """Run the run's current step and commit its outcome (with the run's start and the
        step's beginning, unless a claim committed them first)."""
        now = self._clock()
        step = self._step(run, definition)
        if run.steps_executed >= self._max_steps:
            error: transitions.RunError = {
                "code": "max_steps_exceeded",
                "message": f"run executed {self._max_steps} steps",
            }
            return self._commits.write(
                run, lambda base: _required(transitions.give_up(base, error, now=now, blame_step=False))
            )
        opening: Build | None = _opening(step, now)
        budget = self._budget(step, remaining_ms)
        step_type = self._registry.get(step.type)
        if step_type is not None and step_type.delivery == "at_most_once":
            # Claim first: the lease, and the events so far, are committed before the call out,
            # so a duplicate kick cannot call too. The result then commits onto the claimed run.
            lease = iso(now + timedelta(seconds=budget) + LEASE_SLACK)
            run = self._commits.write(
                run, _then(opening, lambda base: transitions.claim(base, lease_until=lease))
            ).run
            opening = None
        result = self._outcome(run, definition, step, now, budget, correlation_id)
        claimed, first = run, opening

        def too_large(exc: PayloadTooLarge) -> Build:
            return _then(first, self._commits.too_large(claimed, step, exc))

        return self._commits.write(run, _then(opening, result), too_large=too_large)

    def _outcome(
        self,
        run: Run,
        definition: WorkflowDefinition,
        step: StepSpec,
        now: datetime,
        budget: float,
        correlation_id: str | None,
    ) -> Build:
        outputs: Mapping[str, Any] = RunOutputs(self._outputs, run)
        last: Any = run.last_output
        if is_ref(last):
            # An output kept apart is read back only for a step whose templates name `last`.
            last = RunOutputs(self._outputs, run).resolve(last) if self._reads_last(run, step) else None
        if run.parent_run_id and run.scope and ("item" in run.scope or "branch" in run.scope):
            # A branch's or an item's steps see the outputs of the parent's steps before it too,
            # read when a template names one.
            parent_id = run.parent_run_id
            outputs = WithParent(
                outputs, lambda: RunOutputs(self._outputs, self._runs.get(run.tenant_id, parent_id))
            )
        context = StepContext(
            run_id=run.run_id,
            tenant_id=run.tenant_id,
            workflow_id=run.workflow_id,
            step_id=step.id,
            attempt=run.attempt,
            inputs=run.inputs,
            step_outputs=outputs,
            last=last,
            now=now,
            wait_until=parse_iso(run.wait_until) if run.wait_until else None,
            time_budget_seconds=budget,
            scope=run.scope or {},
        )
        started = time.monotonic()
        try:
            outcome = self._execute(step, context)
        except StepFailed as failure:
            return self._commits.failed(run, step, failure)
        except Exception as exc:  # noqa: BLE001 - recorded on the run, logged with its traceback
            # A bug in the step, or a template that exhausted the interpreter: a failure of this
            # step (its retry policy and on_failure apply), not a message to redeliver forever.
            logger.exception(
                "step raised an internal error",
                extra={"run_id": run.run_id, "step_id": step.id, "correlation_id": correlation_id},
            )
            error = internal_error("the step stopped on an internal error", correlation_id, exc)
            internal = StepFailed(INTERNAL_ERROR, error["message"], correlation_id=correlation_id)
            return self._commits.failed(run, step, internal)
        finally:
            metrics.add_metric(
                name="StepDuration", unit="Milliseconds", value=(time.monotonic() - started) * 1000
            )
        if isinstance(outcome, Spawn):
            return self._spawn(run, definition, step, outcome, now)
        if isinstance(outcome, Suspend):
            until = iso(outcome.until)
            if outcome.signals is not None:
                return self._await_signals(run, step, outcome, now)
            if outcome.waiting_approval:
                return lambda base: transitions.await_approval(
                    base, step.id, outcome.payload, until=until, now=now
                )
            return lambda base: transitions.suspend(base, until=until, now=now)
        return self._commits.succeeded(run, definition, step, outcome)

    def _reads_last(self, run: Run, step: StepSpec) -> bool:
        key = (run.definition_hash or run.run_id, step.id)
        if key not in self._last_readers:
            if len(self._last_readers) > 4096:
                self._last_readers.clear()
            self._last_readers[key] = reads([step], self._registry, "last")
        return self._last_readers[key]

    def _spawn(
        self, run: Run, definition: WorkflowDefinition, step: StepSpec, spawn: Spawn, now: datetime
    ) -> Build:
        if self._children is None:
            return self._commits.failed(
                run,
                step,
                StepFailed("unavailable", "this function does not start child runs", retryable=False),
            )
        try:
            return self._children.begin(run, definition, step, spawn, now)
        except StepFailed as failure:
            return self._commits.failed(run, step, failure)

    def _await_signals(self, run: Run, step: StepSpec, outcome: Suspend, now: datetime) -> Build:
        if self._signals is None:
            raise StepFailed("unavailable", "this function does not deliver signals", retryable=False)
        until = iso(outcome.until)
        wait = cast(
            SignalWait, {**(outcome.signals or {}), "step_id": step.id, "timeout_at": until, "received": {}}
        )
        self._signals.register(run, [awaited["name"] for awaited in wait["signals"]], outcome.until)
        return lambda base: transitions.await_signal(base, wait, until=until, now=now)

    def _execute(self, step: StepSpec, context: StepContext) -> StepResult | Suspend | Spawn:
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

    def _deadline(self, run: Run, definition: WorkflowDefinition) -> Outcome:
        """A run waiting for a decision whose deadline passed: the step type says what that
        decides (an approval's `on_timeout`)."""
        step = self._step(run, definition)
        step_type = self._registry.get(step.type)
        if not isinstance(step_type, DecidesAtDeadline):
            raise StepFailed("unknown_step_type", f"step type '{step.type}' waits for nothing")
        decided = step_type.at_deadline(parse_config(step_type, step.config), step.id, run.approval)
        if decided.result is not None:
            build = self._commits.succeeded(run, definition, step, decided.result, cause=decided.events)
        else:
            assert decided.failure is not None
            build = self._commits.failed(
                run, step, decided.failure, output=decided.output, cause=decided.events
            )
        try:
            written = self._commits.write(run, build)
        except StaleWrite:
            return Outcome.of("lost_race", run)
        self._after(written, definition)
        return Outcome.of("advanced", written.run, 1)


def _opening(step: StepSpec, now: datetime) -> Build:
    """A step's beginning: the run's start if it has not started, then the step's own."""

    def build(base: Run) -> Commit:
        if base.started_at is None:
            started = transitions.start(base, now=now)
            return started.then(transitions.begin_step(started.run, step.id, step.type, now=now))
        return transitions.begin_step(base, step.id, step.type, now=now)

    return build


def _then(first: Build | None, following: Build) -> Build:
    """`first`, then `following` over the run it left, as one commit."""
    if first is None:
        return following

    def build(base: Run) -> Commit:
        opened = first(base)
        return opened.then(following(opened.run))

    return build


def _required(commit: Commit | None) -> Commit:
    if commit is None:
        raise StaleWrite("the run ended meanwhile")
    return commit
