"""Step executors registered by type name; definitions are validated against it.

The local step types (log, delay, branch, approval) are imported with this module. The ones that
call out (prompt, rag_search, webhook) are known by name only: a type's module is imported, and
the type built from the composition root's container, the first time a definition uses it. Their
modules bring HTTP clients and the LLM, retrieval, egress and signing code, which most
invocations never need and which would otherwise add to every function's cold start.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from workflows.domain.definition import END, WorkflowDefinition
from workflows.steps.approval import ApprovalStep
from workflows.steps.base import StepDependencies, StepType
from workflows.steps.branch import BranchConfig, BranchStep
from workflows.steps.delay import DelayStep
from workflows.steps.log import LogStep

# Type name -> "module:attribute" of a factory taking StepDependencies, for the types imported on
# first use. Every name here is known (validation errors, GET /step-types) before it is loaded.
CONFIGURED_TYPES: dict[str, str] = {
    "prompt": "workflows.steps.prompt:from_dependencies",
    "rag_search": "workflows.steps.rag_search:from_dependencies",
    "webhook": "workflows.steps.webhook:from_dependencies",
}


class StepRegistry(Mapping[str, StepType]):
    """Every known step type by name; a configured type is built on its first lookup."""

    def __init__(self, local: Iterable[StepType], configured: Mapping[str, str]) -> None:
        self._types: dict[str, StepType] = {step.name: step for step in local}
        self._configured = dict(configured)
        self._dependencies: StepDependencies | None = None
        self._lock = threading.RLock()

    def __getitem__(self, name: str) -> StepType:
        step = self._types.get(name)
        return step if step is not None else self._load(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types or name in self._configured

    def get(self, name: str, default: StepType | None = None) -> StepType | None:  # type: ignore[override]
        # Not Mapping.get: a KeyError raised while building a type must not read as "unknown".
        step = self._types.get(name)
        if step is None and name in self._configured:
            step = self._load(name)
        return default if step is None else step

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(dict.fromkeys([*self._types, *self._configured])))

    def __len__(self) -> int:
        with self._lock:
            return len(self._types.keys() | self._configured.keys())

    def register(self, step_type: StepType) -> None:
        with self._lock:
            self._types[step_type.name] = step_type

    def configure(self, dependencies: StepDependencies) -> None:
        """Build the configured types from these dependencies; any already built is dropped."""
        with self._lock:
            self._dependencies = dependencies
            for name in self._configured:
                self._types.pop(name, None)

    def _load(self, name: str) -> StepType:
        target = self._configured[name]  # KeyError: not a step type
        with self._lock:
            step = self._types.get(name)
            if step is None:
                module_name, _, attribute = target.partition(":")
                # Imported on first use rather than with this module: cold start (see above).
                factory = getattr(importlib.import_module(module_name), attribute)
                step = factory(self._dependencies or _process_container())
                self._types[name] = step
            return step


def _process_container() -> StepDependencies:
    """Used before any container was built: the process's own, which configures the registry."""
    # Imported here: the composition root imports this module.
    from workflows.bootstrap import get_container

    return get_container()


REGISTRY = StepRegistry((LogStep(), DelayStep(), BranchStep(), ApprovalStep()), CONFIGURED_TYPES)
# The original module's names, accepted on input and stored under the canonical name.
ALIASES = {"wait_for_approval": "approval"}
# Step types that choose where a run goes next or wait for a person: a cycle through one of them
# is a loop a run can leave (domain.definition.endless_loops).
DECIDING_TYPES = frozenset({"branch", "approval", *ALIASES})


def register(step_type: StepType) -> None:
    REGISTRY.register(step_type)


def configure(dependencies: StepDependencies) -> None:
    """Called by the composition root for each container it builds (the last one wins)."""
    REGISTRY.configure(dependencies)


def canonical_type(name: str) -> str:
    return ALIASES.get(name, name)


def get_step_type(name: str) -> StepType | None:
    return REGISTRY.get(canonical_type(name))


def parse_config(step_type: StepType, config: dict[str, Any]) -> BaseModel:
    return step_type.config_model.model_validate(config)


def validate_steps(definition: WorkflowDefinition, *, max_config_bytes: int) -> list[dict[str, str]]:
    """Every problem with the definition's steps, each naming the step and the field."""
    errors: list[dict[str, str]] = []
    step_ids = {step.id for step in definition.steps}
    for index, step in enumerate(definition.steps):
        where = f"steps[{index}]"
        step_type = get_step_type(step.type)
        if step_type is None:
            known = ", ".join(sorted(REGISTRY))
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
                path = ".".join(str(part) for part in error["loc"])
                errors.append(
                    {
                        "field": f"{where}.config.{path}" if path else f"{where}.config",
                        "message": f"step '{step.id}': {error['msg']}",
                    }
                )
            continue
        errors += _template_errors(step_type, config, where, step.id)
        if isinstance(config, BranchConfig):
            for field in ("true_next", "false_next"):
                target = getattr(config, field)
                if target != END and target not in step_ids:
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
