"""Step executors registered by type name; definitions are validated against it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from workflows.domain.definition import END, WorkflowDefinition
from workflows.steps.approval import ApprovalStep
from workflows.steps.base import StepType
from workflows.steps.branch import BranchConfig, BranchStep
from workflows.steps.delay import DelayStep
from workflows.steps.log import LogStep

REGISTRY: dict[str, StepType] = {
    step.name: step for step in (LogStep(), DelayStep(), BranchStep(), ApprovalStep())
}
# The original module's names, accepted on input and stored under the canonical name.
ALIASES = {"wait_for_approval": "approval"}


def register(step_type: StepType) -> None:
    REGISTRY[step_type.name] = step_type


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
