"""Whole-definition validation: size and count limits, routing, and each step's config."""

from __future__ import annotations

from workflows.domain.definition import WorkflowDefinition, endless_loops, routing_errors
from workflows.errors import PayloadTooLarge, ValidationFailed
from workflows.settings import Settings
from workflows.steps.registry import StepRegistry, validate_steps


def validate_definition(
    definition: WorkflowDefinition, settings: Settings, registry: StepRegistry, *, field: str = "definition"
) -> None:
    size = len(definition.canonical_json().encode())
    if size > settings.max_definition_bytes:
        raise PayloadTooLarge(
            f"{field or 'body'}: definition is {size} bytes, limit {settings.max_definition_bytes}",
            details=[{"field": field or "body", "message": "definition too large"}],
        )
    errors: list[dict[str, str]] = []
    if len(definition.steps) > settings.max_steps:
        errors.append(
            {"field": "steps", "message": f"{len(definition.steps)} steps, limit {settings.max_steps}"}
        )
    errors += routing_errors(definition)
    if not errors:
        errors += endless_loops(definition, registry.routing)
    errors += validate_steps(definition, registry, max_config_bytes=settings.max_step_config_bytes)
    if errors:
        for error in errors:
            # field="" for bodies that are the definition itself.
            error["field"] = f"{field}.{error['field']}" if field else error["field"]
        first = errors[0]
        raise ValidationFailed(f"{first['field']}: {first['message']}", details=errors)
