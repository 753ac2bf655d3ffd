"""At-most-once steps (webhook) claim a lease before they call out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LOCAL_WEBHOOKS, FakeClock, drain, make_container
from tests.faults import Meddling, registry_with
from tests.receivers import Receiver
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import AdvanceMessage
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import RunStatus
from workflows.roots.parts import Parts

CALLER = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)


@pytest.fixture
def root(aws_env: dict[str, str], clock: FakeClock) -> Parts:
    return make_container(aws_env, clock, **LOCAL_WEBHOOKS)


@pytest.fixture
def webhook(root: Parts) -> Meddling:
    """The root's webhook step type: something can happen while it calls out."""
    step = root.registry.get("webhook")
    assert step is not None
    return Meddling(step)


@pytest.fixture
def hooks(root: Parts, webhook: Meddling) -> Parts:
    """The root, its webhook steps the `webhook` fixture's."""
    return root.give(registry=registry_with(webhook))


def _submit(c: Parts, receiver: Receiver) -> str:
    definition = WorkflowDefinition.model_validate(
        {"name": "call", "steps": [{"id": "call", "type": "webhook", "config": {"url": receiver.url()}}]}
    )
    return c.run_service.submit(CALLER, definition, {}).run_id


def test_the_claim_is_committed_before_the_call(hooks: Parts, webhook: Meddling, receiver: Receiver) -> None:
    run_id = _submit(hooks, receiver)
    seen: list[Any] = []
    webhook.before = lambda _: seen.append(hooks.runs.get("default", run_id))  # the table, mid-call
    drain(hooks)
    during = seen[0]
    assert during.lease_expires_at is not None
    events = hooks.runs.list_events("default", run_id, limit=10).events
    assert [e.event_type for e in events][:2] == ["run_started", "step_started"]
    assert hooks.runs.get("default", run_id).lease_expires_at is None
    assert len(receiver.requests) == 1


class Killed(BaseException):
    """The process dying: not an error the engine could record (those are Exceptions)."""


def test_a_crash_mid_call_is_picked_up_after_the_lease_expires(
    hooks: Parts, webhook: Meddling, receiver: Receiver, clock: FakeClock
) -> None:
    run_id = _submit(hooks, receiver)
    kick = AdvanceMessage(tenant_id="default", run_id=run_id, version=1)

    def die(_: object) -> None:
        raise Killed  # nothing after the call runs, as when the Lambda is killed

    webhook.after = die
    with pytest.raises(Killed):
        hooks.engine.process(kick)
    hooks.sqs.purge_queue(QueueUrl=hooks.settings.dispatch_queue_url)

    # A duplicate while the lease is live does not call again
    leased = hooks.runs.get("default", run_id)
    assert (
        hooks.engine.process(
            AdvanceMessage(tenant_id="default", run_id=run_id, version=leased.version)
        ).action
        == "leased"
    )
    assert len(receiver.requests) == 1

    # SQS redelivers the original message; after the lease and a grace period it recovers the run
    clock.advance(600)
    assert hooks.engine.process(kick).action == "resent"
    drain(hooks)
    run = hooks.runs.get("default", run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert len(receiver.requests) == 2  # called again after the crash, with the same webhook-id
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    types = [e.event_type for e in hooks.runs.list_events("default", run_id, limit=20).events]
    assert types.count("step_completed") == 1
