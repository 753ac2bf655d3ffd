"""The approvals inbox: the pending approvals of the caller's tenant they may see (docs/approvals.md).

Who sees what, with the permissions of approve / reject (docs/auth.md):
- `assignee=me`: what the caller may decide: approvals naming them among the assignees, and
  (with `workflows.runs.control`) approvals without assignees;
- `assignee=<user_id>` of someone else: approvals naming that user; needs `workflows.runs.read`,
  the tenant-wide read permission (their unassigned approvals depend on permissions that user's
  own credentials carry, which are not known here, so they are left out);
- no `assignee`: everything the caller may decide or read: all of the tenant's with
  `workflows.runs.read` or `workflows.runs.control`, else the approvals naming them and those of
  their own runs.
"""

from __future__ import annotations

from workflows.domain.approvals import InboxFilter, PendingApproval
from workflows.domain.paging import Position
from workflows.domain.principal import RUNS_CONTROL, RUNS_READ, Principal
from workflows.errors import Forbidden
from workflows.ports import RunIndex

ME = "me"


class ApprovalInbox:
    def __init__(self, index: RunIndex) -> None:
        self._index = index

    @staticmethod
    def filter_for(principal: Principal, assignee: str | None) -> InboxFilter:
        """What the caller's listing keeps (`assignee` as the query gives it), or Forbidden."""
        if assignee in (ME, principal.user_id):
            return InboxFilter(assignee=principal.user_id, unassigned=principal.can(RUNS_CONTROL))
        if assignee is not None:
            if not principal.can(RUNS_READ):
                raise Forbidden(f"missing permission {RUNS_READ} (to list another user's approvals)")
            return InboxFilter(assignee=assignee)
        if principal.can(RUNS_READ) or principal.can(RUNS_CONTROL):
            return InboxFilter()
        return InboxFilter(assignee=principal.user_id, owner_id=principal.user_id)

    def pending(
        self, principal: Principal, keep: InboxFilter, *, limit: int, start: Position | None
    ) -> tuple[list[PendingApproval], Position | None]:
        """The caller's tenant's pending approvals that `keep` (filter_for) keeps, oldest first."""
        return self._index.list_approvals(principal.tenant_id, keep, limit=limit, start=start)
