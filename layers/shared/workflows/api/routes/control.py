"""Control routes: pause, resume, cancel, retry a run; approve or reject a waiting step."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.api.auth import Caller, require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import RunId, StepId
from workflows.api.schemas import error_responses
from workflows.domain.definition import STEP_ID_PATTERN
from workflows.domain.principal import RUNS_CONTROL, Principal
from workflows.errors import ValidationFailed

router = APIRouter(route_class=GuardedRoute)
DECISIONS: tuple[Literal["approve", "reject"], ...] = ("approve", "reject")
ACTIONS: tuple[Literal["pause", "resume", "cancel", "retry"], ...] = ("pause", "resume", "cancel", "retry")
Controller = Annotated[Principal, Depends(require(RUNS_CONTROL))]


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: str | None = Field(
        default=None, pattern=STEP_ID_PATTERN, description="retry only: the step to start from"
    )


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=4000)
    fields: dict[str, Any] = Field(default_factory=dict)


class ControlResponse(BaseModel):
    run_id: str
    action: str
    result: Literal["applied", "already_applied"]
    status: str


class DecisionResponse(ControlResponse):
    # Distinct approvals recorded so far and how many the step needs (absent when the step was
    # decided before: `already_applied` for a step the run has left).
    approvals: int | None = None
    required_approvals: int | None = None


# One route per action, each with its literal path: an unknown action (`/runs/{id}/bogus`)
# matches no route and answers 404, as any unknown path does, not 405.
def _decision_route(decision: Literal["approve", "reject"]) -> None:
    @router.post(
        f"/runs/{{run_id}}/steps/{{step_id}}/{decision}",
        response_model=DecisionResponse,
        response_model_exclude_none=True,
        responses=error_responses(400, 404, 409, 415),
        name=f"{decision}_step",
        summary=f"{decision.capitalize()} a step waiting for approval",
    )
    def decide_step(
        run_id: RunId,
        step_id: StepId,
        principal: Caller,
        c: Services,
        body: Annotated[DecisionRequest | None, Body()] = None,
    ) -> DecisionResponse:
        request = body or DecisionRequest()
        result = c.control_service.decide(
            principal, run_id, step_id, decision, comment=request.comment, fields=request.fields
        )
        return DecisionResponse(
            run_id=result.run_id,
            action=result.action,
            result=result.result,
            status=result.status,
            approvals=result.approvals,
            required_approvals=result.required_approvals,
        )


def _action_route(action: Literal["pause", "resume", "cancel", "retry"]) -> None:
    @router.post(
        f"/runs/{{run_id}}/{action}",
        response_model=ControlResponse,
        responses=error_responses(400, 404, 409, 415, *((429,) if action == "retry" else ())),
        name=f"{action}_run",
        summary=f"{action.capitalize()} a run",
    )
    def control_run(
        run_id: RunId,
        principal: Controller,
        c: Services,
        response: Response,
        body: Annotated[ControlRequest | None, Body()] = None,
    ) -> ControlResponse:
        request = body or ControlRequest()
        if request.from_step is not None and action != "retry":
            raise ValidationFailed(
                "from_step: only retry takes from_step",
                details=[{"field": "from_step", "message": "retry only"}],
            )
        if action == "retry":
            # A retry starts the run's work again: it counts against the caller's submission
            # quotas like a submission (429 when used up), or retries would be unmetered runs.
            response.headers.update(c.submission_quotas.charge(principal))
        result = c.control_service.act(principal, run_id, action, from_step=request.from_step)
        return ControlResponse(
            run_id=result.run_id, action=result.action, result=result.result, status=result.status
        )


for _decision in DECISIONS:
    _decision_route(_decision)
for _action in ACTIONS:
    _action_route(_action)
