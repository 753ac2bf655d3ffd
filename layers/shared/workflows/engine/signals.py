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
from workflows.domain.signals import Signal, SignalWait, waiting_for
from workflows.engine.endings import Endings
from workflows.engine.kicks import Kicks
from workflows.engine.outputs import store_output
from workflows.errors import InvalidState, NotFound, StaleWrite
from workflows.observability import count
from workflows.ports import DispatchQueue, RunLog, RunOutputStore, SignalStore

# Waiting runs one dispatch message delivers a signal to; the next page is a message of its own.
PAGE = 25
# Signals of one name a look back reads.
LOOK_BACK = 25
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
        a lost delivery left out): the run as it is then, and whether its step completed."""
        wait = cast(SignalWait | None, run.signal_wait)
        if wait is None:
            return run, False
        for name in waiting_for(wait):
            for signal in self._store.recent(run.tenant_id, name, wait["since"], LOOK_BACK):
                outcome, moved = self.deliver(run.tenant_id, run.run_id, signal)
                if moved is not None:
                    run = moved
                if outcome == "completed":
                    return run, True
                if outcome == "received":
                    break  # this name is received: the next one
        return run, False

    def deliver_page(self, message: DeliverSignal) -> int:
        """Deliver a signal sent to every waiting run to a page of the runs waiting for its name;
        the next page is sent as a message of its own. The runs that took it."""
        signal = self._store.get(message.tenant_id, message.signal_id)
        if signal is None:
            return 0  # expired before it reached anyone: nothing waits that long
        run_ids, after = self._store.waiters(message.tenant_id, signal.name, after=message.after, limit=PAGE)
        taken = 0
        for run_id in run_ids:
            outcome, _ = self.deliver(message.tenant_id, run_id, signal)
            taken += outcome in ("received", "completed")
            if outcome == "not_waiting":
                self._store.remove_waiter(message.tenant_id, signal.name, run_id)
        if after is not None:
            self._queue.send(message.model_copy(update={"after": after}))
        return taken

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
