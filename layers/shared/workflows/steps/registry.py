"""Step executors registered by type name; definitions are validated against it.

The local step types (log, delay, branch, approval, wait_for_signal, parallel, map, workflow)
are built with the registry. The ones that call out (prompt, rag_search, webhook) come from
factories the composition root gives, called the first time a definition uses the type: their modules bring
HTTP clients and the LLM, retrieval, egress and signing code, which most invocations never need
(cold start).

Each type says where it may send a run besides a step's `on_*` fields (`route_fields`,
`rejectable`): validation, the loop check and the unreachable-step warning ask it through
`StepRegistry.routing`, never by naming a type or a field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping

from pydantic import BaseModel, ValidationError

from workflows.domain.definition import END, StepRouting, StepSpec, WorkflowDefinition
from workflows.domain.json import JsonObject
from workflows.steps.approval import ApprovalStep
from workflows.steps.base import Pure, RunsSteps, StepType
from workflows.steps.branch import BranchStep
from workflows.steps.delay import DelayStep
from workflows.steps.log import LogStep
from workflows.steps.map import MapStep
from workflows.steps.parallel import ParallelStep
from workflows.steps.wait_for_signal import WaitForSignalStep
from workflows.steps.workflow import WorkflowStep

# The types built by the composition root's factories; their names are known (validation
# errors, GET /step-types) before any is built.
CONFIGURED_TYPES = ("prompt", "rag_search", "webhook")
# The original module's names, accepted on input and stored under the canonical name.
ALIASES = {"wait_for_approval": "approval"}


def local_step_types() -> list[StepType]:
    return [
        LogStep(),
        DelayStep(),
        BranchStep(),
        ApprovalStep(),
        WaitForSignalStep(),
        ParallelStep(),
        MapStep(),
        WorkflowStep(),
    ]


class StepRegistry:
    """Every step type a function knows, by name; a configured type is built on first lookup."""

    def __init__(
        self, local: Iterable[StepType], factories: Mapping[str, Callable[[], StepType]] | None = None
    ) -> None:
        self._types: dict[str, StepType] = {step.name: step for step in local}
        self._factories = dict(factories or {})
        self._lock = threading.Lock()

    def get(self, name: str) -> StepType | None:
        """The type called `name` (or its alias), built now if it has not been; None if unknown."""
        name = canonical_type(name)
        step = self._types.get(name)
        if step is not None or name not in self._factories:
            return step
        with self._lock:
            step = self._types.get(name)
            if step is None:
                step = self._factories[name]()
                self._types[name] = step
            return step

    def names(self) -> list[str]:
        return sorted(self._types.keys() | self._factories.keys())

    def all(self) -> list[StepType]:
        """Every type, each built if needed (GET /step-types)."""
        return [step for name in self.names() if (step := self.get(name)) is not None]

    def routing(self, name: str) -> StepRouting:
        """Where a step of type `name` may send a run besides its `on_*` fields, as the type says
        (its `route_fields` and `rejectable`); nothing for an unknown type."""
        step = self.get(name)
        if step is None:
            return StepRouting()
        return StepRouting(tuple(step.route_fields), step.rejectable)


def canonical_type(name: str) -> str:
    return ALIASES.get(name, name)


def parse_config(step_type: StepType, config: JsonObject) -> BaseModel:
    return step_type.config_model.model_validate(config)


def validate_steps(
    definition: WorkflowDefinition, registry: StepRegistry, *, max_config_bytes: int
) -> list[dict[str, str]]:
    """Every problem with the definition's steps, each naming the step and the field."""
    errors: list[dict[str, str]] = []
    step_ids = {step.id for step in definition.steps}
    for index, step in enumerate(definition.steps):
        where = f"steps[{index}]"
        step_type = registry.get(step.type)
        if step_type is None:
            known = ", ".join(registry.names())
            errors.append(
                {
                    "field": f"{where}.type",
                    "message": f"step '{step.id}': unknown step type '{step.type}' (known: {known})",
                }
            )
            continue
        size = len(json.dumps(step.config, separators=(",", ":")).encode())
        if size > max_config_bytes:
            errors.append(
                {
                    "field": f"{where}.config",
                    "message": f"step '{step.id}': config is {size} bytes, limit {max_config_bytes}",
                }
            )
            continue
        try:
            config = parse_config(step_type, step.config)
        except ValidationError as exc:
            for error in exc.errors():
                path = "".join(
                    f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
                ).lstrip(".")
                errors.append(
                    {
                        "field": f"{where}.config.{path}" if path else f"{where}.config",
                        "message": f"step '{step.id}': {error['msg']}",
                    }
                )
            continue
        errors += _template_errors(step_type, config, where, step.id)
        # The step ids the type routes to through its config (a branch's targets).
        for field in step_type.route_fields:
            target = getattr(config, field)
            if target is not None and target != END and target not in step_ids:
                errors.append(
                    {
                        "field": f"{where}.config.{field}",
                        "message": f"step '{step.id}' routes to unknown step '{target}'",
                    }
                )
    return errors


