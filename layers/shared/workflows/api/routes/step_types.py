"""Step types: what a definition's steps may be, with each config's JSON Schema and an example."""

from __future__ import annotations

from fastapi import APIRouter

from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.routes.runs import Reader
from workflows.api.schemas import StepTypeList, StepTypeView, error_responses

router = APIRouter(route_class=GuardedRoute)


@router.get("/step-types", response_model=StepTypeList, responses=error_responses())
def list_step_types(principal: Reader, c: Services) -> StepTypeList:
    return StepTypeList(
        step_types=[
            StepTypeView(
                name=step.name,
                description=step.description,
                config_schema=step.config_model.model_json_schema(),
                example=dict(step.example),
                min_engine_version=step.min_engine_version,
            )
            for step in c.queries.step_types()
        ]
    )
