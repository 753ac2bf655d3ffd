"""Step outputs as the engine keeps them: inline in the run item, or past INLINE_OUTPUT_BYTES in
an item (or object) of their own, named by a reference (domain.outputs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from workflows.domain.outputs import INLINE_OUTPUT_BYTES, encode, forgot_some, is_ref
from workflows.domain.run import Run
from workflows.ports import RunOutputStore


def store_output(outputs: RunOutputStore, run: Run, value: object) -> Any:
    """What the run records for an output: the value, or past INLINE_OUTPUT_BYTES a reference to
    the item it is written to now, before the commit that records it (PayloadTooLarge if it
    cannot be stored at all)."""
    if len(encode(value)) <= INLINE_OUTPUT_BYTES:
        return value
    return outputs.put_output(run.tenant_id, run.run_id, value)


class RunOutputs(Mapping[str, Any]):
    """A run's step outputs as its templates see them: inline values as the run item holds
    them, a reference read when a template first asks for it, and a step the run item no
    longer remembers found in the run's events."""

    def __init__(self, outputs: RunOutputStore, run: Run) -> None:
        self._outputs = outputs
        self._run = run
        self._loaded: dict[str, Any] = {}
        # Steps looked for in the events and not found: a template that asks again (`in`,
        # `get`, a loop) does not read the history again.
        self._missing: set[str] = set()

    def resolve(self, value: object) -> object:
        if not is_ref(value):
            return value
        return self._outputs.read_outputs(self._run.tenant_id, self._run.run_id, [value])[0]

    def __getitem__(self, step_id: str) -> Any:
        if step_id in self._loaded:
            return self._loaded[step_id]
        if step_id in self._run.step_outputs:
            value = self._run.step_outputs[step_id]
        elif step_id not in self._missing and forgot_some(
            self._run.outputs_dropped, len(self._run.step_outputs)
        ):
            # Only a run that dropped some outputs looks further back, once per step.
            found, value = self._outputs.find_step_output(self._run.tenant_id, self._run.run_id, step_id)
            if not found:
                self._missing.add(step_id)
                raise KeyError(step_id)
        else:
            raise KeyError(step_id)
        self._loaded[step_id] = self.resolve(value)
        return self._loaded[step_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.step_outputs)

    def __len__(self) -> int:
        return len(self._run.step_outputs)


class WithParent(Mapping[str, Any]):
    """A branch's or a map item's step outputs: its own, then its parent's (the steps before the
    parallel or map), the parent read only when a template names a step the child lacks."""

    def __init__(self, own: Mapping[str, Any], parent: Callable[[], Mapping[str, Any]]) -> None:
        self._own = own
        self._load = parent
        self._parent: Mapping[str, Any] | None = None

    def __getitem__(self, step_id: str) -> Any:
        try:
            return self._own[step_id]
        except KeyError:
            if self._parent is None:
                self._parent = self._load()
            return self._parent[step_id]

    def get(self, step_id: str, default: Any = None) -> Any:
        try:
            return self._own[step_id]
        except KeyError:
            return default  # a step's own earlier output (a loop): never the parent's

    def __iter__(self) -> Iterator[str]:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)
