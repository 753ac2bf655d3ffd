"""Schedules of saved workflows: cron, rate and one-time triggers (docs/schedules.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.api import cursor
from workflows.api.auth import require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import ScheduleId
from workflows.api.schemas import PREFIX, error_responses
from workflows.clock import iso
from workflows.domain.principal import RUNS_CONTROL, RUNS_READ, Principal
from workflows.domain.schedules import Schedule
from workflows.errors import ValidationFailed
from workflows.services.schedules import ScheduleService

router = APIRouter(route_class=GuardedRoute)
Reader = Annotated[Principal, Depends(require(RUNS_READ))]
Writer = Annotated[Principal, Depends(require(RUNS_CONTROL))]

Expression = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="EventBridge Scheduler syntax: "
        "cron(0 2 * * ? *), rate(5 minutes), at(2026-12-31T23:00:00)",
        examples=["cron(0 2 * * ? *)"],
    ),
]
TimeZone = Annotated[
    str, Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Berlin")
]


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: UUID
    expression: Expression
    timezone: TimeZone = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(
        default=None, ge=1, description="pin a version; default: the latest at each fire"
    )
    enabled: bool = True


class SchedulePatch(BaseModel):
    """The fields to change; absent ones keep their value. `version: null` unpins."""

    model_config = ConfigDict(extra="forbid")

    expression: Expression | None = None
    timezone: TimeZone | None = None
    inputs: dict[str, Any] | None = None
    version: int | None = Field(default=None, ge=1)
    enabled: bool | None = None


class LastFire(BaseModel):
    scheduled_time: str
    at: str = Field(description="when the fire was processed")
    result: Literal["started", "skipped"]
    run_id: str | None = None
    reason: str | None = Field(
        default=None,
        description="why nothing started: workflow_deleted, workflow_not_found, version_not_found, "
        "invalid_inputs, schedule_disabled, too_late, fire_budget_exhausted",
    )
    message: str | None = None


class ScheduleLinks(BaseModel):
    self: str
    workflow: str
    runs: str


class ScheduleView(BaseModel):
    schedule_id: str
    workflow_id: str
    expression: str
    timezone: str
    inputs: dict[str, Any]
    version: int | None = Field(description="the pinned version; null runs the latest")
    enabled: bool
    next_fire_at: str | None = Field(description="null when disabled or when an at() has passed")
    last_fire: LastFire | None
    created_at: str
    updated_at: str
    links: ScheduleLinks

    @classmethod
    def of(cls, schedule: Schedule, service: ScheduleService) -> ScheduleView:
        upcoming = service.next_fire_at(schedule)
        return cls(
            schedule_id=schedule.schedule_id,
            workflow_id=schedule.workflow_id,
            expression=schedule.expression,
            timezone=schedule.timezone,
            inputs=schedule.inputs,
            version=schedule.version,
            enabled=schedule.enabled,
            next_fire_at=iso(upcoming) if upcoming else None,
            last_fire=LastFire.model_validate(schedule.last_fire) if schedule.last_fire else None,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
            links=ScheduleLinks(
                self=f"{PREFIX}/schedules/{schedule.schedule_id}",
                workflow=f"{PREFIX}/{schedule.workflow_id}",
                runs=f"{PREFIX}/runs?workflow_id={schedule.workflow_id}",
            ),
        )


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]
    next_cursor: str | None


@router.post(
    "/schedules",
    status_code=201,
    response_model=ScheduleView,
    responses=error_responses(400, 404, 409, 415),
)
def create_schedule(body: ScheduleCreate, response: Response, principal: Writer, c: Services) -> ScheduleView:
    """Run a saved workflow on a schedule (404 for an unknown or another tenant's workflow)."""
    service = c.schedule_service
    schedule = service.create(
        principal,
        workflow_id=str(body.workflow_id),
        expression=body.expression,
        timezone=body.timezone,
        inputs=body.inputs,
        version=body.version,
        enabled=body.enabled,
    )
    view = ScheduleView.of(schedule, service)
    response.headers["Location"] = view.links.self
    return view


@router.get("/schedules", response_model=ScheduleList, responses=error_responses(400))
def list_schedules(
    principal: Reader,
    c: Services,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor_: Annotated[
        str | None, Query(alias="cursor", description="next_cursor of the previous page")
    ] = None,
) -> ScheduleList:
    service = c.schedule_service
    scope = ["schedules", principal.tenant_id]
    schedules, position = service.list(principal, limit=limit, start=cursor.decode(cursor_, scope))
    return ScheduleList(
        schedules=[ScheduleView.of(s, service) for s in schedules], next_cursor=cursor.encode(position, scope)
    )


@router.get("/schedules/{schedule_id}", response_model=ScheduleView, responses=error_responses(404))
def get_schedule(schedule_id: ScheduleId, principal: Reader, c: Services) -> ScheduleView:
    service = c.schedule_service
    return ScheduleView.of(service.get(principal, schedule_id), service)


@router.patch(
    "/schedules/{schedule_id}", response_model=ScheduleView, responses=error_responses(404, 409, 415)
)
def update_schedule(
    schedule_id: ScheduleId, body: SchedulePatch, principal: Writer, c: Services
) -> ScheduleView:
    """Enable or disable, or change expression, timezone, inputs or the pinned version."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    details = [
        {"field": name, "message": "may not be null"}
        for name in ("expression", "timezone", "inputs", "enabled")
        if name in changes and changes[name] is None
    ]
    if not changes:
        details.append({"field": "body", "message": "name at least one field to change"})
    if details:
        raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details)
    service = c.schedule_service
    return ScheduleView.of(service.update(principal, schedule_id, changes), service)


@router.delete("/schedules/{schedule_id}", status_code=204, responses=error_responses(404))
def delete_schedule(schedule_id: ScheduleId, principal: Writer, c: Services) -> Response:
    """Delete the schedule: nothing fires any more (a fire already in flight is ignored)."""
    c.schedule_service.delete(principal, schedule_id)
    return Response(status_code=204)
