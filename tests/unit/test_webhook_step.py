"""The webhook step end to end: the engine on in-memory fakes, a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import LOCAL_WEBHOOKS, FakeClock, api_client, drain, make_fake
from tests.receivers import Receiver, Reply, trickler
from workflows.adapters.http.signing import verify
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.roots.parts import Parts

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CALLER = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)


@pytest.fixture
def hooks(clock: FakeClock) -> Parts:
    return make_fake(clock, webhook_secret=SecretStr(SECRET), **LOCAL_WEBHOOKS)


@pytest.fixture
def client_of_hooks(hooks: Parts) -> Iterator[TestClient]:
    with api_client(hooks) as test_client:
        yield test_client


def _definition(url: str, **config: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {
            "name": "notify",
            "steps": [
                {"id": "greet", "type": "log", "config": {"message": "hi {{ inputs.name }}"}},
                {
                    "id": "call",
                    "type": "webhook",
                    "config": {
                        "url": url,
                        "headers": {"X-Run": "{{ run.id }}"},
                        "body": {"greeting": "{{ last.message }}", "static": [1, True]},
                        **config,
                    },
                    "retry": {"max_attempts": 3, "initial_interval_seconds": 0, "jitter": "none"},
                },
            ],
        }
    )


def _submit(c: Parts, definition: WorkflowDefinition) -> str:
    return c.run_service.submit(CALLER, definition, {"name": "Ada"}).run_id


def test_webhook_step_sends_a_signed_templated_request(
    hooks: Parts, receiver: Receiver, clock: FakeClock
) -> None:
    run_id = _submit(hooks, _definition(receiver.url()))
    drain(hooks)

    run = hooks.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    [request] = receiver.requests
    assert json.loads(request.body) == {"greeting": "hi Ada", "static": [1, True]}
    assert request.headers["x-run"] == run_id
    verify([SECRET], request.headers, request.body, now=clock())
    assert run.outputs["delivered"] is True
    assert run.outputs["status_code"] == 200
    assert run.outputs["host"] == "127.0.0.1"


def test_a_body_string_that_is_one_expression_arrives_with_its_json_type(
    hooks: Parts, receiver: Receiver
) -> None:
    # Given a body naming the previous step's output, inputs and an expression, alone or in text
    body = {
        "greeting": "{{ last }}",
        "count": "{{ inputs.count }}",
        "sum": "{{ inputs.count + 1 }}",
        "tags": "{{ inputs.tags }}",
        "missing": "{{ inputs.missing|default(none) }}",
        "flag": "{{ inputs.count > 1 }}",
        "as_text": "{{ inputs.count|string }}",
        "in_text": "count={{ inputs.count }} greeting={{ last }}",
    }
    definition = _definition(receiver.url(), body=body)

    # When the run is driven
    run_id = hooks.run_service.submit(CALLER, definition, {"name": "Ada", "count": 2, "tags": ["a"]}).run_id
    drain(hooks)

    # Then the receiver got an object where the template named an object, numbers as numbers
    assert hooks.runs.get("default", run_id).status.value == "succeeded"
    [request] = receiver.requests
    assert json.loads(request.body) == {
        "greeting": {"message": "hi Ada", "level": "info"},
        "count": 2,
        "sum": 3,
        "tags": ["a"],
        "missing": None,
        "flag": True,
        "as_text": "2",
        "in_text": 'count=2 greeting={"message": "hi Ada", "level": "info"}',
    }


def test_the_served_example_sends_the_previous_output_as_an_object(
    hooks: Parts, receiver: Receiver, client_of_hooks: TestClient
) -> None:
    # Given the webhook example GET /step-types serves, pointed at the receiver
    served = client_of_hooks.get("/api/v1/workflows/step-types").json()["step_types"]
    [example] = [item["example"] for item in served if item["name"] == "webhook"]
    definition = _definition(receiver.url(), body=example["body"])

    # When it runs after a log step
    run_id = _submit(hooks, definition)
    drain(hooks)

    # Then `result` is the log step's output object, not its Python text
    assert hooks.runs.get("default", run_id).status.value == "succeeded"
    [request] = receiver.requests
    assert json.loads(request.body) == {"run": run_id, "result": {"message": "hi Ada", "level": "info"}}


def test_transient_failures_are_retried_with_the_same_webhook_id(hooks: Parts, receiver: Receiver) -> None:
    receiver.reply(Reply(500), Reply(503))
    run_id = _submit(hooks, _definition(receiver.url()))
    drain(hooks)  # retries are delayed kicks with a zero interval here
    run = hooks.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    types = [e.event_type for e in hooks.runs.list_events("default", run_id, limit=100).events]
    assert types.count("step_retrying") == 2


def test_a_permanent_failure_fails_without_retry(hooks: Parts, receiver: Receiver) -> None:
    receiver.reply(Reply(410))
    run_id = _submit(hooks, _definition(receiver.url()))
    drain(hooks)
    run = hooks.runs.get("default", run_id)
    assert run.status.value == "failed"
    assert run.error is not None
    assert run.error["code"] == "webhook_rejected"
    assert len(receiver.requests) == 1


def test_dlq_mode_hands_the_delivery_over_and_the_run_continues(
    hooks: Parts, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.reply(Reply(500))
    definition = _definition(receiver.url(), on_delivery_failure="dlq")
    definition.steps[1].retry.max_attempts = 1
    run_id = _submit(hooks, definition)
    drain(hooks)

    run = hooks.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert run.outputs["delivered"] is False
    row = hooks.dlq.get("default", run.outputs["dlq_id"])
    assert row.status == "pending"
    # The scheduled worker delivers it later with the same webhook-id.
    clock.advance(3600)
    hooks.dlq_worker.run(lambda: 20_000)
    assert hooks.dlq.get("default", row.id).status == "delivered"
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]


def test_a_destination_outside_the_policy_is_refused_before_connecting(
    clock: FakeClock, receiver: Receiver
) -> None:
    # Loopback is not allowlisted here: the policy refuses it without opening a connection.
    strict = make_fake(clock, webhook_allowed_ports="*")
    run_id = _submit(strict, _definition(receiver.url()))
    drain(strict)
    run = strict.runs.get("default", run_id)
    assert run.status.value == "failed"
    assert run.error is not None
    assert "egress denied" in run.error["message"]
    assert receiver.requests == []


def test_every_terminal_status_notifies_the_completion_webhook(hooks: Parts, receiver: Receiver) -> None:
    # Given definitions that name a completion webhook
    def with_hook(*steps: dict[str, Any]) -> WorkflowDefinition:
        return WorkflowDefinition.model_validate(
            {"name": "notified", "on_completion_webhook": receiver.url("/done"), "steps": list(steps)}
        )

    ok = _submit(hooks, with_hook({"id": "a", "type": "log", "config": {"message": "fine"}}))
    broken = _submit(hooks, with_hook({"id": "a", "type": "log", "config": {"message": "{{ nope.x }}"}}))
    waiting = _submit(hooks, with_hook({"id": "a", "type": "delay", "config": {"seconds": 600}}))
    drain(hooks)
    hooks.control.act("default", waiting, "cancel", "operator")

    # Then each run's notification arrived once, signed, with its terminal status
    bodies = {json.loads(r.body)["run_id"]: json.loads(r.body) for r in receiver.requests}
    assert {run_id: body["status"] for run_id, body in bodies.items()} == {
        ok: "succeeded",
        broken: "failed",
        waiting: "cancelled",
    }
    assert len(receiver.requests) == 3
    assert all("webhook-signature" in r.headers for r in receiver.requests)
    events = hooks.runs.list_events("default", ok, limit=100).events
    assert events[-1].event_type == "webhook_delivery"


# ---- one overall deadline, whatever the receiver trickles ------------------------------------


@pytest.fixture
def trickling() -> Iterator[Receiver]:
    """A receiver that sends its status line and headers one byte every 0.5 s."""
    r = Receiver(default=trickler(0.5))
    yield r
    r.close()


def _slow_call(url: str, **step: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {
            "name": "slow",
            "steps": [
                {
                    "id": "call",
                    "type": "webhook",
                    "config": {"url": url, "body": {"run": "{{ run.id }}"}},
                    "timeout_seconds": 2,
                    "retry": {"max_attempts": 1},
                    **step,
                },
                {"id": "fallback", "type": "log", "config": {"message": "receiver too slow"}},
            ],
        }
    )


def test_a_trickling_receiver_times_the_step_out_by_its_on_timeout_route(
    hooks: Parts, trickling: Receiver
) -> None:
    # Given a webhook step with a 2 s timeout whose receiver would take minutes to answer
    run_id = _submit(hooks, _slow_call(trickling.url(), on_timeout="fallback"))

    # When the run is driven
    started = time.monotonic()
    drain(hooks)
    elapsed = time.monotonic() - started

    # Then the step timed out at its deadline and the run took its on_timeout route
    assert elapsed < 10, f"took {elapsed:.1f} s for a 2 s deadline"
    run = hooks.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert run.step_outputs["call"]["error"]["code"] == "timeout"
    assert run.outputs["message"] == "receiver too slow"
    types = [e.event_type for e in hooks.runs.list_events("default", run_id, limit=100).events]
    assert "step_timeout" in types
    assert len(trickling.requests) == 1


def test_a_trickling_receiver_fails_the_step_with_the_timeout_code(hooks: Parts, trickling: Receiver) -> None:
    run_id = _submit(hooks, _slow_call(trickling.url()))

    started = time.monotonic()
    drain(hooks)
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"took {elapsed:.1f} s for a 2 s deadline"
    run = hooks.runs.get("default", run_id)
    assert run.status.value == "failed"
    assert run.error is not None
    assert run.error["code"] == "timeout"
    assert "timeout: ReadTimeout" in run.error["message"]
