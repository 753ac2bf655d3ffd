"""Saved definitions: create, version, soft delete, dry-run validation, and runs of them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from workflows.domain.definition import END, WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.json import JsonObject
from workflows.domain.paging import Position
from workflows.domain.principal import RUNS_READ, Principal
from workflows.domain.run import Run
from workflows.domain.workflows import DELETED, WorkflowHead, WorkflowVersion
from workflows.errors import NotFound, PayloadTooLarge, StaleWrite, ValidationFailed, WorkflowDeleted
from workflows.ports import DefinitionStore, RunLog
from workflows.services.access import (
    can_read_definition,
    check_change_definition,
    check_read_definition,
    check_secret_use,
    check_started_workflows,
    run_owner,
)
from workflows.services.runs import RunService
from workflows.services.validation import check_no_self_call, validate_definition
from workflows.settings import Settings
from workflows.steps.registry import StepRegistry

_VERSION_RACE_TRIES = 5
# A new version's fields that default to the latest version's when its body leaves them out.
CARRIED_FIELDS = frozenset({"description", "tags", "inputs_schema", "on_completion_webhook", "metadata"})


@dataclass
class ValidationReport:
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


class DefinitionService:
    def __init__(
        self, definitions: DefinitionStore, runs: RunService, registry: StepRegistry, settings: Settings
    ) -> None:
        self._definitions = definitions
        self._run_service = runs
        self._registry = registry
        self._settings = settings

    # ---- writes --------------------------------------------------------------------

    def create(
        self, principal: Principal, definition: WorkflowDefinition
    ) -> tuple[WorkflowHead, WorkflowVersion]:
        check_definition(definition, self._settings, self._registry)
        check_secret_use(principal, definition, self._registry)
        workflow_id = str(uuid.uuid4())
        head = self._definitions.create(principal.tenant_id, principal.user_id, workflow_id, definition)
        return head, self._version_of(head, definition)

    def add_version(
        self,
        principal: Principal,
        workflow_id: str,
        draft: dict[str, Any],
        *,
        expected_version: int | None = None,
    ) -> tuple[WorkflowHead, WorkflowVersion]:
        """Store `draft` as the next version. With `expected_version`, only if that is the next
        one (optimistic concurrency); without, concurrent writers each get their own number.

        `draft` holds the fields the caller sent: those of CARRIED_FIELDS it leaves out are the
        latest version's (null clears description, inputs_schema or on_completion_webhook, an
        empty list or object tags or metadata); name and steps are always the caller's."""
        for _ in range(_VERSION_RACE_TRIES):
            head = self._active_head(principal, workflow_id)
            check_change_definition(principal, head.created_by)
            next_version = head.latest_version + 1
            if expected_version is not None and expected_version != next_version:
                raise StaleWrite(
                    f"the next version of workflow '{workflow_id}' is {next_version}, not {expected_version}",
                    details=[{"field": "version", "message": f"expected {next_version}"}],
                )
            carried: dict[str, Any] = {}
            if CARRIED_FIELDS - set(draft):
                latest = self._definitions.get_version(principal.tenant_id, workflow_id, head.latest_version)
                if latest.definition is not None:
                    left_out = set(CARRIED_FIELDS - set(draft))
                    carried = latest.definition.model_dump(mode="json", include=left_out)
            definition = parse_definition({**carried, **draft, "version": next_version})
            check_definition(definition, self._settings, self._registry)
            check_no_self_call(definition, self._registry, workflow_id)
            check_secret_use(principal, definition, self._registry)
            try:
                new = self._definitions.add_version(head, principal.user_id, definition)
            except StaleWrite:
                if expected_version is not None:
                    raise
                continue
            return new, self._version_of(new, definition)
        raise StaleWrite(f"workflow '{workflow_id}' is changing too fast; try again")

    def delete(self, principal: Principal, workflow_id: str) -> WorkflowHead:
        current: WorkflowHead = self._definitions.get_head(principal.tenant_id, workflow_id)
        check_change_definition(principal, current.created_by)
        head: WorkflowHead = self._definitions.mark_deleted(principal.tenant_id, workflow_id)
        return head

    # ---- reads ---------------------------------------------------------------------

    def get(
        self, principal: Principal, workflow_id: str, version: int | None = None
    ) -> tuple[WorkflowHead, WorkflowVersion]:
        head: WorkflowHead = self._definitions.get_head(principal.tenant_id, workflow_id)
        check_read_definition(principal, head.created_by)
        wanted = head.latest_version if version is None else version
        stored: WorkflowVersion = self._definitions.get_version(principal.tenant_id, workflow_id, wanted)
        return head, stored

    def list_workflows(
        self, principal: Principal, *, include_deleted: bool, limit: int, start: Position | None
    ) -> tuple[list[WorkflowHead], Position | None]:
        result: tuple[list[WorkflowHead], Position | None] = self._definitions.list_heads(
            principal.tenant_id,
            include_deleted=include_deleted,
            limit=limit,
            start=start,
            # Without workflows.runs.read a user lists their own workflows only.
            created_by=None if principal.can(RUNS_READ) else principal.user_id,
        )
        return result

    def list_versions(
        self, principal: Principal, workflow_id: str, *, limit: int, start: Position | None
    ) -> tuple[WorkflowHead, list[WorkflowVersion], Position | None]:
        head: WorkflowHead = self._definitions.get_head(principal.tenant_id, workflow_id)
        check_read_definition(principal, head.created_by)
        versions, position = self._definitions.list_versions(
            principal.tenant_id, workflow_id, limit=limit, start=start
        )
        return head, versions, position

    # ---- runs ----------------------------------------------------------------------

    def submit_run(
        self, principal: Principal, workflow_id: str, inputs: dict[str, Any], version: int | None = None
    ) -> Run:
        """Run a saved definition: its latest version, or the one named."""
        head = self._active_head(principal, workflow_id)
        check_read_definition(principal, head.created_by)
        wanted = head.latest_version if version is None else version
        try:
            stored = self._definitions.get_version(principal.tenant_id, workflow_id, wanted)
        except NotFound as exc:
            raise NotFound(
                exc.message, details=[{"field": "version", "message": f"no version {wanted}"}]
            ) from exc
        assert stored.definition is not None
        check_started_workflows(principal, stored.definition, self._registry, self._definitions)
        check_inputs(stored.definition, inputs)
        return self._run_service.submit(principal, stored.definition, inputs, workflow_id=workflow_id)

    # ---- helpers -------------------------------------------------------------------

    def _active_head(self, principal: Principal, workflow_id: str) -> WorkflowHead:
        head: WorkflowHead = self._definitions.get_head(principal.tenant_id, workflow_id)
        if head.status == DELETED:
            raise WorkflowDeleted(f"workflow '{workflow_id}' is deleted and can no longer be run or changed")
        return head

    @staticmethod
    def _version_of(head: WorkflowHead, definition: WorkflowDefinition) -> WorkflowVersion:
        return WorkflowVersion(
            workflow_id=head.workflow_id,
            version=definition.version,
            name=definition.name,
            description=definition.description,
            created_at=head.updated_at,
            created_by=head.created_by,
            definition=definition,
        )


