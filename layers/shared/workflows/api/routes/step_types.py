"""Step types: what a definition's steps may be, with each config's JSON Schema, an example and
the config fields that route a run (the console draws a run's graph with them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from workflows.api.auth import Caller
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.schemas import error_responses


class StepTypeView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    config_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema of the step's config")
    example: dict[str, Any]
    min_engine_version: str
    routes: list[str] = Field(
        description="The config fields naming the step a run goes to next (a step id, or `_end`), for"
        " a type that chooses it (branch: `true_next`, `false_next`); the step's `on_success` is then"
        " not consulted. Empty for a type that follows `on_success`"
    )


class StepTypeList(BaseModel):
    step_types: list[StepTypeView]


router = APIRouter(route_class=GuardedRoute)


@router.get("/step-types", response_model=StepTypeList, responses=error_responses())
def list_step_types(principal: Caller, c: Services) -> StepTypeList:
    """What a definition's steps may be: the service's catalog, no tenant's data, so any caller
    who may submit a run may read it (as `POST /validate`)."""
    return StepTypeList(
        step_types=[
            StepTypeView(
                name=step.name,
                description=step.description,
                config_schema=step.config_model.model_json_schema(),
                example=dict(step.example),
                min_engine_version=step.min_engine_version,
                routes=list(step.route_fields),
            )
            for step in c.queries.step_types()
        ]
    )
