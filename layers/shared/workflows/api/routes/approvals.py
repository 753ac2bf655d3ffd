"""The approvals inbox: pending approvals across the caller's tenant's runs (docs/approvals.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from workflows.api import cursor
from workflows.api.auth import Caller
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.schemas import PREFIX, error_responses
from workflows.domain.approvals import PendingApproval
from workflows.domain.ids import USER_ID_PATTERN

router = APIRouter(route_class=GuardedRoute)


class ApprovalGrant(BaseModel):
    approver: str
    approved_at: str


class ApprovalLinks(BaseModel):
    run: str
    approve: str
    reject: str


class ApprovalView(BaseModel):
    run_id: str
    step_id: str
    workflow_id: str | None
    definition_name: str
    instructions: str
    assignees: list[str]
    required_approvals: int
    approvals: list[ApprovalGrant]
    requested_at: str
    expires_at: str | None
    links: ApprovalLinks

    @classmethod
    def of(cls, pending: PendingApproval) -> ApprovalView:
        run = f"{PREFIX}/runs/{pending.run_id}"
        step = f"{run}/steps/{pending.step_id}"
        return cls(
            run_id=pending.run_id,
            step_id=pending.step_id,
            workflow_id=pending.workflow_id,
            definition_name=pending.definition_name,
            instructions=pending.instructions,
            assignees=pending.assignees,
            required_approvals=pending.required_approvals,
            approvals=[ApprovalGrant.model_validate(grant) for grant in pending.approvals],
            requested_at=pending.requested_at,
            expires_at=pending.expires_at,
            links=ApprovalLinks(run=run, approve=f"{step}/approve", reject=f"{step}/reject"),
        )


class ApprovalList(BaseModel):
    approvals: list[ApprovalView]
    next_cursor: str | None


@router.get("/approvals", response_model=ApprovalList, responses=error_responses(400))
def list_approvals(
    principal: Caller,
    c: Services,
    status: Annotated[Literal["pending"], Query(description="only `pending` for now")] = "pending",
    assignee: Annotated[
        str | None,
        Query(
            pattern=USER_ID_PATTERN,
            description="`me`: what the caller may decide; a user id: that user's assignments"
            " (needs workflows.runs.read); absent: everything the caller may decide or read",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor_: Annotated[str | None, Query(alias="cursor")] = None,
) -> ApprovalList:
    """Approvals waiting for a decision, oldest request first."""
    inbox = c.approval_inbox
    keep = inbox.filter_for(principal, assignee)
    scope = ["approvals", principal.tenant_id, status, *keep.scope()]
    pending, position = inbox.pending(principal, keep, limit=limit, start=cursor.decode(cursor_, scope))
    return ApprovalList(
        approvals=[ApprovalView.of(item) for item in pending], next_cursor=cursor.encode(position, scope)
    )
