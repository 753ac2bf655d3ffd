"""Run-completion notifications on in-memory fakes, to real receivers on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from tests.conftest import FakeClock, make_fake
from tests.receivers import Receiver, Reply
from workflows.adapters.http.signing import verify
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import Run, RunStatus
from workflows.roots.parts import Parts
from workflows.services.webhooks.notify import notification_webhook_id
from workflows.services.webhooks.worker import WorkerReport

SECRET = "whsec_bm90aWZ5LXNlY3JldC1ub3RpZnktc2VjcmV0"
ONE_PASS_MS = 20_000


@pytest.fixture
def local(clock: FakeClock) -> Parts:
    """The composition root with the egress policy opened to local receivers only."""
    return make_fake(
        clock, webhook_allowlist="127.0.0.1", webhook_allowed_ports="*", webhook_secret=SecretStr(SECRET)
    )


def finished_run(
    c: Parts,
    status: RunStatus = RunStatus.SUCCEEDED,
    *,
    run_id: str = "run-1",
    tenant_id: str = "t1",
    **fields: Any,
) -> Run:
    definition = WorkflowDefinition.model_validate(
        {"name": "d", "steps": [{"id": "a", "type": "log", "config": {"message": "x"}}]}
    )
    run = Run(
        run_id=run_id,
        tenant_id=tenant_id,
        owner_id="u",
        workflow_id="wf-1",
        definition_version=1,
        definition_name="d",
        status=status,
        outputs={"answer": 42} if status == RunStatus.SUCCEEDED else None,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:01:00.000Z",
        ended_at="2026-01-01T00:01:00.000Z",
        **fields,
    )
    c.runs.create(run, definition)
    return run


def deliveries(c: Parts, run: Run) -> list[dict[str, Any]]:
    page = c.runs.list_events(run.tenant_id, run.run_id, types=["webhook_delivery"])
    return [event.payload for event in page.events]


def dlq_rows(c: Parts, tenant_id: str = "t1") -> list[Any]:
    rows, _ = c.dlq.list_for_tenant(tenant_id)
    return rows


def test_succeeded_run_is_notified_with_a_signed_body(
    local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    # Given a succeeded run
    run = finished_run(local)

    # When the engine notifies
    local.notifier.notify(run, receiver.url("/done?token=abc"))

    # Then the receiver got the documented body, signed, with the run's stable webhook-id
    [request] = receiver.requests
    verify([SECRET], request.headers, request.body, now=clock())
    assert request.headers["webhook-id"] == notification_webhook_id(run)
    assert json.loads(request.body) == {
        "type": "run.completed",
        "run_id": "run-1",
        "tenant_id": "t1",
        "workflow_id": "wf-1",
        "status": "succeeded",
        "status_reason": None,
        "outputs": {"answer": 42},
        "error": None,
        "ended_at": "2026-01-01T00:01:00.000Z",
        "links": {
            "self": "/api/v1/workflows/runs/run-1",
            "events": "/api/v1/workflows/runs/run-1/events",
            "definition": "/api/v1/workflows/runs/run-1/definition",
        },
    }
    # And the attempt is on the run, host only, with no DLQ row
    assert deliveries(local, run) == [
        {
            "source": "completion",
            "webhook_id": notification_webhook_id(run),
            "dlq_id": None,
            "attempt": 1,
            "outcome": "delivered",
            "status": "delivered",
            "status_code": 200,
            "error": None,
            "host": "127.0.0.1",
        }
    ]
    assert dlq_rows(local) == []


@pytest.mark.parametrize(
    ("status", "event_type"),
    [(RunStatus.FAILED, "run.failed"), (RunStatus.CANCELLED, "run.cancelled")],
)
def test_failed_and_cancelled_runs_have_their_own_type(
    local: Parts, receiver: Receiver, status: RunStatus, event_type: str
) -> None:
    run = finished_run(local, status, status_reason="boom", error={"code": "x", "message": "boom"})

    local.notifier.notify(run, receiver.url())

    body = json.loads(receiver.requests[0].body)
    assert (body["type"], body["status"], body["status_reason"]) == (event_type, status.value, "boom")
    assert body["error"] == {"code": "x", "message": "boom"}


def test_server_error_queues_a_row_that_the_worker_delivers_with_the_same_id(
    local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    # Given a receiver that is down for the first attempt
    receiver.reply(Reply(500, body=b"down"))
    run = finished_run(local)

    # When the engine notifies
    notification = local.notifier.notify(run, receiver.url())

    # Then a pending DLQ row holds it, and the run says so
    [row] = dlq_rows(local)
    assert notification.dlq_id == row.id
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 500: down")
    assert row.webhook_id == notification_webhook_id(run)
    [event] = deliveries(local, run)
    assert (event["outcome"], event["status"], event["dlq_id"]) == ("transient", "pending", row.id)

    # When the retry worker passes
    report = local.dlq_worker.run(lambda: ONE_PASS_MS)

    # Then it delivered the same body with the same webhook-id, signed afresh
    assert report.delivered == 1
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == notification_webhook_id(run)
    assert first.body == second.body
    verify([SECRET], second.headers, second.body, now=clock())
    assert local.dlq.get("t1", row.id).status == "delivered"
    assert [(e["source"], e["outcome"]) for e in deliveries(local, run)] == [
        ("completion", "transient"),
        ("dlq_retry", "delivered"),
    ]


def test_retry_after_delays_the_first_retry(local: Parts, clock: FakeClock, receiver: Receiver) -> None:
    receiver.reply(Reply(503, headers={"Retry-After": "90"}, body=b""))
    run = finished_run(local)

    local.notifier.notify(run, receiver.url())

    [row] = dlq_rows(local)
    assert row.next_attempt_at == pytest.approx(clock().timestamp() + 90)
    assert local.dlq_worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1)


def test_gone_is_permanent_and_queues_nothing(local: Parts, receiver: Receiver) -> None:
    receiver.reply(Reply(410, body=b""))
    run = finished_run(local)

    notification = local.notifier.notify(run, receiver.url())

    assert notification.result.outcome == "permanent"
    assert notification.dlq_id is None
    assert dlq_rows(local) == []
    [event] = deliveries(local, run)
    assert (event["outcome"], event["status"], event["status_code"]) == ("permanent", "failed", 410)


def test_refused_destination_is_permanent_and_never_connects(local: Parts) -> None:
    # Not on the allowlist: the policy refuses before any connection is made.
    run = finished_run(local)

    notification = local.notifier.notify(run, "http://hooks.example.com/done")

    assert notification.result.outcome == "permanent"
    assert (notification.result.error or "").startswith("egress denied")
    assert dlq_rows(local) == []
    assert deliveries(local, run)[0]["host"] == "hooks.example.com"


def test_notifying_the_same_commit_twice_keeps_one_row(local: Parts, receiver: Receiver) -> None:
    # A redelivered dispatch message may notify twice; both attempts fail transiently.
    receiver.reply(Reply(500, body=b""), Reply(500, body=b""))
    run = finished_run(local)

    first = local.notifier.notify(run, receiver.url())
    second = local.notifier.notify(run, receiver.url())

    assert first.dlq_id == second.dlq_id
    assert len(dlq_rows(local)) == 1
    assert len(deliveries(local, run)) == 2


def test_a_retried_run_that_ends_again_gets_a_new_webhook_id(local: Parts) -> None:
    run = finished_run(local, RunStatus.FAILED)
    again = run.model_copy(update={"ended_at": "2026-01-01T00:05:00.000Z"})

    assert notification_webhook_id(run) != notification_webhook_id(again)
    assert notification_webhook_id(run) == notification_webhook_id(run.model_copy())


def test_a_run_that_is_gone_does_not_stop_the_notification(local: Parts, receiver: Receiver) -> None:
    run = finished_run(local)
    missing = run.model_copy(update={"run_id": "run-gone"})

    notification = local.notifier.notify(missing, receiver.url())

    assert notification.result.outcome == "delivered"
    assert len(receiver.requests) == 1


def test_unreachable_receiver_does_not_raise(local: Parts) -> None:
    run = finished_run(local)

    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    notification = local.notifier.notify(run, "http://127.0.0.1:9/done")

    assert notification.result.outcome == "transient"
    assert len(dlq_rows(local)) == 1


def test_a_run_that_is_not_finished_is_refused(local: Parts, receiver: Receiver) -> None:
    run = finished_run(local, RunStatus.RUNNING)

    with pytest.raises(ValueError, match="not terminal"):
        local.notifier.notify(run, receiver.url())
    assert receiver.requests == []
