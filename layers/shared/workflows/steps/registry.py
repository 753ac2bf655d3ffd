"""Step executors registered by type name; definitions are validated against it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from workflows.domain.definition import WorkflowDefinition
from workflows.steps.base import StepType
from workflows.steps.log import LogStep

REGISTRY: dict[str, StepType] = {step.name: step for step in (LogStep(),)}


def get_step_type(name: str) -> StepType:
    return REGISTRY[name]


def parse_config(step_type: StepType, config: dict[str, Any]) -> BaseModel:
    return step_type.config_model.model_validate(config)


def validate_steps(definition: WorkflowDefinition, *, max_config_bytes: int) -> list[dict[str, str]]:
    """Every problem with the definition's steps, each naming the step and the field."""
    errors: list[dict[str, str]] = []
    for index, step in enumerate(definition.steps):
        where = f"steps[{index}]"
        step_type = REGISTRY.get(step.type)
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
            parse_config(step_type, step.config)
        except ValidationError as exc:
            for error in exc.errors():
                path = ".".join(str(part) for part in error["loc"])
                errors.append(
                    {
                        "field": f"{where}.config.{path}" if path else f"{where}.config",
                        "message": f"step '{step.id}': {error['msg']}",
                    }
                )
    return errors
