"""The dispatch queue's message protocol (versioned).

A message is a *kick*: "advance run R of tenant T, which should be at version V". What to do is
derived from the run item itself (status, current step, attempt), Step Functions style, so a
message carries no state that could disagree with the table. A kick for an older version is
stale; duplicates and late deliveries therefore change nothing.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1


class AdvanceMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["advance"] = "advance"
    tenant_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    version: int = Field(ge=1)
    # Epoch seconds: a kick deferred to its tenant's fair share (domain.shares) already holds
    # its place and is not charged again when it comes back.
    not_before: float | None = None

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_body(cls, body: str) -> AdvanceMessage:
        return cls.model_validate(json.loads(body))


class StartScheduledRun(BaseModel):
    """A schedule fired: start one run of its workflow for this scheduled time (at most once).

    EventBridge Scheduler sends it (the schedule's target Input, with `scheduled_time` filled in
    from `<aws.scheduler.scheduled-time>`), and so does the local stack's embedded scheduler.
    """

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["start_scheduled"] = "start_scheduled"
    tenant_id: str = Field(min_length=1)
    schedule_id: str = Field(min_length=1)
    scheduled_time: str = Field(min_length=1)

    def to_body(self) -> str:
        return self.model_dump_json()


class DeliverSignal(BaseModel):
    """A signal was sent to every run of its tenant waiting for its name: deliver it to the
    runs waiting, a page of them per message (`after`: the last run of the page before)."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["deliver_signal"] = "deliver_signal"
    tenant_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    signal_id: str = Field(min_length=1)
    after: str | None = None

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)


class ChildEnded(BaseModel):
    """A child run ended: its parent (`run_id`) records it for the step that waits for it. Sent
    after the child's terminal commit, and again by any kick that finds the child ended (its
    first send may have been lost); the parent records each child once."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["child_ended"] = "child_ended"
    tenant_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    step_id: str = Field(min_length=1)
    round: int = Field(ge=0)
    index: int = Field(ge=0)
    child_run_id: str = Field(min_length=1)

    def to_body(self) -> str:
        return self.model_dump_json()


class CancelChildren(BaseModel):
    """Cancel the children [start, stop) of a run's step (`round`) that have not ended: the run
    ended, or its step's join decided. A page per message (domain.fanout.CANCEL_PAGE). With
    `action` pause or resume, pause or resume them instead: their parent was paused or resumed."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["cancel_children"] = "cancel_children"
    tenant_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    step_id: str = Field(min_length=1)
    round: int = Field(ge=0)
    start: int = Field(ge=0)
    stop: int = Field(ge=0)
    action: Literal["cancel", "pause", "resume"] = "cancel"

    def to_body(self) -> str:
        return self.model_dump_json()


# What the service itself sends to the dispatch queue (each carries its tenant: fair delivery).
QueuedMessage = AdvanceMessage | DeliverSignal | ChildEnded | CancelChildren
AnyMessage = AdvanceMessage | StartScheduledRun | DeliverSignal | ChildEnded | CancelChildren
DispatchMessage = Annotated[AnyMessage, Field(discriminator="kind")]
_DISPATCH_MESSAGE: TypeAdapter[AnyMessage] = TypeAdapter(DispatchMessage)


def parse_message(body: str) -> AnyMessage:
    """Either kind of dispatch message; a body without `kind` is an advance kick."""
    document = json.loads(body)
    if isinstance(document, dict):
        document.setdefault("kind", "advance")
    return _DISPATCH_MESSAGE.validate_python(document)
