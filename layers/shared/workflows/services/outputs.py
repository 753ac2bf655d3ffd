"""Outputs as clients see them: references to outputs kept in items of their own
(domain.outputs) replaced by the outputs themselves, so the API and the completion webhook keep
their shapes whatever the run stores where."""

from __future__ import annotations

from typing import Any

from workflows.domain.outputs import is_ref
from workflows.domain.run import Run, RunEvent
from workflows.ports import RunOutputStore

_OUTPUT_FIELDS = ("output", "outputs")


def resolved_run(outputs: RunOutputStore, run: Run) -> Run:
    if not is_ref(run.outputs):
        return run
    [value] = outputs.read_outputs(run.tenant_id, run.run_id, [run.outputs])
    return run.model_copy(update={"outputs": value})


def resolved_events(outputs: RunOutputStore, run: Run, events: list[RunEvent]) -> list[RunEvent]:
    """The events with every referenced output read back (one read per reference)."""
    out: list[RunEvent] = []
    for event in events:
        payload = event.payload
        refs = {name: payload[name] for name in _OUTPUT_FIELDS if is_ref(payload.get(name))}
        if not refs:
            out.append(event)
            continue
        values = outputs.read_outputs(run.tenant_id, run.run_id, list(refs.values()))
        resolved: dict[str, Any] = {**payload, **dict(zip(refs, values, strict=True))}
        out.append(event.model_copy(update={"payload": resolved}))
    return out
