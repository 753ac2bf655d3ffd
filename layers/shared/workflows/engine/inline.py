"""Items run inside their parent run: a map item, or a parallel branch, made only of pure steps
(log, branch: steps.base.Pure; steps.registry.runs_inline says which).

Such an item is a few renders: making it a run of its own (its run item, its kick, its end
recorded on the parent) would cost several times the step. Instead each kick of the parent runs
a batch of items here, and one commit records the batch (engine.children): each item's steps
in order, their events in the parent's stream (each naming its item's `index`, or its
`branch`), the item's end counted on the parent's record, and the batch's outputs stored apart.

An item sees what a child run's steps would: `item` and `index` (or `branch`), the run's
`inputs`, the outputs of the parent's earlier steps and of the item's own steps before, `last`.
Its steps are never retried (runs_inline refuses a retry policy) and lead forward only, so an
item runs at most as many steps as it has; `on_failure` and `on_timeout` route as in a run, and
an item whose failure is not routed ends `failed` (the map's `tolerated_failures` apply).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from workflows.domain.definition import END, StepSpec, WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.outputs import encode
from workflows.domain.run import EventType, NewEvent, Run
from workflows.domain.transitions import RunError
from workflows.engine.endings import INTERNAL_ERROR, internal_error
from workflows.engine.outcomes import OUTPUT_TOO_LARGE, TIMEOUT, step_error
from workflows.errors import PayloadTooLarge
from workflows.observability import logger
from workflows.ports import RunOutputStore
from workflows.steps.base import StepContext, StepResult
from workflows.steps.registry import StepRegistry, parse_config

# An item step's output is kept in its event up to this size; a bigger one is stored apart and
# the event (and the map's results) hold a reference. A commit holds many items' events.
ITEM_OUTPUT_BYTES = 2048
# Time one item step's templates may take (each step's `timeout_seconds` may lower it).
ITEM_STEP_SECONDS = 2.0


@dataclass
class ItemRun:
    """One item run inside its parent: how it ended, its output (the last step's, as stored:
    a value or a reference), its events, and how many steps and event bytes it took."""

    status: Literal["succeeded", "failed"]
    output: Any = None
    error: RunError | None = None
    events: list[NewEvent] = field(default_factory=list)
    steps: int = 0
    event_bytes: int = 0


class InlineItems:
    def __init__(self, registry: StepRegistry, outputs: RunOutputStore) -> None:
        self._registry = registry
        self._outputs = outputs

    def run(
        self,
        run: Run,
        part: WorkflowDefinition,
        scope: dict[str, Any],
        named: dict[str, Any],
        parent_outputs: Mapping[str, Any],
        now: datetime,
    ) -> ItemRun:
        """Run one item's steps (`part`) to its end. `scope` is what its templates see (`item`
        and `index`, or `branch`), `named` what its events carry to name it."""
        own: dict[str, Any] = {}
        outputs = ChainMap(own, parent_outputs)  # type: ignore[arg-type]
        done = ItemRun(status="succeeded")
        last: Any = None
        step: StepSpec | None = part.steps[0]
        while step is not None:
            done.steps += 1
            context = StepContext(
                run_id=run.run_id,
                tenant_id=run.tenant_id,
                workflow_id=run.workflow_id,
                step_id=step.id,
                attempt=1,
                inputs=run.inputs,
                step_outputs=outputs,
                last=last,
                now=now,
                time_budget_seconds=min(step.timeout_seconds or ITEM_STEP_SECONDS, ITEM_STEP_SECONDS),
                scope=scope,
            )
            try:
                result = self._execute(step, context)
                stored = self._stored(run, result.output)
            except StepFailed as failure:
                error = step_error(step, failure)
                timed_out = failure.code == TIMEOUT or failure.code.endswith("_timeout")
                route = (step.on_timeout if timed_out else None) or step.on_failure
                payload: dict[str, Any] = {**named, "error": dict(error), "attempt": 1}
                if route is None:
                    self._event(done, EventType.STEP_FAILED, step.id, payload)
                    done.status, done.error = "failed", error
                    return done
                last = {"error": dict(error)}
                own[step.id] = last
                payload["output"] = last
                self._event(done, EventType.STEP_FAILED, step.id, payload)
                done.output = last  # the item's output, if the route ends it (as a run's would)
                step = None if route == END else part.step(route)
                continue
            own[step.id] = result.output
            last = result.output
            self._event(
                done,
                EventType.STEP_COMPLETED,
                step.id,
                {**named, "output": stored, "attempt": 1, **result.event_fields},
            )
            done.output = stored
            following = result.next_step or part.next_after_success(step.id)
            step = None if following in (None, END) else part.step(following)
        return done

    def _execute(self, step: StepSpec, context: StepContext) -> StepResult:
        step_type = self._registry.get(step.type)
        if step_type is None:
            raise StepFailed(
                "unknown_step_type", f"step type '{step.type}' is not available", retryable=False
            )
        config = parse_config(step_type, step.config)
        # Imported here: jinja2 stays off the cold-start path until a step renders.
        from workflows.templating import render_budget

        try:
            with render_budget(context.time_budget_seconds):
                outcome = step_type.execute(config, context)
        except StepFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the item fails, as a run's step would (advance)
            logger.exception("item step raised an internal error", extra={"run_id": context.run_id})
            error = internal_error("the step stopped on an internal error", None, exc)
            raise StepFailed(INTERNAL_ERROR, error["message"], retryable=False) from None
        if not isinstance(outcome, StepResult):  # runs_inline admits only steps that finish
            raise StepFailed(INTERNAL_ERROR, f"step type '{step.type}' did not finish", retryable=False)
        return outcome

    def _stored(self, run: Run, value: Any) -> Any:
        """The output as the item's event holds it: the value, or past ITEM_OUTPUT_BYTES a
        reference to the item it is written to now."""
        if len(encode(value)) <= ITEM_OUTPUT_BYTES:
            return value
        try:
            return self._outputs.put_output(run.tenant_id, run.run_id, value)
        except PayloadTooLarge as exc:
            raise StepFailed(
                OUTPUT_TOO_LARGE, f"the step's output cannot be stored: {exc.message}", retryable=False
            ) from None

    @staticmethod
    def _event(done: ItemRun, event_type: EventType, step_id: str, payload: dict[str, Any]) -> None:
        done.events.append(NewEvent(event_type=event_type, step_id=step_id, payload=payload))
        done.event_bytes += len(encode(payload)) + 64