# ---- validation ----------------------------------------------------------------------


def parse_definition(raw: dict[str, Any], *, field_prefix: str = "") -> WorkflowDefinition:
    try:
        return WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        details = pydantic_details(exc, field_prefix)
        raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details) from exc


def check_definition(
    definition: WorkflowDefinition, settings: Settings, registry: StepRegistry, *, field_prefix: str = ""
) -> None:
    """Everything validate_definition checks, plus that inputs_schema is a usable JSON Schema."""
    validate_definition(definition, settings, registry, field=field_prefix.rstrip("."))
    errors = inputs_schema_errors(definition, field_prefix)
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", details=errors)


def inputs_schema_errors(definition: WorkflowDefinition, field_prefix: str = "") -> list[dict[str, str]]:
    """Why inputs_schema is refused: not a JSON Schema, or one whose patterns RE2 cannot run
    within bounds (services/inputs_schema.py)."""
    schema = definition.inputs_schema
    if schema is None:
        return []
    # Imported here, not at module level: jsonschema and RE2 stay off the cold-start path.
    from workflows.services.inputs_schema import schema_problems

    return [
        {"field": f"{field_prefix}inputs_schema{path}", "message": message}
        for path, message in schema_problems(schema)
    ]


def check_inputs(definition: WorkflowDefinition, inputs: dict[str, Any], *, field: str = "inputs") -> None:
    """Inputs against the definition's inputs_schema; each error names the input field."""
    schema = definition.inputs_schema
    if schema is None:
        return
    from workflows.services.inputs_schema import InputsTooCostly, SchemaRefused, input_errors

    try:
        errors = input_errors(schema, inputs)
    except SchemaRefused as exc:  # a definition saved before its schema was held to these rules
        where = f"inputs_schema{exc.path}"
        raise ValidationFailed(
            f"{where}: {exc.message}", details=[{"field": where, "message": exc.message}]
        ) from exc
    except InputsTooCostly as exc:
        message = f"cannot be checked against inputs_schema: {exc}"
        raise ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}]) from exc
    details: list[dict[str, str]] = []
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        path = _json_path(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            for name in missing:
                details.append({"field": f"{field}{path}.{name}", "message": "is required"})
            continue
        details.append({"field": f"{field}{path}", "message": error.message})
    if details:
        raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details)


