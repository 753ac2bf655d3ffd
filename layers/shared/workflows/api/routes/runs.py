"""Run routes: submit, read, events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Response

from workflows.api import cursor
from workflows.api.auth import Caller, require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import RunId
from workflows.api.schemas import (
    AdhocRunRequest,
    EventsPage,
    RunAccepted,
    RunList,
    RunView,
    error_responses,
    links,
)
from workflows.clock import iso
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import RUNS_READ, Principal
from workflows.domain.redaction import redact_definition
from workflows.domain.run import Run, RunStatus
from workflows.errors import ValidationFailed
from workflows.services.definitions import check_inputs, inputs_schema_errors
from workflows.services.queries import MAX_WAIT_SECONDS, event_types

router = APIRouter(route_class=GuardedRoute)
Reader = Annotated[Principal, Depends(require(RUNS_READ))]


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="retrying with the same key and body returns the same run for 24 hours",
    ),
]


def accepted(run: Run, response: Response, *, replayed: bool) -> RunAccepted:
    response.headers["Location"] = links(run.run_id).self
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RunAccepted(
        run_id=run.run_id, status=run.status.value, created_at=run.created_at, links=links(run.run_id)
    )


@router.post(
    "/runs", status_code=202, response_model=RunAccepted, responses=error_responses(400, 409, 413, 415, 429)
)
def submit_adhoc_run(
    body: AdhocRunRequest,
    response: Response,
    principal: Caller,
    c: Services,
    idempotency_key: IdempotencyKey = None,
) -> RunAccepted:
    service = c.run_service
    # Checked before the submission is counted against the caller's quotas: a refused use of
    # secrets costs nothing.
    service.check_adhoc(principal, body.definition)
    response.headers.update(c.submission_quotas.charge(principal))

    def submit() -> Run:
        schema_errors = inputs_schema_errors(body.definition, "definition.")
        if schema_errors:
            first = schema_errors[0]
            raise ValidationFailed(f"{first['field']}: {first['message']}", details=schema_errors)
        check_inputs(body.definition, body.inputs)
        return service.submit(principal, body.definition, body.inputs)

    request = {"route": "runs", "body": body.model_dump(mode="json")}
    run, replayed = service.submit_once(principal, idempotency_key, request, submit)
    return accepted(run, response, replayed=replayed)


@router.post(
    "/run",
    status_code=202,
    response_model=RunAccepted,
    summary="Submit Adhoc Run (alias)",
    responses=error_responses(400, 409, 413, 415, 429),
)
def submit_adhoc_run_alias(
    body: AdhocRunRequest,
    response: Response,
    principal: Caller,
    c: Services,
    idempotency_key: IdempotencyKey = None,
) -> RunAccepted:
    """The original module's name for POST /runs."""
    return submit_adhoc_run(body, response, principal, c, idempotency_key)


@router.get("/runs", response_model=RunList, responses=error_responses(400))
def list_runs(
    principal: Caller,
    c: Services,
    status: Annotated[list[RunStatus] | None, Query(description="repeatable")] = None,
    workflow_id: Annotated[UUID | None, Query(description="only this workflow's runs")] = None,
    created_after: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    created_before: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor_: Annotated[str | None, Query(alias="cursor")] = None,
) -> RunList:
    """The tenant's runs, newest first (the caller's own without workflows.runs.read)."""
    after = iso(_utc(created_after, "created_after")) if created_after else None
    before = iso(_utc(created_before, "created_before")) if created_before else None
    if after and before and after >= before:
        raise ValidationFailed(
            "created_before: must be later than created_after",
            details=[{"field": "created_before", "message": "must be later than created_after"}],
        )
    statuses = sorted({s.value for s in status or []})
    owner = None if principal.can(RUNS_READ) else principal.user_id
    wid = None if workflow_id is None else str(workflow_id)
    scope = ["runs", principal.tenant_id, wid, ",".join(statuses), after, before, owner]
    runs, position = c.queries.list_runs(
        principal,
        workflow_id=wid,
        statuses=statuses,
        created_after=after,
        created_before=before,
        limit=limit,
        start=cursor.decode(cursor_, scope),
    )
    return RunList(runs=[RunView.of(run) for run in runs], next_cursor=cursor.encode(position, scope))


def _utc(moment: datetime, field: str) -> datetime:
    """Times without an offset are UTC; a time whose UTC equivalent is not representable is refused."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValidationFailed(
            f"{field}: out of range", details=[{"field": field, "message": "out of range"}]
        ) from exc


@router.get("/runs/{run_id}", response_model=RunView, responses=error_responses(404))
def get_run(
    run_id: RunId,
    principal: Caller,
    c: Services,
) -> RunView:
    return RunView.of(c.queries.get(principal, run_id))


WAIT_DESCRIPTION = (
    f"seconds to wait for an event after `since` (0 to {MAX_WAIT_SECONDS}, fractions allowed; 0 answers"
    " at once). Answers as soon as one exists, at once for a run that has ended, else after the"
    " wait with no events and `next_since` unchanged: call again with `next_since`. The bound"
    " keeps a wait inside API Gateway's 30 s integration limit and the API function's 29 s timeout."
)


# Async: a waiting request holds no worker thread. Under uvicorn one event loop serves every
# client; a sync route would hold one of FastAPI's 40 threadpool threads for the whole wait.
@router.get("/runs/{run_id}/events", response_model=EventsPage, responses=error_responses(404))
async def list_run_events(
    run_id: RunId,
    principal: Caller,
    c: Services,
    since: Annotated[int, Query(ge=0, le=2**53, description="return events with event_seq > since")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    types: Annotated[
        list[str] | None, Query(description="event types, comma-separated or repeated; others answer 422")
    ] = None,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False, description=WAIT_DESCRIPTION)
    ] = 0,
) -> EventsPage:
    """The run's events with `event_seq > since`, ascending; with `wait`, waits for the next one."""
    wanted = event_types(types or [])
    page = await c.queries.wait_for_events(
        principal, run_id, since=since, limit=limit, types=wanted, wait=wait
    )
    return EventsPage(run_id=run_id, events=page.events, next_since=page.next_since, has_more=page.has_more)


@router.get("/runs/{run_id}/definition", response_model=WorkflowDefinition, responses=error_responses(404))
def get_run_definition(run_id: RunId, principal: Caller, c: Services) -> WorkflowDefinition:
    """The exact definition snapshot the run executes."""
    return redact_definition(
        c.queries.definition(principal, run_id)
    )  # inline credentials never leave (docs/auth.md)
