"""Saved workflow definitions: create, list, read, version, soft delete, validate, run.

Included last: its `/{workflow_id}` paths only match UUIDs, so they cannot shadow `/runs`,
`/step-types` or `/validate`, and the order keeps it that way for any future path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.api import cursor
from workflows.api.auth import Caller, Submitter
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.routes.runs import IdempotencyKey, accepted
from workflows.api.schemas import PREFIX, RunAccepted, error_responses
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.redaction import redact_definition
from workflows.domain.run import Run
from workflows.domain.workflows import WorkflowHead, WorkflowVersion
from workflows.services.definitions import dry_run


class DefinitionDraft(WorkflowDefinition):
    """A new version's body: a definition whose version the service assigns (latest + 1).

    A `version` in the body is a precondition: the write happens only if it is the next one.
    """

    version: int | None = Field(default=None, ge=1)  # type: ignore[assignment]


class SavedRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, description="default: the latest version")


class DefinitionLinks(BaseModel):
    self: str
    versions: str
    runs: str


def definition_links(workflow_id: str) -> DefinitionLinks:
    base = f"{PREFIX}/{workflow_id}"
    return DefinitionLinks(self=base, versions=f"{base}/versions", runs=f"{base}/runs")


class DefinitionSummary(BaseModel):
    workflow_id: str
    name: str
    version: int = Field(description="the latest version")
    description: str | None
    tags: list[str]
    status: Literal["active", "deleted"]
    created_at: str
    updated_at: str
    deleted_at: str | None
    links: DefinitionLinks

    @classmethod
    def of(cls, head: WorkflowHead) -> DefinitionSummary:
        return cls(
            workflow_id=head.workflow_id,
            name=head.name,
            version=head.latest_version,
            description=head.description,
            tags=head.tags,
            status=head.status,
            created_at=head.created_at,
            updated_at=head.updated_at,
            deleted_at=head.deleted_at,
            links=definition_links(head.workflow_id),
        )


class DefinitionView(DefinitionSummary):
    """A workflow with one version's definition (the latest unless a version was asked for)."""

    latest_version: int
    definition: WorkflowDefinition

    @classmethod
    def of_version(cls, head: WorkflowHead, version: WorkflowVersion) -> DefinitionView:
        assert version.definition is not None
        summary = DefinitionSummary.of(head).model_dump()
        summary.update(
            name=version.name,
            version=version.version,
            description=version.description,
            tags=version.definition.tags,
            latest_version=head.latest_version,
        )
        return cls(**summary, definition=redact_definition(version.definition))


class DefinitionList(BaseModel):
    workflows: list[DefinitionSummary]
    next_cursor: str | None


class VersionSummary(BaseModel):
    version: int
    name: str
    description: str | None
    created_at: str
    created_by: str
    self: str


class VersionList(BaseModel):
    workflow_id: str
    versions: list[VersionSummary]
    next_cursor: str | None


class ValidationIssue(BaseModel):
    field: str
    message: str


class ValidationReportView(BaseModel):
    valid: bool
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]


router = APIRouter(route_class=GuardedRoute)

Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(alias="cursor", description="next_cursor of the previous page")]


@router.post(
    "", status_code=201, response_model=DefinitionView, responses=error_responses(400, 409, 413, 415)
)
def create_definition(
    body: WorkflowDefinition, response: Response, principal: Caller, c: Services
) -> DefinitionView:
    head, version = c.definition_service.create(principal, body)
    response.headers["Location"] = definition_links(head.workflow_id).self
    return DefinitionView.of_version(head, version)


@router.get("", response_model=DefinitionList, responses=error_responses(400))
def list_definitions(
    principal: Caller,
    c: Services,
    limit: Limit = 50,
    include_deleted: bool = False,
    cursor_: Cursor = None,
) -> DefinitionList:
    """The caller's workflows, newest first; active ones unless include_deleted=true."""
    scope = ["definitions", principal.tenant_id, include_deleted]
    heads, position = c.definition_service.list_workflows(
        principal, include_deleted=include_deleted, limit=limit, start=cursor.decode(cursor_, scope)
    )
    return DefinitionList(
        workflows=[DefinitionSummary.of(head) for head in heads], next_cursor=cursor.encode(position, scope)
    )


