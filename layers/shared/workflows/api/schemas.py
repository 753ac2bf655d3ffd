"""Request and response models of the public API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workflows.domain.definition import WorkflowDefinition
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


class RunView(BaseModel):
    run_id: str
    tenant_id: str
    workflow_id: str | None
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