def dry_run(raw: JsonObject, settings: Settings, registry: StepRegistry) -> ValidationReport:
    """Every problem a create would refuse, as data; plus warnings that would not refuse it."""
    report = ValidationReport()
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        report.errors = pydantic_details(exc)
        return report
    try:
        validate_definition(definition, settings, registry, field="")
    except (ValidationFailed, PayloadTooLarge) as exc:
        report.errors += [{"field": str(d["field"]), "message": str(d["message"])} for d in exc.details]
    report.errors += inputs_schema_errors(definition)
    report.warnings = unreachable_steps(definition, registry)
    return report


def unreachable_steps(definition: WorkflowDefinition, registry: StepRegistry) -> list[dict[str, str]]:
    """Steps that no path from the first step reaches (they would never run)."""
    ids = [step.id for step in definition.steps]
    reached: set[str] = set()
    pending = [ids[0]]
    while pending:
        step_id = pending.pop()
        if step_id in reached or step_id not in ids:
            continue
        reached.add(step_id)
        step = definition.step(step_id)
        index = ids.index(step_id)
        targets = [step.on_failure, step.on_timeout]
        if step.on_success is None:
            targets.append(ids[index + 1] if index + 1 < len(ids) else None)
        else:
            targets.append(step.on_success)
        # A type that chooses where a run goes (a branch) names the ways in its config.
        targets += [step.config.get(name) for name in registry.routing(step.type).fields]
        pending += [t for t in targets if isinstance(t, str) and t != END]
    return [
        {"field": f"steps[{index}]", "message": f"step '{step_id}' is never reached"}
        for index, step_id in enumerate(ids)
        if step_id not in reached
    ]


def pydantic_details(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    details = []
    for error in exc.errors():
        path = _json_path(error["loc"])
        name = f"{prefix}{path.lstrip('.')}" if path else (prefix.rstrip(".") or "body")
        details.append({"field": name, "message": str(error["msg"])})
    return details


def _json_path(parts: Sequence[Any]) -> str:
    """("steps", 0, "id") -> ".steps[0].id" (empty for the root)."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class ChildWorkflows:
    """Saved workflows as a `workflow` step starts them (engine.children.SavedWorkflows): the
    tenant's workflow, not deleted, at its latest version or the one named, with the child's
    inputs checked against its inputs_schema. In multi-user mode, only one the parent run's owner
    could run themselves, as `POST /{workflow_id}/runs` checks it: their own, or any with
    `workflows.runs.read` as they held it when the run was submitted. Each refusal fails the step
    (not retried)."""

    def __init__(self, definitions: DefinitionStore, runs: RunLog, *, multi_user: bool) -> None:
        self._definitions = definitions
        self._runs = runs
        self._multi_user = multi_user

    def definition(
        self, parent: Run, workflow_id: str, version: int | None, inputs: dict[str, Any]
    ) -> WorkflowDefinition:
        tenant_id = parent.tenant_id
        try:
            head = self._definitions.get_head(tenant_id, workflow_id)
        except NotFound:
            raise StepFailed("workflow_not_found", f"no workflow '{workflow_id}'", retryable=False) from None
        if not self._may_start(parent, head.created_by):
            raise StepFailed(
                "workflow_forbidden",
                f"the run's owner '{parent.owner_id}' may not run workflow '{workflow_id}': it belongs to"
                f" another user (missing permission {RUNS_READ})",
                retryable=False,
            )
        if head.status == DELETED:
            raise StepFailed("workflow_deleted", f"workflow '{workflow_id}' is deleted", retryable=False)
        wanted = head.latest_version if version is None else version
        try:
            stored = self._definitions.get_version(tenant_id, workflow_id, wanted)
        except NotFound:
            raise StepFailed(
                "workflow_not_found", f"workflow '{workflow_id}' has no version {wanted}", retryable=False
            ) from None
        assert stored.definition is not None
        try:
            check_inputs(stored.definition, inputs)
        except ValidationFailed as exc:
            raise StepFailed("invalid_inputs", f"the child's {exc.message}", retryable=False) from None
        return stored.definition

    def _may_start(self, parent: Run, created_by: str) -> bool:
        if not self._multi_user or created_by == parent.owner_id:
            return True  # the owner's own workflow: nothing to read
        return can_read_definition(run_owner(parent, self._owner_permissions(parent)), created_by)

    def _owner_permissions(self, run: Run) -> list[str] | None:
        """The permissions the run's owner held when submitting it: recorded on the run a caller
        or a schedule submitted, which a child run finds by going up its parents (a few reads,
        at most the nesting bound, and only for another user's workflow). None when they are not
        known (a run stored before they were recorded): the owner's own workflows only, then."""
        current = run
        while current.owner_permissions is None and current.parent_run_id is not None:
            try:
                current = self._runs.get(current.tenant_id, current.parent_run_id)
            except NotFound:
                return None
        return current.owner_permissions
