"""Who the caller is: tenant, user, roles and permissions (docs/auth.md), so a client can show
only what the caller may do (the console hides control actions from a viewer)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from workflows.api.auth import Caller
from workflows.api.guard import GuardedRoute
from workflows.api.schemas import error_responses
from workflows.domain.principal import ALL_PERMISSIONS

router = APIRouter(route_class=GuardedRoute)


class CallerView(BaseModel):
    tenant_id: str
    user_id: str
    roles: list[str] = Field(description="the roles of the key or token (none in single-user mode)")
    permissions: list[str] = Field(
        description="every permission the caller holds, sorted; those `workflows.admin` implies included"
    )


@router.get("/me", response_model=CallerView, responses=error_responses())
def who_am_i(principal: Caller) -> CallerView:
    """The caller, as the service authenticated them: no storage read beyond authentication."""
    held = set(principal.permissions) | {p for p in ALL_PERMISSIONS if principal.can(p)}
    return CallerView(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        roles=list(principal.roles),
        permissions=sorted(held),
    )
