"""`make run`'s activity lines: one per step outcome and run ending, each shown once."""

from __future__ import annotations

import io
import json
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from devstack.activity import ActivityPrinter
from tests.conftest import LOCAL_WEBHOOKS, FakeClock, log_definition, make_fake, step_output
from tests.receivers import Receiver, Reply
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.roots.parts import Parts

BASE = "/api/v1/workflows"


def _sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {"Records": [{"messageId": str(i), "body": body} for i, body in enumerate(bodies)]}


def test_each_dispatch_prints_what_it_did_once(client: TestClient, container: Parts) -> None:
    definition = log_definition("one", "two")
    definition["steps"].append({"id": "boom", "type": "log", "config": {"message": "{{ 1 / 0 }}"}})
    run_id = client.post(f"{BASE}/runs", json={"definition": definition}).json()["run_id"]
    out = io.StringIO()
    printer = ActivityPrinter(container.runs, out=out)

    def dispatch(event: dict[str, Any], context: Any) -> None:
        # The dispatcher's work for these messages: the engine, one message at a time.
        for message in container.queue.receive():
            container.engine.process(message)

    handler = printer.around(dispatch)
    body = json.dumps({"tenant_id": "default", "run_id": run_id})
    while container.runs.get("default", run_id).status.value not in {"succeeded", "failed"}:
        handler(_sqs_event([body, "not json"]), None)
    handler(_sqs_event([body]), None)  # nothing new: nothing printed

    lines = out.getvalue().splitlines()
    short = run_id[:8]
    assert lines == [
        f"  run {short}  step s1 completed",
        f"  run {short}  step s2 completed",
        f"  run {short}  step boom failed (template_error)",
        f"  run {short}  failed (template_error)",
    ]


def test_each_approval_of_a_quorum_says_how_far_it_is(client: TestClient, container: Parts) -> None:
    definition = {
        "name": "two approvers",
        "steps": [
            {
                "id": "review",
                "type": "approval",
                "config": {"assignees": ["alice", "bob"], "required_approvals": 2},
            },
            {"id": "after", "type": "log", "config": {"message": "done"}},
        ],
    }
    run_id = client.post(f"{BASE}/runs", json={"definition": definition}).json()["run_id"]
    out = io.StringIO()
    printer = ActivityPrinter(container.runs, out=out)

    def dispatch(event: dict[str, Any], context: Any) -> None:
        for message in container.queue.receive():
            container.engine.process(message)

    handler = printer.around(dispatch)
    body = _sqs_event([json.dumps({"tenant_id": "default", "run_id": run_id})])
    handler(body, None)
    container.control.decide("default", run_id, "review", "approve", "alice")
    handler(body, None)  # the first approval alone: the run still waits
    assert container.runs.get("default", run_id).status.value == "waiting_approval"
    container.control.decide("default", run_id, "review", "approve", "bob")
    while container.runs.get("default", run_id).status.value != "succeeded":
        handler(body, None)

    short = run_id[:8]
    assert out.getvalue().splitlines() == [
        f"  run {short}  step review waits for approval",
        f"                workflows approve {run_id} review",
        f"  run {short}  step review approved by alice (1 of 2)",
        f"  run {short}  step review approved by bob (2 of 2)",
        f"  run {short}  step review completed",
        f"  run {short}  step after completed",
        f"  run {short}  succeeded",
    ]


def _lines_until_ended(parts: Parts, definition: dict[str, Any]) -> tuple[str, list[str]]:
    """Submits `definition` and dispatches until its run ends: the run id and the lines printed."""
    caller = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
    run_id = parts.run_service.submit(caller, WorkflowDefinition.model_validate(definition), {}).run_id
    out = io.StringIO()

    def dispatch(event: dict[str, Any], context: Any) -> None:
        for message in parts.queue.receive():
            parts.engine.process(message)

    handler = ActivityPrinter(parts.runs, out=out).around(dispatch)
    body = _sqs_event([json.dumps({"tenant_id": "default", "run_id": run_id})])
    for _ in range(50):
        if parts.runs.get("default", run_id).status.value in {"succeeded", "failed"}:
            return run_id, out.getvalue().splitlines()
        handler(body, None)
    raise AssertionError(f"the run did not end: {out.getvalue()}")


def test_a_webhook_handed_to_the_dlq_says_it_was_not_delivered(clock: FakeClock, receiver: Receiver) -> None:
    parts = make_fake(
        clock, webhook_secret=SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), **LOCAL_WEBHOOKS
    )
    receiver.reply(Reply(503, body=b"busy"), Reply(200))
    call = {"type": "webhook", "config": {"url": receiver.url(), "body": {}, "on_delivery_failure": "dlq"}}
    definition = {"name": "notify", "steps": [{"id": "first", **call}, {"id": "second", **call}]}

    run_id, lines = _lines_until_ended(parts, definition)

    row = step_output(parts, "default", run_id, "first")["dlq_id"]
    short = run_id[:8]
    assert lines == [
        f"  run {short}  step first not delivered to 127.0.0.1: HTTP 503: busy;"
        f" handed to the DLQ (row {row})",
        f"  run {short}  step second delivered to 127.0.0.1 (HTTP 200)",
        f"  run {short}  succeeded",
    ]


def test_a_run_that_ends_says_which_steps_it_never_ran(container: Parts) -> None:
    definition = log_definition("one")
    definition["steps"] += [
        {"id": "boom", "type": "log", "config": {"message": "{{ 1 / 0 }}"}},
        {"id": "later", "type": "log", "config": {"message": "never"}},
    ]

    run_id, lines = _lines_until_ended(container, definition)

    short = run_id[:8]
    assert lines == [
        f"  run {short}  step s1 completed",
        f"  run {short}  step boom failed (template_error)",
        f"  run {short}  step later not run",
        f"  run {short}  failed (template_error)",
    ]
