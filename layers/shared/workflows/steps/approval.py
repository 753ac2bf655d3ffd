"""`approval`: a human in the loop. The run waits in `waiting_approval` until enough people
approve the step (`required_approvals` distinct approvers), one rejects it, or its timeout
passes and `on_timeout` decides (docs/approvals.md)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from workflows.domain.approvals import quorum
from workflows.domain.failures import StepFailed
from workflows.domain.ids import check_caller_user_id
from workflows.domain.run import EventType, NewEvent
from workflows.steps.base import AtDeadline, StepContext, StepOutcome, StepResult, Suspend, TemplateField

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
    route_fields: tuple[str, ...] = ()  # follows on_success
    # A person may reject it: the run follows on_failure, or ends.
    rejectable = True

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

    def at_deadline(self, config: BaseModel, step_id: str, request: Mapping[str, Any] | None) -> AtDeadline:
        """The timeout passed: `on_timeout` decides. Approvals short of the quorum decide
        nothing, and the output still lists who had approved."""
        assert isinstance(config, ApprovalConfig)
        required, granted = quorum(request)
        approvers = [entry["approver"] for entry in granted]
        if config.on_timeout == "fail":
            return AtDeadline(failure=StepFailed("timeout", "approval timed out", retryable=False))
        timed_out = NewEvent(
            event_type=EventType.STEP_TIMEOUT,
            step_id=step_id,
            payload={
                "on_timeout": config.on_timeout,
                "approvals": len(approvers),
                "required_approvals": required,
            },
        )
        decision: dict[str, Any] = {
            "comment": None,
            "fields": {},
            "approver": "system:timeout",
            "approvers": approvers,
        }
        output = {"decision": config.on_timeout, **decision}
        if config.on_timeout == "approve":
            granted_event = NewEvent(event_type=EventType.APPROVAL_GRANTED, step_id=step_id, payload=output)
            return AtDeadline(events=[timed_out, granted_event], result=StepResult(output=output))
        rejected = NewEvent(event_type=EventType.APPROVAL_REJECTED, step_id=step_id, payload=output)
        failure = StepFailed("approval_rejected", "approval timed out and was rejected", retryable=False)
        return AtDeadline(events=[timed_out, rejected], failure=failure, output=output)
