"""Authentication at the edge (docs/auth.md): credentials from the request's headers.

An API key in X-API-KEY, or (multi_user) a bearer JWT that API Gateway's JWT authorizer has
already validated, whose claims name the tenant, user and roles. Without an authorizer context
(local runs) bearer tokens are refused: nothing here verifies signatures. The identity service
decides who the caller is.

401 (with WWW-Authenticate) for a missing, unknown, revoked or expired credential; 403 for a
known caller without the permission. Credentials are never logged or recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request, Response

from workflows.api.deps import ApiServices, Services
from workflows.domain.json import JsonValue
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
        claims = _authorizer_claims(request)
        if claims is None:
            raise Unauthenticated("bearer tokens are accepted only behind the API's JWT authorizer")
        return identity.by_claims(claims)
    raise Unauthenticated("missing credentials: send an API key in X-API-KEY or a bearer token")


def _authorizer_claims(request: Request) -> Mapping[str, JsonValue] | None:
    """The claims API Gateway's JWT authorizer validated (Mangum passes the event along)."""
    event = request.scope.get("aws.event")
    if not isinstance(event, Mapping):
        return None
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") if isinstance(authorizer, Mapping) else None
    return claims if isinstance(claims, Mapping) and claims else None


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
