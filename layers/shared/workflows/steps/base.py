"""What a step type is: a typed config model, its delivery semantics, and an executor."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from workflows.domain.definition import StepSpec
from workflows.domain.failures import StepFailed
from workflows.domain.run import NewEvent


class StepsView(Mapping[str, dict[str, Any]]):
    """`steps` in templates: `steps.<id>.output`, each output read only when a template asks
    for it (the engine gives a mapping that loads outputs kept outside the run item)."""

    def __init__(self, outputs: Mapping[str, Any]) -> None:
        self._outputs = outputs

    def __getitem__(self, step_id: str) -> dict[str, Any]:
        return {"output": self._outputs[step_id]}

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


@dataclass(frozen=True)
class StepContext:
    """What a step sees: the template context plus the run's identity."""

    run_id: str
    tenant_id: str
    workflow_id: str | None
    step_id: str
    attempt: int
    inputs: dict[str, Any]
    # Step id -> its latest output; may load outputs on access (engine.advance.RunOutputs).
    step_outputs: Mapping[str, Any]
    last: Any
    # When the engine runs the step; steps never read the system clock themselves.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Set while a delay or an approval is pending: the deadline the step suspended until.
    wait_until: datetime | None = None
    # Time this execution may take: the step's timeout_seconds bounded by the Lambda's
    # remaining time. Steps that call out pass it on as their request timeout.
    time_budget_seconds: float = 30.0
    # A branch's or a map item's own names (`branch`; `item` and `index`), and `parent_id`.
    scope: Mapping[str, Any] = field(default_factory=dict)

    def template_context(self) -> dict[str, Any]:
        run = {"id": self.run_id, "tenant_id": self.tenant_id, "workflow_id": self.workflow_id}
        names = {key: value for key, value in self.scope.items() if key != "parent_id"}
        if "parent_id" in self.scope:
            run["parent_id"] = self.scope["parent_id"]
        return {
            **names,
            "inputs": self.inputs,
            "steps": StepsView(self.step_outputs),
            "last": self.last,
            "run": run,
        }


@dataclass(frozen=True)
class StepResult:
    output: Any
    # Extra event payload fields (e.g. a log message, token usage).
    event_fields: dict[str, Any] = field(default_factory=dict)
    # A step that chooses where the run goes next (branch); None follows on_success.
    next_step: str | None = None


@dataclass(frozen=True)
class Suspend:
    """The step is not finished: wake the run at `until` (a delay), or wait for a human or
    for signals until then.

    `waiting_approval` puts the run in that status until approve/reject or `until` passes.
    """

    until: datetime
    waiting_approval: bool = False
    payload: dict[str, Any] = field(default_factory=dict)
    # Waiting for signals (wait_for_signal): `signals` is the wait (domain.signals.SignalWait,
    # without its step id, deadline and what was received), `until` its timeout.
    signals: dict[str, Any] | None = None


@dataclass(frozen=True)
class Spawn:
    """The step runs child runs side by side and completes when the join decides
    (domain.fanout): a parallel's `branches`, a map's `steps` once per item of `items`, or a
    saved workflow (`workflow_id`, `version`, `inputs`; `wait: false` starts it and goes on)."""

    kind: Literal["parallel", "map", "workflow"]
    branches: Mapping[str, list[StepSpec]] = field(default_factory=dict)
    steps: list[StepSpec] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    join: Literal["all", "any"] = "all"
    max_concurrency: int | None = None
    tolerated_failures: int = 0
    workflow_id: str | None = None
    version: int | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    wait: bool = True
    # `auto`: items (branches) of pure steps run inside the run (engine.inline); `child_runs`: never.
    mode: Literal["auto", "child_runs"] = "auto"


StepOutcome = StepResult | Suspend | Spawn


@dataclass(frozen=True)
class AtDeadline:
    """What a step that waits for a decision does when its deadline passes: `events` recorded
    first, then `result` (the step succeeds) or `failure` (with `output`, the step's output
    recorded with it, if any)."""

    events: list[NewEvent] = field(default_factory=list)
    result: StepResult | None = None
    failure: StepFailed | None = None
    output: dict[str, Any] | None = None


@runtime_checkable
class DecidesAtDeadline(Protocol):
    """A step type whose run waits for a decision (approval): it says what its deadline decides."""

    def at_deadline(
        self, config: BaseModel, step_id: str, request: Mapping[str, Any] | None
    ) -> AtDeadline: ...


@runtime_checkable
class RunsSteps(Protocol):
    """A step type whose config holds steps of its own (a parallel's branches, a map's steps):
    validation checks each list as a definition of its own, and ids across all of them."""

    def nested(self, config: BaseModel) -> dict[str, list[StepSpec]]:
        """Each list of steps by the config field that holds it (`branches.<name>`, `steps`)."""


@runtime_checkable
class Pure(Protocol):
    """A step type that always finishes where it runs: it renders and decides, and calls
    nothing out, waits for nothing and starts nothing (log, branch). A map's items, or a
    parallel's branches, made only of such steps run inside their parent run
    (steps.registry.runs_inline, engine.inline) rather than as child runs."""

    pure: Literal[True]


@runtime_checkable
class StartsWorkflows(Protocol):
    """A step type that starts saved workflows (`workflow`): the one it names, if literal."""

    def started_workflow(self, config: BaseModel) -> str | None: ...


@dataclass(frozen=True)
class TemplateField:
    """A config field holding a Jinja2 template: checked when a definition is validated."""

    path: str  # e.g. "message", "headers.Authorization", "body.items[0]"
    source: str
    expression: bool = False  # a bare expression is allowed (branch conditions)
    secrets: bool = False  # `{{ secrets.NAME }}` may be used here (docs/steps.md, "Secrets")


class StepType(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def config_model(self) -> type[BaseModel]: ...

    @property
    def example(self) -> dict[str, Any]: ...

    @property
    def min_engine_version(self) -> str: ...

    @property
    def delivery(self) -> Literal["at_least_once", "at_most_once"]:
        """at_least_once: safe to run again after a crash (no effect outside the commit);
        at_most_once: claims a lease first and gives receivers a stable id to dedupe on."""

    @property
    def inline(self) -> bool:
        """Cheap and local (no calls out): the engine may run it in the same invocation as the
        step before it instead of paying an SQS round trip."""

    @property
    def route_fields(self) -> tuple[str, ...]:
        """The config fields naming where a run goes when the step succeeds (a step id, or `_end`),
        for a type that chooses among them (branch: `true_next`, `false_next`); its `on_success`
        is then not consulted. Empty for a type that follows `on_success`. Validation checks that
        each names a step, the loop check and the unreachable-step warning follow them, and
        `GET /step-types` lists them (`routes`) for the console's graph."""

    @property
    def rejectable(self) -> bool:
        """A person may reject the step (approval): a rejection follows `on_failure`, and without
        one it ends the run on purpose, so it counts as a way out of a loop."""

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome: ...

    def templates(self, config: BaseModel) -> list[TemplateField]:
        """The config's templated fields, for validation (syntax, where secrets may be used)."""
