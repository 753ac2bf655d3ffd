"""The tenant's secrets for `{{ secrets.NAME }}` in webhook steps (workflows.admin).

Values go in and never come out: listing shows names and the hosts each may be sent to, and a
value is read only when a webhook that references it is sent (docs/steps.md, "Secrets").
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.api.auth import require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import SecretName
from workflows.api.schemas import PREFIX, error_responses
from workflows.domain.principal import ADMIN, Principal
from workflows.domain.secret_refs import MAX_ALLOWED_HOSTS, SecretInfo
from workflows.domain.secret_refs import MAX_SECRET_BYTES as MAX_VALUE_BYTES

router = APIRouter(route_class=GuardedRoute, tags=["secrets"])
Admin = Annotated[Principal, Depends(require(ADMIN))]


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES, description="stored as an SSM SecureString")
    allowed_hosts: list[str] | None = Field(
        default=None,
        max_length=MAX_ALLOWED_HOSTS,
        description="the only hosts a request carrying the value may go to: exact hosts, `*.example.com`"
        " wildcards or IP addresses (the egress allowlist's syntax); left out, any host the egress"
        " policy allows. A PUT replaces both the value and this list",
    )


class SecretView(BaseModel):
    name: str
    reference: str = Field(description="how a webhook step's url, headers or body uses it")
    allowed_hosts: list[str] | None = Field(description="null: any host the egress policy allows")
    self: str


class SecretList(BaseModel):
    secrets: list[SecretView]


def _view(info: SecretInfo) -> SecretView:
    name = info.name
    hosts = None if info.allowed_hosts is None else list(info.allowed_hosts)
    return SecretView(
        name=name, reference=f"{{{{ secrets.{name} }}}}", allowed_hosts=hosts, self=f"{PREFIX}/secrets/{name}"
    )


@router.put("/secrets/{name}", response_model=SecretView, responses=error_responses(404))
def put_secret(name: SecretName, body: SecretValue, principal: Admin, c: Services) -> SecretView:
    """Create or replace a secret of the caller's tenant. The answer never holds the value."""
    return _view(c.secret_service.put(principal, name, body.value, body.allowed_hosts))


@router.get("/secrets", response_model=SecretList, responses=error_responses())
def list_secrets(principal: Admin, c: Services) -> SecretList:
    """The tenant's secret names and allowed hosts (never their values)."""
    return SecretList(secrets=[_view(info) for info in c.secret_service.listing(principal)])


@router.delete("/secrets/{name}", status_code=204, responses=error_responses(404))
def delete_secret(name: SecretName, principal: Admin, c: Services) -> Response:
    c.secret_service.delete(principal, name)
    return Response(status_code=204)
