"""Operator routes for webhook deliveries: the DLQ rows of the caller's tenant, replay, and a
run's delivery history.

A row's destination is shown without its query string or user info (those often carry tokens)
and its headers by name only (they often carry credentials); the body is the tenant's own.
Another tenant's rows answer 404, like missing ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from workflows.api import cursor
from workflows.api.auth import require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import RowId, RunId
from workflows.domain.dlq import DlqRow
from workflows.domain.principal import RUNS_CONTROL, Principal
from workflows.domain.run import RunEvent
from workflows.services.webhooks.journal import ERROR_CHARS, host_of

router = APIRouter(route_class=GuardedRoute, tags=["webhooks"])
Operator = Annotated[Principal, Depends(require(RUNS_CONTROL))]


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(BaseModel):
    error: ErrorBody


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "invalid cursor",
        401: "missing or unknown API key",
        403: "missing permission workflows.runs.control",
        404: "not found (or another tenant's)",
        409: "the row is being delivered right now",
        422: "invalid parameter",
        503: "storage throttled or unavailable; retry later",
    }
    return {status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses}


def _destination(url: str) -> str:
    """scheme://host[:port]/path: no user info, query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _epoch_iso(value: float) -> str:
    moment = datetime.fromtimestamp(value, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class DlqRowSummary(BaseModel):
    id: str
    run_id: str
    webhook_id: str
    status: Literal["pending", "delivered", "exhausted"]
    attempts: int
    next_attempt_at: str | None = Field(description="when the worker tries next; null unless pending")
    last_error: str | None
    host: str
    destination: str = Field(description="the URL without query string or user info")
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: DlqRow) -> DlqRowSummary:
        return cls(
            id=row.id,
            run_id=row.run_id,
            webhook_id=row.webhook_id,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=_epoch_iso(row.next_attempt_at) if row.status == "pending" else None,
            last_error=row.last_error,
            host=host_of(row.url),
            destination=_destination(row.url),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class DlqRowView(DlqRowSummary):
    header_names: list[str] = Field(description="names of the extra headers sent; values are never shown")
    body: Any = Field(description="the JSON body that is delivered")

    @classmethod
    def of(cls, row: DlqRow) -> DlqRowView:
        summary = DlqRowSummary.of(row)
        try:
            body: Any = json.loads(row.body_json)
        except ValueError:
            body = row.body_json
        return cls(**summary.model_dump(), header_names=sorted(row.headers), body=body)


class DlqRowList(BaseModel):
    rows: list[DlqRowSummary]
    next_cursor: str | None


class ReplayAttempt(BaseModel):
    outcome: Literal["delivered", "transient", "permanent"]
    status_code: int | None
    error: str | None


class ReplayView(DlqRowView):
    attempt: ReplayAttempt


class DeliveriesPage(BaseModel):
    run_id: str
    deliveries: list[RunEvent]
    next_since: int
    has_more: bool


@router.get(
    "/webhooks/dlq",
    response_model=DlqRowList,
    responses=_errors(400, 401, 403, 422, 503),
    summary="List webhook DLQ rows",
)
def list_dlq_rows(
    principal: Operator,
    c: Services,
    status: Annotated[
        list[Literal["pending", "delivered", "exhausted"]] | None, Query(description="repeatable")
    ] = None,
    run_id: Annotated[UUID | None, Query(description="only this run's rows")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor_: Annotated[str | None, Query(alias="cursor")] = None,
) -> DlqRowList:
    """The tenant's failed deliveries, newest first."""
    statuses = sorted(set(status or []))
    rid = None if run_id is None else str(run_id)
    scope = ["webhook-dlq", principal.tenant_id, ",".join(statuses), rid]
    rows, position = c.deliveries.list(
        principal,
        statuses=statuses,
        run_id=rid,
        limit=limit,
        start=cursor.decode(cursor_, scope),
    )
    return DlqRowList(
        rows=[DlqRowSummary.of(row) for row in rows], next_cursor=cursor.encode(position, scope)
    )


@router.get(
    "/webhooks/dlq/{row_id}",
    response_model=DlqRowView,
    responses=_errors(401, 403, 404, 422, 503),
    summary="Get a webhook DLQ row",
)
def get_dlq_row(row_id: RowId, principal: Operator, c: Services) -> DlqRowView:
    return DlqRowView.of(c.deliveries.get(principal, row_id))


@router.post(
    "/webhooks/dlq/{row_id}/replay",
    response_model=ReplayView,
    responses=_errors(401, 403, 404, 409, 422, 503),
    summary="Replay a webhook DLQ row now",
)
def replay_dlq_row(row_id: RowId, principal: Operator, c: Services) -> ReplayView:
    """One delivery attempt now, with the row's webhook-id, whatever its status.

    The attempt is recorded like the retry worker's (and on the run as a `webhook_delivery`
    event); the answer is the row afterwards with the attempt's outcome. The delivery has one
    overall deadline, `WORKFLOWS_WEBHOOK_DLQ_TIMEOUT_SEC` capped at 10 s, however slowly the
    receiver answers, so this request ends well within API Gateway's 30 s; a receiver too slow
    for it is a transient `timeout` attempt and the row stays pending.
    """
    attempt = c.deliveries.replay(principal, row_id)
    view = DlqRowView.of(attempt.row)
    result = attempt.result
    return ReplayView(
        **view.model_dump(),
        attempt=ReplayAttempt(
            outcome=result.outcome,
            status_code=result.status_code,
            error=None if result.error is None else result.error[:ERROR_CHARS],
        ),
    )


@router.get(
    "/runs/{run_id}/deliveries",
    response_model=DeliveriesPage,
    responses=_errors(401, 403, 404, 422, 503),
    summary="List a run's webhook deliveries",
)
def list_run_deliveries(
    run_id: RunId,
    principal: Operator,
    c: Services,
    since: Annotated[int, Query(ge=0, description="return deliveries with event_seq > since")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveriesPage:
    """The run's `webhook_delivery` events, oldest first (a page may be short; see next_since)."""
    page = c.queries.deliveries(principal, run_id, since=since, limit=limit)
    return DeliveriesPage(
        run_id=run_id, deliveries=page.events, next_since=page.next_since, has_more=page.has_more
    )