def _template_errors(
    step_type: StepType, config: BaseModel, where: str, step_id: str
) -> list[dict[str, str]]:
    """Every templated field parses, and uses `secrets` only where the step type allows it."""
    # Imported here: jinja2 stays off the cold-start path until a definition is validated.
    from workflows.templating import syntax_error, variables

    errors: list[dict[str, str]] = []
    for template in step_type.templates(config):
        field = f"{where}.config.{template.path}"
        problem = syntax_error(template.source, expression=template.expression)
        if problem is not None:
            errors.append({"field": field, "message": f"step '{step_id}': template syntax error: {problem}"})
        elif not template.secrets and "secrets" in variables(template.source):
            errors.append(
                {
                    "field": field,
                    "message": f"step '{step_id}': secrets may be used only in a webhook's url,"
                    " headers and body",
                }
            )
    return errors


def reads_inputs(steps: Iterable[StepSpec], registry: StepRegistry) -> bool:
    """Whether any template of `steps` (and of the steps they hold) names `inputs`: a branch or
    map item whose steps never read the run's inputs is started without a copy of them."""
    return reads(steps, registry, "inputs", nested=True)


def reads(steps: Iterable[StepSpec], registry: StepRegistry, name: str, *, nested: bool = False) -> bool:
    """Whether any template of `steps` names the variable `name` (`inputs`, `last`); with
    `nested`, the templates of the steps they hold too (a parallel's branches, a map's steps)."""
    from workflows.templating import variables

    for step in steps:
        step_type = registry.get(step.type)
        if step_type is None:
            continue
        config = parse_config(step_type, step.config)
        for field in step_type.templates(config):
            source = field.source
            if field.expression and "{{" not in source and "{%" not in source:
                source = "{{ " + source + " }}"  # a bare expression (a branch's condition)
            if name in variables(source):
                return True
        if (
            nested
            and isinstance(step_type, RunsSteps)
            and any(reads(inner, registry, name, nested=True) for inner in step_type.nested(config).values())
        ):
            return True
    return False


# The most steps a list may hold and still run inside its parent (engine.inline): one item's
# events are part of one commit.
MAX_INLINE_STEPS = 20


def runs_inline(steps: list[StepSpec], registry: StepRegistry) -> bool:
    """Whether a map item or a parallel branch of `steps` runs inside its parent run rather than
    as a child run: every step is `Pure` (log, branch), none is retried, there are at most
    MAX_INLINE_STEPS, and every route leads forward (no loop), so an item is a handful of
    renders that one commit records whole."""
    if len(steps) > MAX_INLINE_STEPS:
        return False
    position = {step.id: index for index, step in enumerate(steps)}
    for index, step in enumerate(steps):
        step_type = registry.get(step.type)
        if not isinstance(step_type, Pure) or step.retry.max_attempts > 1:
            return False
        config = parse_config(step_type, step.config)
        routes = [step.on_success, step.on_failure, step.on_timeout]
        routes += [getattr(config, name, None) for name in step_type.route_fields]
        for target in routes:
            if target is not None and target != END and position.get(target, -1) <= index:
                return False
    return True
