"""Request and response models of the public API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.clock import iso
from workflows.domain.artifacts import ArtifactMeta
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.redaction import redact_definition
from workflows.domain.run import Run, RunEvent
from workflows.domain.workflows import WorkflowHead, WorkflowVersion

PREFIX = "/api/v1/workflows"


class AdhocRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: WorkflowDefinition
    inputs: dict[str, Any] = Field(default_factory=dict)


class RunLinks(BaseModel):
    self: str
    events: str
    definition: str


def links(run_id: str) -> RunLinks:
    base = f"{PREFIX}/runs/{run_id}"
    return RunLinks(self=base, events=f"{base}/events", definition=f"{base}/definition")


class RunAccepted(BaseModel):
    run_id: str
    status: str
    created_at: str
    links: RunLinks


class RunUsage(BaseModel):
    steps_executed: int


class RunView(BaseModel):
    run_id: str
    tenant_id: str
    workflow_id: str | None
    owner_id: str
    schedule_id: str | None
    definition_name: str
    definition_version: int
    status: str
    status_reason: str | None
    inputs: dict[str, Any]
    outputs: Any
    error: dict[str, Any] | None
    current_step_id: str | None
    attempt: int
    created_at: str
    updated_at: str
    started_at: str | None
    ended_at: str | None
    usage: RunUsage
    links: RunLinks

    @classmethod
    def of(cls, run: Run) -> RunView:
        return cls(
            run_id=run.run_id,
            tenant_id=run.tenant_id,
            workflow_id=run.workflow_id,
            owner_id=run.owner_id,
            schedule_id=run.schedule_id,
            definition_name=run.definition_name,
            definition_version=run.definition_version,
            status=run.status.value,
            status_reason=run.status_reason,
            inputs=run.inputs,
            outputs=run.outputs,
            error=run.error,
            current_step_id=run.current_step_id,
            attempt=run.attempt,
            created_at=run.created_at,
            updated_at=run.updated_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
            usage=RunUsage(steps_executed=run.steps_executed),
            links=links(run.run_id),
        )


class EventsPage(BaseModel):
    run_id: str
    events: list[RunEvent]
    next_since: int
    has_more: bool


# ---- saved definitions -------------------------------------------------------------------


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


# ---- run listing and step types ------------------------------------------------------------


class RunList(BaseModel):
    runs: list[RunView]
    next_cursor: str | None


class StepTypeView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    config_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema of the step's config")
    example: dict[str, Any]
    min_engine_version: str


class StepTypeList(BaseModel):
    step_types: list[StepTypeView]


# ---- errors and artifacts ------------------------------------------------------------------


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="stable, machine-readable")
    message: str
    details: list[ErrorDetail]


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code", "message", "details": [{"field", "message"}]}}`."""

    error: ErrorInfo


_ERROR_TEXT = {
    400: "malformed JSON or an invalid cursor",
    401: "missing or unknown X-API-KEY",
    403: "the caller lacks the permission",
    404: "not found (or another tenant's)",
    409: "conflicts with the current state",
    413: "the body, or a field of it, is too large (`payload_too_large`, details name the field)",
    415: "the body is not application/json",
    422: "a field fails validation (`validation_error`, `too_deep`); details name each one",
    429: "a submission quota is used up; retry after Retry-After (RateLimit-* headers)",
    503: "AWS failed or throttled; retry after Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer (401, 403, 422, 503 always)."""
    codes = sorted({401, 403, 422, 503, *statuses})
    return {status: {"model": ErrorBody, "description": _ERROR_TEXT[status]} for status in codes}


class ArtifactLinks(BaseModel):
    self: str
    download: str


class ArtifactView(BaseModel):
    artifact_id: str
    run_id: str
    step_id: str | None
    name: str
    size_bytes: int
    mime_type: str
    sha256: str = Field(description="hex SHA-256 of the contents")
    created_at: str
    expires_at: str = Field(description="when the artifact is deleted with its run")
    links: ArtifactLinks

    @classmethod
    def of(cls, meta: ArtifactMeta) -> ArtifactView:
        base = f"{PREFIX}/runs/{meta.run_id}/artifacts/{meta.artifact_id}"
        return cls(
            artifact_id=meta.artifact_id,
            run_id=meta.run_id,
            step_id=meta.step_id,
            name=meta.name,
            size_bytes=meta.size_bytes,
            mime_type=meta.mime_type,
            sha256=meta.sha256,
            created_at=meta.created_at,
            expires_at=iso(datetime.fromtimestamp(meta.expires_at, tz=UTC)),
            links=ArtifactLinks(self=base, download=f"{base}?download=true"),
        )


class ArtifactList(BaseModel):
    run_id: str
    artifacts: list[ArtifactView]


class ArtifactDetail(ArtifactView):
    download_url: str = Field(description="presigned S3 GET URL, valid for 5 minutes")
    download_url_expires_at: str
