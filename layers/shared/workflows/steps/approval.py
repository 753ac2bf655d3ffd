"""`approval`: a human in the loop. The run waits in `waiting_approval` until enough people
approve the step (`required_approvals` distinct approvers), one rejects it, or its timeout
passes and `on_timeout` decides (docs/approvals.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from workflows.domain.ids import check_caller_user_id
from workflows.steps.base import StepContext, StepOutcome, Suspend, TemplateField

MAX_APPROVAL_SECONDS = 30 * 24 * 3600
MAX_ASSIGNEES = 50


class ApprovalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instructions: str = Field(default="", max_length=8192)
    # Matched against callers' user ids: one no caller can have ("bob ", or one of the service's
    # own names such as `system:timeout`) would never decide, or would pass for the service.
    # (InvalidIdentifier is a ValueError: pydantic reports it against `assignees[j]`.)
    assignees: list[Annotated[str, AfterValidator(check_caller_user_id)]] = Field(
        default_factory=list, max_length=MAX_ASSIGNEES
    )
    # Distinct approvers needed before the step completes; one rejection rejects it.
    required_approvals: int = Field(default=1, ge=1, le=MAX_ASSIGNEES)
    timeout_seconds: float = Field(default=7 * 24 * 3600, gt=0, le=MAX_APPROVAL_SECONDS)
    on_timeout: Literal["reject", "approve", "fail"] = "reject"

    @field_validator("required_approvals")
    @classmethod
    def _reachable(cls, value: int, info: ValidationInfo) -> int:
        # A quorum the named assignees cannot reach would wait for its timeout every time.
        # (`assignees` is validated first; it is absent from `info.data` when it was invalid.)
        assignees = set(info.data.get("assignees") or [])
        if assignees and value > len(assignees):
            raise ValueError(f"must be at most the number of distinct assignees ({len(assignees)})")
        return value


class ApprovalStep:
    name = "approval"
    description = "Wait for a person to approve or reject; the decision is the step's output."
    config_model = ApprovalConfig
    example = {
        "instructions": "Check the draft",
        "assignees": ["alice", "bob"],
        "required_approvals": 1,
        "timeout_seconds": 86400,
    }
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
            payload={
                "instructions": config.instructions,
                "assignees": config.assignees,
                "required_approvals": config.required_approvals,
            },
        )
