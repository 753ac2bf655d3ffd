"""Tenant administration: API keys for the tenant's users (workflows.admin).

A new key is shown once, in the answer to its creation; afterwards only its id (the key's
SHA-256) and metadata are known. Revocation applies to the next request made with the key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflows.api import cursor
from workflows.api.auth import require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import KeyId
from workflows.api.schemas import PREFIX, error_responses
from workflows.clock import iso
from workflows.domain.api_keys import ApiKeyRecord
from workflows.domain.ids import USER_ID_PATTERN, is_reserved_user_id, reserved_message
from workflows.domain.principal import ADMIN, Principal

router = APIRouter(route_class=GuardedRoute, tags=["api-keys"])
Admin = Annotated[Principal, Depends(require(ADMIN))]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN, description="the user the key acts as")
    roles: list[str] = Field(min_length=1, max_length=10, description="e.g. viewer, operator, admin")
    name: str | None = Field(default=None, max_length=128, description="a label for humans")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="default: never")

    @field_validator("user_id")
    @classmethod
    def _not_the_service(cls, value: str) -> str:
        # A key acting as `schedule:<id>` would read that schedule's runs (docs/auth.md).
        if is_reserved_user_id(value):
            raise ValueError(reserved_message(value))
        return value


class KeyView(BaseModel):
    key_id: str = Field(description="the key's SHA-256; the key itself is never shown again")
    tenant_id: str
    user_id: str
    roles: list[str]
    name: str | None
    status: Literal["active", "revoked", "expired"]
    created_at: str
    created_by: str | None
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None
    self: str

    @classmethod
    def of(cls, record: ApiKeyRecord, status: str) -> KeyView:
        from datetime import UTC, datetime

        expires = None
        if record.expires_at is not None:
            expires = iso(datetime.fromtimestamp(record.expires_at, tz=UTC))
        return cls(
            key_id=record.key_id,
            tenant_id=record.tenant_id,
            user_id=record.user_id,
            roles=list(record.roles),
            name=record.name,
            status=status,
            created_at=record.created_at,
            created_by=record.created_by,
            expires_at=expires,
            revoked_at=record.revoked_at,
            revoked_by=record.revoked_by,
            self=f"{PREFIX}/api-keys/{record.key_id}",
        )


class KeyCreated(KeyView):
    api_key: str = Field(description="send it in X-API-KEY; shown only in this answer")


class KeyList(BaseModel):
    keys: list[KeyView]
    next_cursor: str | None


@router.post("/api-keys", status_code=201, response_model=KeyCreated, responses=error_responses(400, 415))
def create_key(body: KeyCreate, response: Response, principal: Admin, c: Services) -> KeyCreated:
    """A key for a user of the caller's tenant. The answer is the only time the key is shown."""
    key, record = c.key_service.create(
        principal,
        user_id=body.user_id,
        roles=body.roles,
        name=body.name,
        expires_in_days=body.expires_in_days,
    )
    view = KeyView.of(record, "active")
    response.headers["Location"] = view.self
    response.headers["Cache-Control"] = "no-store"
    return KeyCreated(**view.model_dump(), api_key=key)


@router.get("/api-keys", response_model=KeyList, responses=error_responses(400))
def list_keys(
    principal: Admin,
    c: Services,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor_: Annotated[str | None, Query(alias="cursor")] = None,
) -> KeyList:
    """The tenant's keys, newest first (revoked and expired ones included)."""
    scope = ["api-keys", principal.tenant_id]
    keys = c.key_service
    records, position = keys.list(principal, limit=limit, start=cursor.decode(cursor_, scope))
    return KeyList(
        keys=[KeyView.of(r, keys.now_state(r)) for r in records], next_cursor=cursor.encode(position, scope)
    )


@router.get("/api-keys/{key_id}", response_model=KeyView, responses=error_responses(404))
def get_key(key_id: KeyId, principal: Admin, c: Services) -> KeyView:
    record = c.key_service.get(principal, key_id)
    return KeyView.of(record, c.key_service.now_state(record))


@router.delete("/api-keys/{key_id}", response_model=KeyView, responses=error_responses(404))
def revoke_key(key_id: KeyId, principal: Admin, c: Services) -> KeyView:
    """Revoke the key: refused from the next request on. Revoking again changes nothing."""
    record = c.key_service.revoke(principal, key_id)
    return KeyView.of(record, c.key_service.now_state(record))
