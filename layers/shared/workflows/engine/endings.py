"""How runs end: what follows a terminal commit wherever it was made (the engine, a control
action, the sweeper, the dispatch queue's dead letters), and the service failing a run that
cannot advance (`give_up`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from workflows.clock import Clock, parse_iso, system_clock
from workflows.domain import fanout, transitions
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.fanout import Fanout
from workflows.domain.messages import ChildEnded
from workflows.domain.run import Run
from workflows.domain.transitions import RunError
from workflows.errors import NotFound, PayloadTooLarge, StaleWrite
from workflows.observability import count, logger, metrics
from workflows.ports import DispatchQueue, RunLog

INTERNAL_ERROR = "internal_error"
RUN_TOO_LARGE = "run_too_large"
# Commits of a give-up that lose a race before one lands (each re-reads the run).
GIVE_UP_WRITES = 3


def internal_error(what: str, correlation_id: str | None, exc: BaseException | None = None) -> RunError:
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


class Notifier(Protocol):
    """Run-completion notifications (the definition's `on_completion_webhook`)."""

    def notify(self, run: Run, url: str) -> object: ...


class Endings:
    """`notifier` is a factory: most runs notify nobody, so the webhook delivery code is built
    for the first that does (cold start)."""

    def __init__(
        self,
        runs: RunLog,
        *,
        slots: Slots | None = None,
        notifier: Callable[[], Notifier] | None = None,
        queue: DispatchQueue | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._runs = runs
        self._slots = slots
        self._notifier = notifier
        self._queue = queue
        self._clock = clock

    def finished(self, run: Run, definition: WorkflowDefinition | None) -> None:
        """After a terminal commit: the tenant's slot back, metrics, the parent told (a child
        run), the children cancelled (a run cancelled or failed while its step waited for them),
        and the completion notification (any terminal status; none without the definition,
        which names the webhook)."""
        if self._slots is not None and run.child is None:
            self._slots.release(run.tenant_id, run.run_id)  # idempotent; a no-op if never taken
        self.tell_parent(run)
        if self._queue is not None and run.fanout is not None:
            cancelling = fanout.cancellation(run.tenant_id, run.run_id, cast(Fanout, run.fanout))
            if cancelling is not None:
                self._queue.send(cancelling)
        count("RunsEnded", status=run.status.value)
        if run.ended_at:
            duration = parse_iso(run.ended_at) - parse_iso(run.started_at or run.created_at)
            metrics.add_metric(name="RunDuration", unit="Milliseconds", value=duration.total_seconds() * 1000)
        if self._notifier is not None and definition is not None and definition.on_completion_webhook:
            self._notifier().notify(run, definition.on_completion_webhook)

    def tell_parent(self, run: Run) -> None:
        """A child run that ended tells the run whose step waits for it (domain.fanout)."""
        place = run.child
        if self._queue is None or place is None or run.parent_run_id is None or not run.is_terminal:
            return
        assert run.parent_step_id is not None
        self._queue.send(
            ChildEnded(
                tenant_id=run.tenant_id,
                run_id=run.parent_run_id,
                step_id=run.parent_step_id,
                round=place["round"],
                index=place["index"],
                child_run_id=run.run_id,
            )
        )

    def give_up(self, tenant_id: str, run_id: str, error: RunError) -> str:
        """Fail a run that cannot advance (an error on every delivery of its message, its message
        dead-lettered, no progress after the sweeper's re-kicks): its events written, its slot
        released, its completion webhook sent. "failed", or "ignored" for a run that already
        ended, or "unknown_run"."""
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
                return "unknown_run"
            commit = transitions.give_up(run, error, now=self._clock())
            if commit is None:
                return "ignored"
            try:
                failed = self._runs.commit(commit)
            except StaleWrite:
                continue  # a control action or a late commit moved it: look again
            logger.error(
                "run failed by the service",
                extra={"run_id": run_id, "tenant_id": tenant_id, "error_code": error["code"]},
            )
            metrics.add_metric(name="RunsFailedInternal", unit="Count", value=1)
            self.finished(failed, definition)
            return "failed"
        raise StaleWrite(f"run {run_id} kept changing while it was being failed")