@router.post("/validate", response_model=ValidationReportView, responses=error_responses(400, 415))
def validate_definition(body: Annotated[dict[str, Any], Body()], c: Services, principal: Caller) -> Any:
    """Dry run: every problem a create would refuse (200 even when invalid), and warnings."""
    report = dry_run(body, c.settings, c.registry)
    return ValidationReportView(
        valid=report.valid,
        errors=[ValidationIssue(**e) for e in report.errors],
        warnings=[ValidationIssue(**w) for w in report.warnings],
    )


@router.get("/{workflow_id:uuid}", response_model=DefinitionView, responses=error_responses(404))
def get_definition(
    workflow_id: UUID,
    principal: Caller,
    c: Services,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
) -> DefinitionView:
    head, stored = c.definition_service.get(principal, str(workflow_id), version)
    return DefinitionView.of_version(head, stored)


@router.delete("/{workflow_id:uuid}", response_model=DefinitionSummary, responses=error_responses(404, 409))
def delete_definition(workflow_id: UUID, principal: Caller, c: Services) -> DefinitionSummary:
    """Soft delete: the workflow stays readable, but can no longer be run or versioned."""
    return DefinitionSummary.of(c.definition_service.delete(principal, str(workflow_id)))


@router.post(
    "/{workflow_id:uuid}/versions",
    status_code=201,
    response_model=DefinitionView,
    responses=error_responses(400, 404, 409, 413, 415),
)
def create_version(
    workflow_id: UUID, body: DefinitionDraft, response: Response, principal: Caller, c: Services
) -> DefinitionView:
    # Only what the caller sent: fields left out carry over from the latest version.
    draft = body.model_dump(exclude={"version"}, exclude_unset=True)
    head, stored = c.definition_service.add_version(
        principal, str(workflow_id), draft, expected_version=body.version
    )
    response.headers["Location"] = f"{definition_links(head.workflow_id).self}?version={stored.version}"
    return DefinitionView.of_version(head, stored)


@router.get("/{workflow_id:uuid}/versions", response_model=VersionList, responses=error_responses(400, 404))
def list_versions(
    workflow_id: UUID,
    principal: Caller,
    c: Services,
    limit: Limit = 50,
    cursor_: Cursor = None,
) -> VersionList:
    """Every version of the workflow, newest first (without the definitions themselves)."""
    wid = str(workflow_id)
    scope = ["versions", principal.tenant_id, wid]
    _, versions, position = c.definition_service.list_versions(
        principal, wid, limit=limit, start=cursor.decode(cursor_, scope)
    )
    base = definition_links(wid).self
    return VersionList(
        workflow_id=wid,
        versions=[
            VersionSummary(
                version=v.version,
                name=v.name,
                description=v.description,
                created_at=v.created_at,
                created_by=v.created_by,
                self=f"{base}?version={v.version}",
            )
            for v in versions
        ],
        next_cursor=cursor.encode(position, scope),
    )


@router.post(
    "/{workflow_id:uuid}/runs",
    status_code=202,
    response_model=RunAccepted,
    responses=error_responses(400, 404, 409, 413, 415, 429),
)
def submit_saved_run(
    workflow_id: UUID,
    response: Response,
    principal: Submitter,
    c: Services,
    body: SavedRunRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> RunAccepted:
    """Run the workflow's latest version (or `version`) with `inputs`."""
    body = body or SavedRunRequest()
    wid = str(workflow_id)

    def submit() -> Run:
        return c.definition_service.submit_run(principal, wid, body.inputs, body.version)

    request = {"route": f"workflows/{wid}/runs", "body": body.model_dump(mode="json")}
    run, replayed = c.run_service.submit_once(principal, idempotency_key, request, submit)
    return accepted(run, response, replayed=replayed)


@router.post(
    "/{workflow_id:uuid}/run",
    status_code=202,
    response_model=RunAccepted,
    summary="Submit Saved Run (alias)",
    responses=error_responses(400, 404, 409, 413, 415, 429),
)
def submit_saved_run_alias(
    workflow_id: UUID,
    response: Response,
    principal: Submitter,
    c: Services,
    body: SavedRunRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> RunAccepted:
    """The original module's name for POST /{workflow_id}/runs."""
    return submit_saved_run(workflow_id, response, principal, c, body, idempotency_key)
