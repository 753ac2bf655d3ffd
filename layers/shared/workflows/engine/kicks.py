"""The one place a kick is built and sent: the dispatch message that advances a run."""

from __future__ import annotations

from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import Run
from workflows.domain.transitions import Kick
from workflows.ports import DispatchQueue

# SQS delays a message at most this long. A longer wait that the index files under its deadline
# (Run.long_wait_deadline) gets no kick until the sweeper wakes it; a shorter one is sent in hops
# (the engine sends the next hop when a kick comes back before the run's deadline).
MAX_DELAY_SECONDS = 900
NOW = Kick()


class Kicks:
    def __init__(self, queue: DispatchQueue) -> None:
        self._queue = queue

    def send(self, run: Run, kick: Kick | None = NOW) -> None:
        """Send `kick` for the run as stored (its version), if there is one."""
        if kick is None:
            return
        if kick.delay_seconds > MAX_DELAY_SECONDS and run.long_wait_deadline() is not None:
            # A long wait costs no chain of hops: the sweeper wakes it near its deadline (wake).
            return
        not_before = None if kick.not_before is None else round(kick.not_before, 3)
        message = AdvanceMessage(
            tenant_id=run.tenant_id, run_id=run.run_id, version=run.version, not_before=not_before
        )
        self._queue.send(message, delay_seconds=min(MAX_DELAY_SECONDS, kick.seconds()))

    def first(self, tenant_id: str, run_id: str) -> None:
        """The first kick of a run as created (version 1): a child run started by its parent."""
        self._queue.send(AdvanceMessage(tenant_id=tenant_id, run_id=run_id, version=1))
