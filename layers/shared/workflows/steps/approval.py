"""`approval`: a human in the loop. The run waits in `waiting_approval` until someone approves
or rejects the step, or until its timeout passes and `on_timeout` decides."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.steps.base import StepContext, StepOutcome, Suspend, TemplateField

MAX_APPROVAL_SECONDS = 30 * 24 * 3600


class ApprovalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instructions: str = Field(default="", max_length=8192)
    assignees: list[str] = Field(default_factory=list, max_length=50)
    timeout_seconds: float = Field(default=7 * 24 * 3600, gt=0, le=MAX_APPROVAL_SECONDS)
    on_timeout: Literal["reject", "approve", "fail"] = "reject"


class ApprovalStep:
    name = "approval"
    description = "Wait for a person to approve or reject; the decision is the step's output."
    config_model = ApprovalConfig
    example = {"instructions": "Check the draft", "assignees": ["alice"], "timeout_seconds": 86400}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, ApprovalConfig)
        until = context.wait_until or context.now + timedelta(seconds=config.timeout_seconds)
        return Suspend(
            until=until,
            waiting_approval=True,
            payload={"instructions": config.instructions, "assignees": config.assignees},
        )
