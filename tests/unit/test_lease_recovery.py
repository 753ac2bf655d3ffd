"""A dispatcher that dies in the middle of an at-most-once call: the run is picked up when the
step's lease ends, by the message the dispatcher was working on, not minutes later by the sweeper."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import LOCAL_WEBHOOKS, FakeClock, drain, make_fake
from tests.fakes import FakeQueue
from tests.faults import Meddling, registry_with, unwrapped
from tests.receivers import Receiver
from workflows.clock import parse_iso
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import AdvanceMessage
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import RunStatus
from workflows.roots.parts import Parts

CALLER = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)


def _root(clock: FakeClock) -> tuple[Parts, Meddling, FakeQueue]:
    """Fake parts whose webhook step can be meddled with, and their queue."""
    root = make_fake(clock, **LOCAL_WEBHOOKS)
    step = root.registry.get("webhook")
    assert step is not None
    webhook = Meddling(step)
    parts = root.give(registry=registry_with(webhook))
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    return parts, webhook, queue


def _submit(parts: Parts, receiver: Receiver) -> str:
    definition = WorkflowDefinition.model_validate(
        {"name": "call", "steps": [{"id": "call", "type": "webhook", "config": {"url": receiver.url()}}]}
    )
    return parts.run_service.submit(CALLER, definition, {}).run_id


class Killed(BaseException):
    """The process dying: not an error the engine could record (those are Exceptions)."""


def test_a_crash_mid_call_is_recovered_when_the_lease_ends(clock: FakeClock, receiver: Receiver) -> None:
    parts, webhook, queue = _root(clock)
    run_id = _submit(parts, receiver)
    [kick] = queue.receive()

    def die(_: object) -> None:
        raise Killed  # nothing after the call runs, as when the Lambda is killed

    webhook.after = die
    with pytest.raises(Killed):
        parts.engine.process(kick)
    leased = parts.runs.get("default", run_id)
    assert leased.lease_expires_at is not None
    assert queue.depth() == 0

    # SQS delivers the dead dispatcher's message again after its visibility timeout, while the
    # lease is live: one kick is sent for the lease's end.
    clock.advance(10)
    assert parts.engine.process(kick).action == "stale_leased"
    [pending] = queue.messages
    assert pending.message.version == leased.version
    lease_end = parse_iso(leased.lease_expires_at)
    assert lease_end < pending.visible_at <= lease_end + timedelta(seconds=2)
    assert drain(parts).actions == []  # nothing before the lease ends

    clock.advance((pending.visible_at - clock()).total_seconds())
    drain(parts)
    run = parts.runs.get("default", run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.sweeps == 0  # the sweeper had nothing to do with it
    assert len(receiver.requests) == 2  # called again after the crash, with the same webhook-id
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    events = parts.runs.list_events("default", run_id, limit=50).events
    assert [e.event_type for e in events].count("step_completed") == 1


def test_a_duplicate_during_a_live_lease_comes_back_once_when_it_ends(
    clock: FakeClock, receiver: Receiver
) -> None:
    parts, webhook, queue = _root(clock)
    run_id = _submit(parts, receiver)
    [kick] = queue.receive()
    outcomes: list[str] = []

    def duplicate(_: object) -> None:
        # While the call is out, the same kick (now stale) and one for the claimed version arrive.
        claimed = parts.runs.get("default", run_id)
        outcomes.append(parts.engine.process(kick).action)
        again = AdvanceMessage(tenant_id="default", run_id=run_id, version=claimed.version)
        outcomes.append(parts.engine.process(again).action)

    webhook.after = duplicate
    parts.engine.process(kick)
    assert outcomes == ["stale_leased", "leased"]
    assert parts.runs.get("default", run_id).status == RunStatus.SUCCEEDED
    clock.advance(3600)
    assert set(drain(parts).actions) == {"stale"}  # the step committed: they change nothing
    assert len(receiver.requests) == 1
