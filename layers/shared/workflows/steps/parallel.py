"""`parallel`: named branches, each a list of steps, run side by side as child runs; `join: all`
(every branch must succeed) or `any` (the first branch to succeed wins). docs/steps.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflows.domain.definition import STEP_ID_PATTERN, StepSpec
from workflows.steps.base import Spawn, StepContext, StepOutcome, TemplateField

MAX_BRANCHES = 20


class ParallelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    branches: dict[Annotated[str, Field(pattern=STEP_ID_PATTERN)], list[StepSpec]] = Field(
        min_length=1,
        max_length=MAX_BRANCHES,
        description="Branch name -> its steps (each branch routes among its own steps; step ids are"
        " unique in the whole definition). Each runs as a child run",
    )
    join: Literal["all", "any"] = Field(
        default="all",
        description="`all`: the step fails when a branch fails (the others are cancelled); `any`:"
        " the first branch to succeed wins and the others are cancelled",
    )
    mode: Literal["auto", "child_runs"] = Field(
        default="auto",
        description="`auto`: when every branch is only `log` and `branch` steps (at most 20, none"
        " retried, no loop), the branches run inside this run, one after another, at a fraction of a"
        " child run's cost; otherwise each branch is a child run. `child_runs`: each branch is always"
        " a child run of its own (its own page, events and retries)",
    )

    @field_validator("branches")
    @classmethod
    def _not_empty(cls, value: dict[str, list[StepSpec]]) -> dict[str, list[StepSpec]]:
        for name, steps in value.items():
            if not steps:
                raise ValueError(f"branch '{name}' has no steps")
        return value


class ParallelStep:
    name = "parallel"
    description = (
        "Run named branches of steps side by side (child runs; branches of only log and branch"
        " steps run inside the run); output: each branch's last output by branch name."
    )
    config_model = ParallelConfig
    example = {
        "branches": {
            "greet": [{"id": "hello", "type": "log", "config": {"message": "hello"}}],
            "wait": [{"id": "pause", "type": "delay", "config": {"seconds": 1}}],
        },
        "join": "all",
    }
    min_engine_version = "1.1.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []  # the branches' steps are checked as definitions of their own

    def nested(self, config: BaseModel) -> dict[str, list[StepSpec]]:
        assert isinstance(config, ParallelConfig)
        return {f"branches.{name}": steps for name, steps in config.branches.items()}

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, ParallelConfig)
        return Spawn(kind="parallel", branches=config.branches, join=config.join, mode=config.mode)
