"""Signal routes: send a signal to the tenant's waiting runs, or to one run (docs/signals.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.api.auth import require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import RunId
from workflows.api.schemas import error_responses
from workflows.domain.principal import SIGNALS_SEND, Principal
from workflows.domain.signals import NAME_PATTERN

router = APIRouter(route_class=GuardedRoute)
Sender = Annotated[Principal, Depends(require(SIGNALS_SEND))]
Delivery = Literal["completed", "received", "ignored", "not_waiting"]


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="what happened (`payment.settled`)")
    id: str = Field(
        pattern=NAME_PATTERN,
        description="the signal's id, chosen by the sender: sending it again sends nothing new",
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="a JSON object (at most 16 KiB) that waits match on"
    )


class SignalAccepted(BaseModel):
    name: str
    id: str
    sent_at: str
    run_id: str | None = Field(description="the run it was sent to; null: every waiting run")
    duplicate: bool = Field(description="the id was sent before: this is that first signal")


class RunSignalAccepted(SignalAccepted):
    run_id: str
    delivery: Delivery = Field(
        description="what the run did with it: `completed` (its step is done), `received` (kept;"
        " it waits for more), `ignored` (it waits, but not for this one), `not_waiting`"
    )


def _send(
    c: Services, principal: Principal, response: Response, body: SignalRequest, run_id: str | None
) -> dict[str, Any]:
    receipt = c.signal_service.send(principal, body.name, body.id, body.data, run_id=run_id)
    response.headers.update(receipt.headers or {})
    answer: dict[str, Any] = {
        "name": receipt.name,
        "id": receipt.signal_id,
        "sent_at": receipt.sent_at,
        "run_id": receipt.run_id,
        "duplicate": not receipt.new,
    }
    if run_id is not None:
        answer["delivery"] = receipt.delivery
    return answer


@router.post(
    "/signals",
    status_code=202,
    response_model=SignalAccepted,
    responses=error_responses(409, 413, 429),
    summary="Send a signal to the tenant's waiting runs",
)
def send_signal(body: SignalRequest, principal: Sender, c: Services, response: Response) -> SignalAccepted:
    """Stored, then delivered to every run of the tenant waiting for its name (in the
    background); a run that begins waiting later counts it within its `lookback_seconds`."""
    return SignalAccepted(**_send(c, principal, response, body, None))


@router.post(
    "/runs/{run_id}/signals",
    status_code=202,
    response_model=RunSignalAccepted,
    responses=error_responses(404, 409, 413, 429),
    summary="Send a signal to one run",
)
def send_run_signal(
    run_id: RunId, body: SignalRequest, principal: Sender, c: Services, response: Response
) -> RunSignalAccepted:
    """Stored, then delivered to this run at once; `delivery` says what the run did with it."""
    return RunSignalAccepted(**_send(c, principal, response, body, run_id))
