"""Runs waiting for signals (`wait_for_signal`, docs/signals.md).

A wait registers one waiter per signal name before the commit that begins it, so a signal sent
from then on finds the run; the kick that follows that commit looks back for signals sent
before, from the moment the wait counts (its `lookback_seconds`). Every later hop of the wait
looks back again, which also makes up for a delivery that was lost. A signal sent to every
waiting run is delivered a page of waiters per dispatch message (`DeliverSignal`); one sent to
one run is delivered at once. Each delivery is one conditional commit on the run
(`receive_signal`): a repeat, or a signal the run does not wait for, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import cast

from workflows.clock import Clock, system_clock
from workflows.domain import transitions
from workflows.domain.backoff import attempts, full_jitter
from workflows.domain.messages import DeliverSignal
from workflows.domain.run import Run
from workflows.domain.signals import Signal, SignalWait, accepts, waiting_for
from workflows.engine.endings import Endings
from workflows.engine.kicks import Kicks
from workflows.engine.outputs import store_output
from workflows.errors import DomainError, InvalidState, NotFound, StaleWrite
from workflows.observability import count, logger
from workflows.ports import DispatchQueue, RunLog, RunOutputStore, SignalStore

# Waiting runs one dispatch message delivers a signal to; the next page is a message of its own.
PAGE = 25
# Signals of one name a look back reads per request, and the requests it makes at most.
LOOK_BACK = 25
LOOK_BACK_PAGES = 8
# A waiter outlives its wait's timeout by this much (then it expires).
WAITER_SLACK_SECONDS = 3600
# Commits of one delivery that lose a race (another signal, the engine) before one lands.
_ATTEMPTS = 20


class SignalWaits:
    def __init__(
        self,
        store: SignalStore,
        runs: RunLog,
        outputs: RunOutputStore,
        kicks: Kicks,
        queue: DispatchQueue,
        endings: Endings,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._store = store
        self._runs = runs
        self._outputs = outputs
        self._kicks = kicks
        self._queue = queue
        self._endings = endings
        self._clock = clock

    def register(self, run: Run, names: Sequence[str], until: datetime) -> None:
        """Waiters for the run's coming wait, written before the commit that begins it (one left
        by a commit that lost its race finds the run not waiting, and is removed)."""
        expires = int(until.timestamp()) + WAITER_SLACK_SECONDS
        for name in names:
            self._store.add_waiter(run.tenant_id, name, run.run_id, expires_at=expires)

    def look_back(self, run: Run) -> tuple[Run, bool]:
        """Deliver to the run the signals its wait counts that were sent before it began (or that
        a lost delivery left out): the run as it is then, and whether its step completed. Reads
        at most LOOK_BACK_PAGES pages of each name's signals, matched in memory first."""
        for name in waiting_for(cast(SignalWait, run.signal_wait or {"signals": [], "received": {}})):
            since = cast(SignalWait, run.signal_wait)["since"]
            seen: set[str] = set()
            for _ in range(LOOK_BACK_PAGES):
                page = self._store.recent(run.tenant_id, name, since, LOOK_BACK)
                fresh = [signal for signal in page if signal.signal_id not in seen]
                seen.update(signal.signal_id for signal in page)
                wait = cast(SignalWait | None, run.signal_wait)
                match = next((s for s in fresh if wait and accepts(wait, s, run.run_id)), None)
                if match is not None:
                    outcome, moved = self.deliver(run.tenant_id, run.run_id, match)
                    run = moved or run
                    if outcome == "completed":
                        return run, True
                    break  # this name is received (or the run moved on): the next name
                if len(page) < LOOK_BACK or not fresh:
                    break
                since = page[-1].sent_at
        return run, False

    def deliver_page(self, message: DeliverSignal) -> int:
        """Deliver a signal sent to every waiting run to a page of the runs waiting for its name;
        the next page is sent first, as a message of its own. The runs that took it."""
        signal = self._store.get(message.tenant_id, message.signal_id)
        if signal is None:
            return 0  # expired before it reached anyone: nothing waits that long
        run_ids, after = self._store.waiters(message.tenant_id, signal.name, after=message.after, limit=PAGE)
        if after is not None:
            self._queue.send(message.model_copy(update={"after": after}))
        taken = 0
        for run_id in run_ids:
            try:
                outcome, _ = self.deliver(message.tenant_id, run_id, signal)
            except DomainError as exc:
                # One run that cannot take it (throttled, too large) costs only itself: its wait's
                # next look back finds the signal again.
                logger.warning(
                    "a signal could not be delivered to a run",
                    extra={"run_id": run_id, "signal_id": signal.signal_id, "error_code": exc.code},
                )
                continue
            taken += outcome in ("received", "completed")
            if outcome == "not_waiting" and self._waits_elsewhere(message.tenant_id, run_id, signal.name):
                self._store.remove_waiter(message.tenant_id, signal.name, run_id)
        return taken

    def _waits_elsewhere(self, tenant_id: str, run_id: str, name: str) -> bool:
        """Whether the run's waiter for `name` is left over: the run ended, or waits for other
        names. (A run that does not wait yet may be about to: its waiter is written first.)"""
        try:
            run = self._runs.get(tenant_id, run_id)
        except NotFound:
            return True
        if run.is_terminal:
            return True
        wait = cast(SignalWait | None, run.signal_wait)
        return wait is not None and name not in {awaited["name"] for awaited in wait["signals"]}

    def deliver(self, tenant_id: str, run_id: str, signal: Signal) -> tuple[str, Run | None]:
        """One signal into one run: "completed" (its step is done), "received" (recorded, more
        are awaited), "ignored" (the run waits, but not for this one), "not_waiting"; and the
        run as stored, when it moved."""
        for _ in attempts(_ATTEMPTS, lambda n: full_jitter(n, 0.01, 0.2)):
            try:
                run, definition = self._runs.get_with_definition(tenant_id, run_id)
            except NotFound:
                return "not_waiting", None
            wait = cast(SignalWait | None, run.signal_wait)
            if run.is_terminal or wait is None or signal.name not in waiting_for(wait):
                return "not_waiting", None
            step_id = wait["step_id"]
            try:
                commit = transitions.receive_signal(
                    run,
                    signal,
                    next_step=definition.next_after_success(step_id),
                    now=self._clock(),
                    store=partial(store_output, self._outputs, run),
                )
            except InvalidState:
                return "not_waiting", None
            if commit is None:
                return "ignored", None
            try:
                stored = self._runs.commit(commit)
            except StaleWrite:
                continue  # another signal or the engine moved the run: read it again
            self._kicks.send(stored, commit.kick)
            if stored.is_terminal:
                self._endings.finished(stored, definition)
            completed = stored.signal_wait is None
            count("SignalsReceived", result="completed" if completed else "received")
            return ("completed" if completed else "received"), stored
        raise StaleWrite(f"run {run_id} kept changing while a signal was delivered")
