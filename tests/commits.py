"""Commits of arbitrary state, for tests of storage itself (the commit protocol, the indexes, the
event log): the service changes runs only through domain.transitions, tested on their own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import NewEvent, Run, RunStatus
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


def new_run(runs: RunLog, run_id: str = "run-1", tenant: str = "t1") -> Run:
    """A queued run of one log step, stored (RunLog.create) and read back as stored."""
    definition = WorkflowDefinition.model_validate(
        {"name": "d", "steps": [{"id": "a", "type": "log", "config": {"message": "x"}}]}
    )
    run = Run(
        run_id=run_id,
        tenant_id=tenant,
        owner_id="u",
        definition_version=1,
        definition_name="d",
        status=RunStatus.QUEUED,
        current_step_id="a",
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )
    runs.create(run, definition)
    return runs.get(tenant, run_id)
