"""Run routes: submit, read, events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from workflows.api.auth import Caller, require
from workflows.api.deps import ContainerDep
from workflows.api.schemas import AdhocRunRequest, EventsPage, RunAccepted, RunView, links
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import RUNS_READ, Principal
from workflows.services.runs import RunService

router = APIRouter()
Reader = Annotated[Principal, Depends(require(RUNS_READ))]


@router.post("/runs", status_code=202, response_model=RunAccepted)
def submit_adhoc_run(
    body: AdhocRunRequest,
    response: Response,
    principal: Caller,
    c: ContainerDep,
) -> RunAccepted:
    run = RunService(c).submit(principal, body.definition, body.inputs)
    response.headers["Location"] = links(run.run_id).self
    return RunAccepted(
        run_id=run.run_id, status=run.status.value, created_at=run.created_at, links=links(run.run_id)
    )


@router.get("/runs/{run_id}", response_model=RunView)
def get_run(
    run_id: str,
    principal: Reader,
    c: ContainerDep,
) -> RunView:
    return RunView.of(c.runs.get(principal.tenant_id, run_id))


@router.get("/runs/{run_id}/events", response_model=EventsPage)
def list_run_events(
    run_id: str,
    principal: Reader,
    c: ContainerDep,
    since: Annotated[int, Query(ge=0, description="return events with event_seq > since")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    types: Annotated[list[str] | None, Query(description="comma-separated or repeated")] = None,
) -> EventsPage:
    wanted = sorted({t.strip() for value in types or [] for t in value.split(",") if t.strip()})
    c.runs.get(principal.tenant_id, run_id)  # 404 for a run that does not exist (or not yours)
    page = c.runs.list_events(principal.tenant_id, run_id, since=since, limit=limit, types=wanted)
    return EventsPage(run_id=run_id, events=page.events, next_since=page.next_since, has_more=page.has_more)


@router.get("/runs/{run_id}/definition", response_model=WorkflowDefinition)
def get_run_definition(run_id: str, principal: Reader, c: ContainerDep) -> WorkflowDefinition:
    """The exact definition snapshot the run executes."""
    _, definition = c.runs.get_with_definition(principal.tenant_id, run_id)
    return definition
