"""Commits of arbitrary state, for tests of storage itself (the commit protocol, the indexes, the
event log): the service changes runs only through domain.transitions, tested on their own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workflows.domain.run import NewEvent, Run
from workflows.domain.transitions import Action, Commit
from workflows.ports import RunLog


def stored_change(read: Run, changes: Mapping[str, Any], events: Sequence[NewEvent] = ()) -> Commit:
    """A commit setting `changes` (each a field of the run, validated) over `read`."""
    unknown = set(changes) - set(Run.model_fields)
    assert not unknown, f"not fields of a run: {unknown}"
    return Commit(Action.TOUCH, read, Run.model_validate({**read.__dict__, **changes}), tuple(events))


def transition(runs: RunLog, read: Run, changes: Mapping[str, Any], events: Sequence[NewEvent] = ()) -> Run:
    """Store `changes` over the run as read, with `events` (RunLog.commit)."""
    return runs.commit(stored_change(read, changes, events))
