"""Whole-definition validation: size and count limits, routing, and each step's config, down
through the steps a step holds (a parallel's branches, a map's steps)."""

from __future__ import annotations

from collections.abc import Iterator

from workflows.domain.definition import StepSpec, WorkflowDefinition, endless_loops, routing_errors
from workflows.errors import PayloadTooLarge, TooDeep, ValidationFailed
from workflows.settings import Settings
from workflows.steps.base import RunsSteps, StartsWorkflows
from workflows.steps.registry import StepRegistry, parse_config, validate_steps


def validate_definition(
    definition: WorkflowDefinition, settings: Settings, registry: StepRegistry, *, field: str = "definition"
) -> None:
    size = len(definition.canonical_json().encode())
    if size > settings.max_definition_bytes:
        raise PayloadTooLarge(
            f"{field or 'body'}: definition is {size} bytes, limit {settings.max_definition_bytes}",
            details=[{"field": field or "body", "message": "definition too large"}],
        )
    too_deep: list[dict[str, str]] = []
    errors = _errors(definition.steps, definition, settings, registry, "", 1, too_deep)
    errors += _duplicate_ids(definition.steps, registry)
    if too_deep:
        errors = too_deep
    if errors:
        for error in errors:
            # field="" for bodies that are the definition itself.
            error["field"] = f"{field}.{error['field']}" if field else error["field"]
        first = errors[0]
        kind = TooDeep if too_deep else ValidationFailed
        raise kind(f"{first['field']}: {first['message']}", details=errors)


def _errors(
    steps: list[StepSpec],
    definition: WorkflowDefinition,
    settings: Settings,
    registry: StepRegistry,
    prefix: str,
    level: int,
    too_deep: list[dict[str, str]],
) -> list[dict[str, str]]:
    """The problems of one list of steps (the definition's, or one a step holds), each field
    under `prefix`; nesting past the bound goes to `too_deep`."""
    mark = len(too_deep)
    part = definition if not prefix else definition.model_copy(update={"steps": steps})
    errors: list[dict[str, str]] = []
    if len(steps) > settings.max_steps:
        errors.append({"field": "steps", "message": f"{len(steps)} steps, limit {settings.max_steps}"})
    errors += routing_errors(part)
    if not errors:
        errors += endless_loops(part, registry.routing)
    found = validate_steps(part, registry, max_config_bytes=settings.max_step_config_bytes)
    errors += found
    broken = {error["field"].split(".")[0] for error in found}
    for index, step in enumerate(steps):
        where = f"steps[{index}]"
        step_type = registry.get(step.type)
        if where in broken or step_type is None:
            continue
        config = parse_config(step_type, step.config)
        items = getattr(config, "items", None) if step.type == "map" else None
        if isinstance(items, list) and len(items) > settings.max_map_items:
            errors.append(
                {
                    "field": f"{where}.config.items",
                    "message": f"step '{step.id}': {len(items)} items, limit {settings.max_map_items}",
                }
            )
        if not isinstance(step_type, RunsSteps):
            continue
        for path, inner in step_type.nested(config).items():
            inner_prefix = f"{where}.config.{path}"
            if level > settings.max_nesting:
                too_deep.append(
                    {
                        "field": inner_prefix,
                        "message": f"step '{step.id}': steps nest deeper than {settings.max_nesting} levels",
                    }
                )
                continue
            errors += _errors(inner, definition, settings, registry, inner_prefix, level + 1, too_deep)
    if prefix:
        for error in [*errors, *too_deep[mark:]]:
            error["field"] = _under(prefix, error["field"])
    return errors


def _under(prefix: str, field: str) -> str:
    """A field of a list of steps (`steps[1].id`, `steps`) as a field of the definition, the list
    at `prefix` (`steps[0].config.branches.b`): `steps[0].config.branches.b[1].id`."""
    return prefix + field.removeprefix("steps") if field.startswith("steps") else f"{prefix}.{field}"


def _all_steps(steps: list[StepSpec], registry: StepRegistry) -> Iterator[tuple[str, StepSpec]]:
    for index, step in enumerate(steps):
        yield f"steps[{index}]", step
        step_type = registry.get(step.type)
        if not isinstance(step_type, RunsSteps):
            continue
        try:
            config = parse_config(step_type, step.config)
        except ValueError:
            continue  # reported by validate_steps
        for path, inner in step_type.nested(config).items():
            for where, found in _all_steps(inner, registry):
                yield _under(f"steps[{index}].config.{path}", where), found


def _duplicate_ids(steps: list[StepSpec], registry: StepRegistry) -> list[dict[str, str]]:
    """Step ids are unique in the whole definition, branches and map steps included (each list's
    own duplicates are reported by its routing check)."""
    seen: dict[str, str] = {}
    errors: list[dict[str, str]] = []
    for where, step in _all_steps(steps, registry):
        first = seen.setdefault(step.id, where)
        if first != where and first.rsplit("[", 1)[0] != where.rsplit("[", 1)[0]:
            errors.append(
                {"field": f"{where}.id", "message": f"step id '{step.id}' is used already at {first}"}
            )
    return errors


def started_workflows(
    definition: WorkflowDefinition, registry: StepRegistry
) -> Iterator[tuple[str, StepSpec, str]]:
    """Each step that starts a saved workflow (a `workflow` step), down through the steps a step
    holds: its field (`steps[0].config.branches.b[1]`), the step and the workflow id it names.
    A step whose config is invalid is skipped: validation refuses it anyway."""
    for where, step in _all_steps(definition.steps, registry):
        step_type = registry.get(step.type)
        if not isinstance(step_type, StartsWorkflows):
            continue
        try:
            started = step_type.started_workflow(parse_config(step_type, step.config))
        except ValueError:
            continue
        if started is not None:
            yield where, step, started


def check_no_self_call(definition: WorkflowDefinition, registry: StepRegistry, workflow_id: str) -> None:
    """A version of a saved workflow whose `workflow` step names the workflow itself would start
    itself forever: refused (a cycle through other workflows meets the nesting bound at run
    time)."""
    for where, step, started in started_workflows(definition, registry):
        if started == workflow_id:
            field = f"{where}.config.workflow_id"
            message = f"step '{step.id}' starts workflow '{workflow_id}', the workflow itself"
            raise ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])
