"""The sweeper: runs the service owes a next step but lost track of are kicked again, or failed.

A kick can be lost: the process dies between a commit and the send of the next kick, a delayed
message is dropped, a redelivery comes back too late to be believed. The run then sits in
`queued`, `running` or `waiting_approval` with nothing on its way. Every few minutes
(SweeperFunction) the sweeper reads the sparse index of such runs (`RunIndex.active`: what
ended is never read), and for each one whose last write and every wake-up it scheduled lie
more than `sweep_grace_sec` in the past it commits a re-kick (a new version, so a late original
kick is stale) and sends a kick for it. A run re-kicked `sweep_max_rekicks` times in a row fails
with `stalled` through `Engine.give_up` (events, slot, completion webhook): the count (`sweeps`)
starts again at every commit that moves the run on (domain.transitions), so only a run that
made no progress since the last re-kick stalls.

Long waits (a day's delay, an approval's timeout) are woken without a write: the sweeps cut time
into slots of the schedule's period, and the sweep of slot `s` sends each run whose deadline lies
in `[s + 15 min - period, s + 15 min)` one kick delayed to its deadline, with the run's version as
stored. Consecutive sweeps cover consecutive windows, so each deadline is kicked by one sweep;
the slot is the schedule's time (the event's `time`), so a retried invocation sweeps its own
window again and a duplicate kick is stale once the first has moved the run. A sweep that never
ran leaves its window's runs to the re-kick above, a grace period after their deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from workflows.clock import Clock, iso, parse_iso, system_clock
from workflows.domain import transitions
from workflows.domain.run import SWEPT
from workflows.domain.transitions import Kick, RunError
from workflows.engine.kicks import MAX_DELAY_SECONDS, Kicks
from workflows.errors import DomainError, NotFound, StaleWrite
from workflows.observability import logger, metrics
from workflows.ports import RunIndex, RunLog

STALLED = "stalled"
# The long waits one sweep wakes at most (its window's); with a `GetItem` and a `SendMessage`
# each, a sweep stops earlier when its invocation is about to time out (docs/capacity.md).
WAKE_LIMIT = 10_000
# What a sweep leaves of its invocation's time when it stops waking runs.
WAKE_MARGIN_MS = 15_000


class GivesUp(Protocol):
    """The way the service fails a run (engine.endings.Endings.give_up)."""

    def give_up(self, tenant_id: str, run_id: str, error: RunError) -> object: ...


@dataclass
class SweepReport:
    candidates: int = 0
    woken: int = 0
    rekicked: int = 0
    stalled: int = 0
    failed: int = 0


class Sweeper:
    def __init__(
        self,
        runs: RunLog,
        index: RunIndex,
        kicks: Kicks,
        endings: GivesUp,
        *,
        grace_seconds: float,
        max_rekicks: int,
        period_seconds: float,
        clock: Clock = system_clock,
        batch: int = 1000,
    ) -> None:
        self._runs = runs
        self._index = index
        self._kicks = kicks
        self._endings = endings
        self._grace = timedelta(seconds=grace_seconds)
        self._max_rekicks = max_rekicks
        if not 0 < period_seconds <= MAX_DELAY_SECONDS / 2:
            # A window must start after the sweep that sends its kicks ends its slot.
            raise ValueError(f"the sweep period must be within (0, {MAX_DELAY_SECONDS // 2}] s")
        self._period = period_seconds
        self._clock = clock
        self._batch = batch

    def sweep(self, at: datetime | None = None, remaining_ms: Callable[[], int] | None = None) -> SweepReport:
        """One sweep; `at` is the moment the schedule meant it for (the clock's now if None),
        `remaining_ms` the invocation's time left (the waking stops while a margin is left)."""
        report = SweepReport()
        cutoff = iso(self._clock() - self._grace)
        for tenant_id, run_id in self._index.active(cutoff, self._batch):
            report.candidates += 1
            try:
                self._sweep(tenant_id, run_id, cutoff, report)
            except DomainError as exc:
                # Throttling on one run: the others still get their turn, this one next time.
                report.failed += 1
                logger.warning(
                    "sweep of a run failed",
                    extra={"run_id": run_id, "error_code": exc.code, "error": exc.message},
                )
        self._wake(at or self._clock(), report, remaining_ms)
        logger.info("sweep finished", extra=asdict(report))
        counts = (
            ("RunsWoken", report.woken),
            ("RunsRekicked", report.rekicked),
            ("RunsStalled", report.stalled),
        )
        for name, value in counts:
            if value:
                metrics.add_metric(name=name, unit="Count", value=value)
        return report

    def window(self, at: datetime) -> tuple[datetime, datetime]:
        """The deadlines the sweep of `at`'s slot kicks: [start, end)."""
        slot = math.floor(at.timestamp() / self._period) * self._period
        end = datetime.fromtimestamp(slot + MAX_DELAY_SECONDS, UTC)
        return end - timedelta(seconds=self._period), end

    def _wake(self, at: datetime, report: SweepReport, remaining_ms: Callable[[], int] | None) -> None:
        """Long waits whose deadline lies in this sweep's window: one kick each, delayed to the
        deadline, and no write (the run keeps its place in the index: later windows do not
        hold its deadline). A wait the index files under its deadline gets no chain of hops
        (engine.kicks), so this is its only message."""
        start, end = self.window(at)
        low, high = iso(start), iso(end)
        now = self._clock()
        due = self._index.active(high, WAKE_LIMIT, due_after=low)
        for done, (tenant_id, run_id) in enumerate(due):
            if remaining_ms is not None and remaining_ms() < WAKE_MARGIN_MS:
                # Those left are re-kicked a grace period after their deadline, as lost runs.
                logger.error("sweep out of time: long waits left unwoken", extra={"left": len(due) - done})
                metrics.add_metric(name="WakesLeft", unit="Count", value=len(due) - done)
                break
            try:
                run = self._runs.get(tenant_id, run_id)
            except NotFound:
                continue
            except DomainError as exc:
                report.failed += 1
                logger.warning("wake of a run failed", extra={"run_id": run_id, "error_code": exc.code})
                continue
            deadline = run.long_wait_deadline()
            if not run.owed_step or deadline is None or not low <= deadline < high:
                continue  # it moved on, its wait changed, or the next window holds it
            delay = max(0.0, (parse_iso(deadline) - now).total_seconds())
            self._kicks.send(run, Kick(delay))
            report.woken += 1

    def _sweep(self, tenant_id: str, run_id: str, cutoff: str, report: SweepReport) -> None:
        try:
            run = self._runs.get(tenant_id, run_id)
        except NotFound:
            return
        if run.status not in SWEPT or run.last_activity() >= cutoff:
            return  # it moved, or what it waits for is still ahead
        keys = {"run_id": run_id, "tenant_id": tenant_id, "status": run.status.value, "sweeps": run.sweeps}
        if run.sweeps >= self._max_rekicks:
            error: RunError = {
                "code": STALLED,
                "message": f"the run made no progress after {run.sweeps} re-kicks by the sweeper",
            }
            logger.error("run stalled; failing it", extra=keys)
            self._endings.give_up(tenant_id, run_id, error)
            report.stalled += 1
            return
        commit = transitions.rekick(run)
        try:
            moved = self._runs.commit(commit)
        except StaleWrite:
            return  # it moved while we looked: not lost
        self._kicks.send(moved, commit.kick)
        logger.warning("run had no activity past its grace period; re-kicked", extra=keys)
        report.rekicked += 1
