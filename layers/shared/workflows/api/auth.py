"""Authentication at the edge. Single-user mode: one API key, every permission, tenant `default`."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from workflows.api.deps import ContainerDep
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.errors import Forbidden, Unauthenticated
from workflows.secrets import single_user_api_key

DEFAULT_TENANT = "default"
SINGLE_USER = "admin"


def authenticate(request: Request, c: ContainerDep) -> Principal:
    presented = request.headers.get("x-api-key")
    if not presented:
        raise Unauthenticated("missing API key: send it in the X-API-KEY header")
    if c.settings.auth_mode != "single_user":
        raise Unauthenticated("this deployment's authentication mode is not available yet")
    expected = single_user_api_key(c.settings)
    # Constant-time comparison: the time taken says nothing about how much of the key matched.
    if expected is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthenticated("unknown API key")
    return Principal(tenant_id=DEFAULT_TENANT, user_id=SINGLE_USER, permissions=ALL_PERMISSIONS)


Caller = Annotated[Principal, Depends(authenticate)]


def require(permission: str) -> Callable[[Principal], Principal]:
    def check(principal: Caller) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"missing permission {permission}")
        return principal

    return check
