"""Authentication at the edge (docs/auth.md): credentials from the request's headers.

An API key in X-API-KEY, or (multi_user, with a JWT issuer configured) a bearer JWT whose
claims name the tenant, user and roles once its signature, issuer, audience and expiry are
verified. The identity service decides who the caller is.

401 (with WWW-Authenticate) for a missing, unknown, revoked or expired credential; 403 for a
known caller without the permission. Credentials are never logged or recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response

from workflows.api.deps import ApiServices, Services
from workflows.domain.principal import Principal
from workflows.errors import Forbidden, Unauthenticated


def authenticate(request: Request, s: Services) -> Principal:
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known  # authenticated by api/guard.py before the body was read
    return principal_of(request, s)


def principal_of(request: Request, s: ApiServices) -> Principal:
    identity = s.identity
    presented = request.headers.get("x-api-key")
    if presented:
        return identity.by_api_key(presented)
    if not identity.multi_user:
        raise Unauthenticated("missing API key: send it in the X-API-KEY header")
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return identity.by_bearer(authorization[7:].strip())
    raise Unauthenticated("missing credentials: send an API key in X-API-KEY or a bearer token")


Caller = Annotated[Principal, Depends(authenticate)]


def require(permission: str) -> Callable[[Principal], Principal]:
    def check(principal: Caller) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"missing permission {permission}")
        return principal

    return check


def submitter(principal: Caller, s: Services, response: Response) -> Principal:
    """A caller submitting a run: counted against their quotas (429 when used up)."""
    response.headers.update(s.submission_quotas.charge(principal))
    return principal


Submitter = Annotated[Principal, Depends(submitter)]
