"""Request and response models of the public API."""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from workflows.domain import fanout
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.fanout import Fanout
from workflows.domain.run import Run, RunEvent

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


class ChildrenView(BaseModel):
    """The children the run's current step waits for (a parallel's branches, a map's items, a
    child workflow): counts, and the first failures."""

    step_id: str
    kind: str
    total: int
    started: int
    running: int
    succeeded: int
    failed: int
    failures: list[dict[str, Any]]
    # The items (branches) run inside this run, a batch per commit: no child runs to open.
    inline: bool = False

    @classmethod
    def of(cls, run: Run) -> ChildrenView | None:
        if run.fanout is None or run.is_terminal or run.fanout.get("step_id") != run.current_step_id:
            return None
        record = cast(Fanout, run.fanout)
        return cls(
            step_id=record["step_id"],
            kind=record["kind"],
            total=record["total"],
            started=record["started"],
            running=len(fanout.running(record)),
            succeeded=record["succeeded"],
            failed=record["failed"],
            failures=list(record["failures"]),
            inline=bool(record.get("inline")),
        )


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
    # A child run: the run and step that started it, and the branch or item it runs.
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    branch: str | None = None
    item_index: int | None = None
    children: ChildrenView | None = None
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
            parent_run_id=run.parent_run_id,
            parent_step_id=run.parent_step_id,
            branch=(run.child or {}).get("branch"),
            item_index=(run.child or {}).get("index") if run.scope and "item" in run.scope else None,
            children=ChildrenView.of(run),
            usage=RunUsage(steps_executed=run.steps_executed),
            links=links(run.run_id),
        )


class EventsPage(BaseModel):
    run_id: str
    events: list[RunEvent]
    next_since: int
    has_more: bool


# ---- run listing ------------------------------------------------------------


class RunList(BaseModel):
    runs: list[RunView]
    next_cursor: str | None


# ---- errors ------------------------------------------------------------------


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
    429: "a quota is used up (the caller's submissions, the tenant's signals); retry after"
    " Retry-After (RateLimit-* headers)",
    503: "AWS failed or throttled; retry after Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer (401, 403, 422, 503 always)."""
    codes = sorted({401, 403, 422, 503, *statuses})
    return {status: {"model": ErrorBody, "description": _ERROR_TEXT[status]} for status in codes}
