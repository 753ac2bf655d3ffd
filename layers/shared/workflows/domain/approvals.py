"""Pending approvals: what an approvals inbox lists, and who it lists them for.

A run waiting at an approval step carries the request in `Run.approval` (step, instructions,
assignees, required approvals, the approvals granted so far, when it was requested and when it
times out); the sparse `approvals` index of the runs table holds exactly those runs
(`Run.decision_requested_at`), so an inbox is a key-range Query, never a scan
(docs/approvals.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.domain.run import Run


def quorum(request: Mapping[str, Any] | None) -> tuple[int, list[dict[str, str]]]:
    """A run's approval request: how many approvals it needs and those granted so far (a
    request recorded before quorums existed needs one)."""
    request = request or {}
    granted = [dict(entry) for entry in request.get("approvals") or []]
    return int(request.get("required_approvals", 1)), granted


@dataclass(frozen=True)
class InboxFilter:
    """Which pending approvals a listing keeps; an approval is kept when ANY rule matches, and
    every approval when none is set.

    - `assignee`: approvals naming this user among their assignees;
    - `unassigned`: approvals without assignees (anyone allowed to decide may);
    - `owner_id`: approvals of runs this user submitted.
    """

    assignee: str | None = None
    unassigned: bool = False
    owner_id: str | None = None

    @property
    def keeps_everything(self) -> bool:
        return self.assignee is None and not self.unassigned and self.owner_id is None

    def keeps(self, assignees: list[str], owner_id: str) -> bool:
        if self.keeps_everything:
            return True
        return (
            (self.assignee is not None and self.assignee in assignees)
            or (self.unassigned and not assignees)
            or (self.owner_id is not None and owner_id == self.owner_id)
        )

    def scope(self) -> list[str]:
        """What a cursor of this listing is bound to."""
        return [self.assignee or "", "unassigned" if self.unassigned else "", self.owner_id or ""]


@dataclass(frozen=True)
class PendingApproval:
    run_id: str
    tenant_id: str
    owner_id: str
    workflow_id: str | None
    definition_name: str
    step_id: str
    instructions: str
    assignees: list[str]
    required_approvals: int
    # {"approver", "approved_at"} of each approval granted so far, oldest first.
    approvals: list[dict[str, str]] = field(default_factory=list)
    requested_at: str = ""
    expires_at: str | None = None

    @classmethod
    def of_run(cls, run: Run) -> PendingApproval:
        return cls.from_request(
            run.approval or {},
            run_id=run.run_id,
            tenant_id=run.tenant_id,
            owner_id=run.owner_id,
            workflow_id=run.workflow_id,
            definition_name=run.definition_name,
        )

    @classmethod
    def from_request(
        cls,
        request: Mapping[str, Any],
        *,
        run_id: str,
        tenant_id: str,
        owner_id: str,
        workflow_id: str | None,
        definition_name: str,
    ) -> PendingApproval:
        """From a run's `approval` request (requests recorded before quorums need one approval)."""
        required, granted = quorum(request)
        return cls(
            run_id=run_id,
            tenant_id=tenant_id,
            owner_id=owner_id,
            workflow_id=workflow_id,
            definition_name=definition_name,
            step_id=str(request.get("step_id", "")),
            instructions=str(request.get("instructions", "")),
            assignees=list(request.get("assignees") or []),
            required_approvals=required,
            approvals=granted,
            requested_at=str(request.get("requested_at", "")),
            expires_at=request.get("timeout_at"),
        )
