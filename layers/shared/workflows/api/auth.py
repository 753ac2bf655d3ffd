"""Authentication at the edge (docs/auth.md).

single_user: one API key in X-API-KEY, compared in constant time; the caller has every
permission in tenant `default`.

multi_user: per-user API keys in X-API-KEY, looked up by their SHA-256 (one strongly
consistent read, no cache: a revoked or expired key is refused on the next request); or a
bearer JWT that API Gateway's JWT authorizer has already validated, whose claims name the
tenant, user and roles. Without an authorizer context (local runs) bearer tokens are refused:
nothing here verifies signatures.

401 (with WWW-Authenticate) for a missing, unknown, revoked or expired credential; 403 for a
known caller without the permission. Credentials are never logged or recorded.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from workflows.adapters.parameters import single_user_api_key
from workflows.api.deps import ContainerDep
from workflows.domain.ids import InvalidIdentifier, is_tenant_id, is_user_id
from workflows.domain.principal import ALL_PERMISSIONS, Principal, permissions_for
from workflows.errors import Forbidden, Unauthenticated
from workflows.services.access import charge_submission, role_permissions

DEFAULT_TENANT = "default"
SINGLE_USER = "admin"


def authenticate(request: Request, c: ContainerDep) -> Principal:
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known  # authenticated by api/guard.py before the body was read
    if c.settings.auth_mode != "single_user":
        return _multi_user(request, c)
    presented = request.headers.get("x-api-key")
    if not presented:
        raise Unauthenticated("missing API key: send it in the X-API-KEY header")
    expected = single_user_api_key(c.settings)
    # Constant-time comparison: the time taken says nothing about how much of the key matched.
    if expected is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthenticated("unknown API key")
    return Principal(tenant_id=DEFAULT_TENANT, user_id=SINGLE_USER, permissions=ALL_PERMISSIONS)


def _multi_user(request: Request, c: Any) -> Principal:
    mapping = role_permissions(c.settings.role_permissions)
    presented = request.headers.get("x-api-key")
    if presented:
        record = c.api_keys.lookup(presented)
        if record is None:
            raise Unauthenticated("unknown API key")
        state = record.state(c.clock())
        if state != "active":
            raise Unauthenticated(f"API key {state}")
        try:
            return Principal(
                tenant_id=record.tenant_id,
                user_id=record.user_id,
                permissions=permissions_for(record.roles, mapping),
                roles=record.roles,
            )
        except InvalidIdentifier as exc:
            # A key issued before ids were checked: it must be re-issued under a valid id.
            raise Unauthenticated(f"API key refused: {exc}") from exc
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        claims = _authorizer_claims(request)
        if claims is None:
            raise Unauthenticated("bearer tokens are accepted only behind the API's JWT authorizer")
        return _from_claims(claims, c.settings, mapping)
    raise Unauthenticated("missing credentials: send an API key in X-API-KEY or a bearer token")


def _authorizer_claims(request: Request) -> Mapping[str, Any] | None:
    """The claims API Gateway's JWT authorizer validated (Mangum passes the event along)."""
    event = request.scope.get("aws.event")
    if not isinstance(event, Mapping):
        return None
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") if isinstance(authorizer, Mapping) else None
    return claims if isinstance(claims, Mapping) and claims else None


def _from_claims(
    claims: Mapping[str, Any], settings: Any, mapping: Mapping[str, frozenset[str]]
) -> Principal:
    tenant = claims.get(settings.jwt_tenant_claim)
    user = claims.get(settings.jwt_user_claim)
    if not isinstance(tenant, str) or not tenant or not isinstance(user, str) or not user:
        raise Unauthenticated(
            f"the token lacks the {settings.jwt_tenant_claim} or {settings.jwt_user_claim} claim"
        )
    if not is_tenant_id(tenant):
        raise Unauthenticated(f"the token's {settings.jwt_tenant_claim} claim is not a valid tenant id")
    if not is_user_id(user):
        raise Unauthenticated(f"the token's {settings.jwt_user_claim} claim is not a valid user id")
    roles = _roles(claims.get(settings.jwt_roles_claim))
    return Principal(tenant_id=tenant, user_id=user, permissions=permissions_for(roles, mapping), roles=roles)


def _roles(value: Any) -> tuple[str, ...]:
    """A list claim, or API Gateway's rendering of one: "[a b]", "a b" or "a,b"."""
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return tuple(part for part in value.strip("[]").replace(",", " ").split() if part)
    return ()


Caller = Annotated[Principal, Depends(authenticate)]


def require(permission: str) -> Callable[[Principal], Principal]:
    def check(principal: Caller) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"missing permission {permission}")
        return principal

    return check


def submitter(principal: Caller, c: ContainerDep, response: Response) -> Principal:
    """A caller submitting a run: counted against their quotas (429 when used up)."""
    response.headers.update(charge_submission(c, principal))
    return principal


Submitter = Annotated[Principal, Depends(submitter)]
