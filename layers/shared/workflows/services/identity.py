"""Who is calling (docs/auth.md): an API key, or the claims of a verified bearer JWT.

single_user: one API key, compared in constant time; the caller has every permission in tenant
`default`. multi_user: per-user API keys, looked up by their SHA-256 (one strongly consistent
read, no cache: a revoked or expired key is refused on the next request); or, where an issuer
is configured, the claims of a bearer JWT whose signature, issuer, audience and expiry the token
verifier checked.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from workflows.clock import Clock, system_clock
from workflows.domain.ids import InvalidIdentifier, is_reserved_user_id, is_tenant_id, is_user_id
from workflows.domain.json import JsonValue
from workflows.domain.principal import ALL_PERMISSIONS, Principal, permissions_for
from workflows.errors import Unauthenticated
from workflows.ports import ApiKeyStore, TokenVerifier
from workflows.settings import Settings

DEFAULT_TENANT = "default"
SINGLE_USER = "admin"


class Identity:
    """`keys` gives the key store (multi_user only: single_user never builds it, nor its
    DynamoDB client); `single_user_key` reads the single-user key (the setting, or the stack's
    secret when deployed) and raises `ApiKeyUnavailable` when it cannot."""

    def __init__(
        self,
        keys: Callable[[], ApiKeyStore],
        settings: Settings,
        single_user_key: Callable[[], str | None],
        *,
        tokens: Callable[[], TokenVerifier] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._keys = keys
        self._tokens = tokens
        self._settings = settings
        self._single_user_key = single_user_key
        self._clock = clock

    @property
    def multi_user(self) -> bool:
        return self._settings.auth_mode == "multi_user"

    def by_api_key(self, presented: str) -> Principal:
        if not self.multi_user:
            expected = self._single_user_key()
            # Constant-time comparison: the time taken says nothing about how much of the key matched.
            if expected is None or not hmac.compare_digest(presented.encode(), expected.encode()):
                raise Unauthenticated("unknown API key")
            return Principal(tenant_id=DEFAULT_TENANT, user_id=SINGLE_USER, permissions=ALL_PERMISSIONS)
        record = self._keys().lookup(presented)
        if record is None:
            raise Unauthenticated("unknown API key")
        state = record.state(self._clock())
        if state != "active":
            raise Unauthenticated(f"API key {state}")
        if is_reserved_user_id(record.user_id):
            # A key issued before those names were reserved: it must be re-issued to a real user.
            raise Unauthenticated("API key refused: its user id names the service itself")
        try:
            return Principal(
                tenant_id=record.tenant_id,
                user_id=record.user_id,
                permissions=permissions_for(record.roles, self._settings.role_permissions),
                roles=record.roles,
            )
        except InvalidIdentifier as exc:
            # A key issued before ids were checked: it must be re-issued under a valid id.
            raise Unauthenticated(f"API key refused: {exc}") from exc

    def by_bearer(self, token: str) -> Principal:
        if self._tokens is None:
            raise Unauthenticated(
                "bearer tokens are not accepted here: the deployment names no JWT issuer (JwtIssuer)"
            )
        return self.by_claims(self._tokens().verify(token))

    def by_claims(self, claims: Mapping[str, JsonValue]) -> Principal:
        settings = self._settings
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
        if is_reserved_user_id(user):
            raise Unauthenticated(
                f"the token's {settings.jwt_user_claim} claim names the service itself, not a user"
            )
        roles = _roles(claims.get(settings.jwt_roles_claim))
        permissions = permissions_for(roles, settings.role_permissions)
        return Principal(tenant_id=tenant, user_id=user, permissions=permissions, roles=roles)


def _roles(value: JsonValue) -> tuple[str, ...]:
    """A list claim, or API Gateway's rendering of one: "[a b]", "a b" or "a,b"."""
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return tuple(part for part in value.strip("[]").replace(",", " ").split() if part)
    return ()
