"""The webhook DLQ retry worker against moto DynamoDB and real receivers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
from pydantic import SecretStr

from tests.conftest import FakeClock, settings_from
from tests.fakes import due_rows
from tests.receivers import Received, Receiver, Reply
from workflows.adapters.dlq import FORGET_MARGIN_SEC, LEGACY_DUE_SHARD, REGISTRY_ID, WebhookDlqRepository
from workflows.adapters.http.delivery import EgressDenied, HttpDeliverer, scheme_policy
from workflows.adapters.http.signing import WebhookVerificationError, verify
from workflows.adapters.runs import RunRepository
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.delivery import DeliveryResult
from workflows.domain.dlq import DlqRow
from workflows.domain.run import Run, RunStatus
from workflows.errors import Conflict, NotFound
from workflows.roots import dlq_worker as lambda_handler
from workflows.roots.parts import Parts
from workflows.services.webhooks.worker import DlqWorker, WorkerReport

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# One pass and no sleep: with the default 10 s timeout the margin is 15 s, and 20 s minus the
# 15 s interval leaves less than that.
ONE_PASS_MS = 20_000


# ---- wiring ----------------------------------------------------------------------------


def _built(settings: Any, clock: FakeClock) -> tuple[Any, DlqWorker]:
    """The DLQ table and worker as the composition root builds them."""
    parts = Parts(settings, clock=clock, dynamodb=boto3.client("dynamodb"))
    return parts.dlq, parts.dlq_worker


def _half() -> float:
    return 0.5


@pytest.fixture
def repo(aws_env: dict[str, str], clock: FakeClock) -> WebhookDlqRepository:
    return WebhookDlqRepository(boto3.client("dynamodb"), aws_env["WORKFLOWS_WEBHOOK_DLQ_TABLE"], clock=clock)


def make_worker(
    aws_env: dict[str, str],
    clock: FakeClock,
    *,
    deliverer: Any = None,
    sleep: Callable[[float], None] | None = None,
    runs: RunRepository | None = None,
    **overrides: Any,
) -> DlqWorker:
    settings = settings_from(aws_env, **overrides)
    repo = WebhookDlqRepository(boto3.client("dynamodb"), settings.webhook_dlq_table, clock=clock)
    deliverer = deliverer or HttpDeliverer(
        [SECRET], timeout=settings.webhook_dlq_timeout_sec, policy=scheme_policy, clock=clock
    )
    return DlqWorker(repo, deliverer, settings, clock=clock, sleep=sleep or _no_sleep, rand=_half, runs=runs)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def add_row(
    repo: WebhookDlqRepository, clock: FakeClock, url: str, *, tenant_id: str = "t1", **fields: Any
) -> DlqRow:
    row = DlqRow.new(
        tenant_id=tenant_id,
        run_id=fields.pop("run_id", "run-1"),
        url=url,
        body_json=fields.pop("body_json", json.dumps({"event": "run_completed", "run_id": "run-1"})),
        now=clock(),
        last_error="HTTP 502",
        **fields,
    )
    repo.add(row)
    return row


def assert_signed(request: Received, row: DlqRow, now: datetime) -> None:
    assert request.headers["webhook-id"] == row.webhook_id
    assert request.headers["content-type"] == "application/json"
    verify([SECRET], request.headers, request.body, now=now)


# ---- delivery outcomes -------------------------------------------------------------------


def test_due_row_is_delivered_with_valid_signature(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a due row
    row = add_row(repo, clock, receiver.url(), headers={"X-Run-Id": "run-1"})

    # When the worker makes one pass
    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    # Then the receiver got the body, signed, and the row is done
    assert report == WorkerReport(passes=1, delivered=1)
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.body == row.body_json.encode()
    assert request.headers["x-run-id"] == "run-1"
    assert_signed(request, row, clock())
    stored = repo.get("t1", row.id)
    assert stored.status == "delivered"
    assert stored.attempts == 1
    assert stored.lease_expires_at is None
    assert due_rows(repo) == []


def test_row_headers_cannot_override_signature_or_content_type(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    row = add_row(
        repo,
        clock,
        receiver.url(),
        headers={"Webhook-Id": "forged", "webhook-signature": "v1,forged", "Content-Type": "text/plain"},
    )

    make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    [request] = receiver.requests
    assert_signed(request, row, clock())


def test_server_error_reschedules_with_backoff_and_keeps_the_webhook_id(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a receiver that fails once
    receiver.reply(Reply(500, body=b"database down"))
    row = add_row(repo, clock, receiver.url())
    worker = make_worker(aws_env, clock)

    # When the worker tries
    report = worker.run(lambda: ONE_PASS_MS)

    # Then the row waits base * 2**0 * jitter(0.5) = 15 s, with the error recorded
    assert report == WorkerReport(passes=1, rescheduled=1)
    stored = repo.get("t1", row.id)
    assert stored.status == "pending"
    assert stored.attempts == 1
    assert stored.next_attempt_at == pytest.approx(clock().timestamp() + 15)
    assert stored.last_error == "HTTP 500: database down"
    assert stored.lease_expires_at is None

    # And it is not due again until the clock moves
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1)
    assert len(receiver.requests) == 1
    clock.advance(15)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)

    # And both attempts carried the same webhook-id, each with a fresh valid signature
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == row.webhook_id
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 15
    assert_signed(second, row, clock())
    assert repo.get("t1", row.id).attempts == 2


def test_retry_after_longer_than_backoff_wins(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    receiver.reply(Reply(503, headers={"Retry-After": "600"}))
    row = add_row(repo, clock, receiver.url())

    make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    assert repo.get("t1", row.id).next_attempt_at == pytest.approx(clock().timestamp() + 600)


def test_retry_after_is_capped_at_the_maximum_backoff(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    receiver.reply(Reply(429, headers={"Retry-After": "86400"}))
    row = add_row(repo, clock, receiver.url())

    make_worker(aws_env, clock, webhook_dlq_max_backoff_sec=3600).run(lambda: ONE_PASS_MS)

    assert repo.get("t1", row.id).next_attempt_at == pytest.approx(clock().timestamp() + 3600)


def test_gone_exhausts_immediately(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    receiver.reply(Reply(410, body=b""))
    row = add_row(repo, clock, receiver.url())

    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1, exhausted=1)
    stored = repo.get("t1", row.id)
    assert stored.status == "exhausted"
    assert stored.attempts == 1
    assert stored.last_error == "HTTP 410"
    assert stored.lease_expires_at is None
    clock.advance(10_000)
    assert due_rows(repo) == []


def test_reaching_max_attempts_exhausts(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a row that has used all but one attempt
    receiver.reply(Reply(500, body=b""))
    row = add_row(repo, clock, receiver.url(), attempts=2)

    # When its last attempt fails transiently
    report = make_worker(aws_env, clock, webhook_dlq_max_attempts=3).run(lambda: ONE_PASS_MS)

    # Then it is exhausted, not rescheduled
    assert report == WorkerReport(passes=1, exhausted=1)
    stored = repo.get("t1", row.id)
    assert (stored.status, stored.attempts, stored.last_error) == ("exhausted", 3, "HTTP 500")


def test_unreachable_receiver_is_rescheduled(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository
) -> None:
    # A loopback port nobody listens on: the connection is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    row = add_row(repo, clock, f"http://127.0.0.1:{port}/hook")

    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1, rescheduled=1)
    assert (repo.get("t1", row.id).last_error or "").startswith("ConnectError")


def test_slow_receiver_times_out_and_is_rescheduled(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    receiver.reply(Reply(200, delay=1.0))
    row = add_row(repo, clock, receiver.url())

    report = make_worker(aws_env, clock, webhook_dlq_timeout_sec=0.2).run(lambda: 10_000)

    assert report == WorkerReport(passes=1, rescheduled=1)
    assert (repo.get("t1", row.id).last_error or "").startswith("timeout")


def test_redirect_is_not_followed_and_exhausts(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    receiver.reply(Reply(302, headers={"Location": receiver.url("/elsewhere")}, body=b""))
    row = add_row(repo, clock, receiver.url())

    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1, exhausted=1)
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert "redirect" in (repo.get("t1", row.id).last_error or "")


def test_large_error_body_is_read_bounded(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    receiver.reply(Reply(500, body=b"x" * (2 * 1024 * 1024)))
    row = add_row(repo, clock, receiver.url())

    make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    error = repo.get("t1", row.id).last_error or ""
    assert error.startswith("HTTP 500: xxx")
    assert len(error) <= 300


def test_default_policy_refuses_non_http_schemes_permanently(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository
) -> None:
    row = add_row(repo, clock, "ftp://127.0.0.1/hook")

    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1, exhausted=1)
    assert (repo.get("t1", row.id).last_error or "").startswith("egress denied")


def test_plugged_in_policy_refuses_before_connecting(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given an egress policy that refuses the receiver's URL
    checked: list[str] = []

    def deny_all(url: str) -> None:
        checked.append(url)
        raise EgressDenied("destination not on the allowlist")

    deliverer = HttpDeliverer([SECRET], timeout=5, policy=deny_all, clock=clock)
    row = add_row(repo, clock, receiver.url())

    # When the worker tries
    report = make_worker(aws_env, clock, deliverer=deliverer).run(lambda: ONE_PASS_MS)

    # Then nothing connected and the row is exhausted with the policy's reason
    assert report == WorkerReport(passes=1, exhausted=1)
    assert checked == [row.url]
    assert receiver.requests == []
    assert repo.get("t1", row.id).last_error == "egress denied: destination not on the allowlist"


# ---- what the worker leaves alone ----------------------------------------------------------


def test_row_not_yet_due_is_untouched(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    row = add_row(repo, clock, receiver.url(), next_attempt_at=clock().timestamp() + 60)

    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1)
    assert receiver.requests == []
    assert repo.get("t1", row.id) == row


def test_row_claimed_by_another_worker_is_skipped(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given another worker holds a live lease on the row
    row = add_row(repo, clock, receiver.url())
    held = repo.claim(row, lease_seconds=120)
    assert held is not None

    # When this worker passes
    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    # Then it skips the row and leaves the lease alone
    assert report == WorkerReport(passes=1, skipped=1)
    assert receiver.requests == []
    assert repo.get("t1", row.id) == held


def test_disabled_worker_makes_no_passes(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    row = add_row(repo, clock, receiver.url())

    report = make_worker(aws_env, clock, webhook_dlq_enabled=False).run(lambda: 60_000)

    assert report == WorkerReport(passes=0)
    assert receiver.requests == []
    assert repo.get("t1", row.id) == row


def test_no_pass_when_the_invocation_is_almost_over(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    add_row(repo, clock, receiver.url())

    report = make_worker(aws_env, clock).run(lambda: 14_000)

    assert report == WorkerReport(passes=0)
    assert receiver.requests == []


# ---- crashes, races and time -------------------------------------------------------------


class WorkerDied(Exception):
    pass


@dataclass
class DiesAfterSending:
    """Delivers, then dies before the outcome is recorded (as a Lambda timeout would)."""

    inner: HttpDeliverer

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        timeout: float | None = None,
    ) -> DeliveryResult:
        self.inner.deliver(url, body, webhook_id, extra_headers, tenant_id=tenant_id, timeout=timeout)
        raise WorkerDied


def test_crash_mid_delivery_is_retried_after_the_lease_expires(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a worker that dies after the receiver got the webhook
    row = add_row(repo, clock, receiver.url())
    crashing = make_worker(
        aws_env,
        clock,
        deliverer=DiesAfterSending(HttpDeliverer([SECRET], timeout=5, policy=scheme_policy, clock=clock)),
    )
    with pytest.raises(WorkerDied):
        crashing.run(lambda: ONE_PASS_MS)
    left = repo.get("t1", row.id)
    assert (left.status, left.attempts) == ("pending", 0)
    assert left.lease_expires_at is not None

    # When a healthy worker passes while the dead one's lease is live, it stays away
    worker = make_worker(aws_env, clock)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, skipped=1)

    # Then after the lease expires the row is delivered again, with the same webhook-id
    clock.advance(worker.lease_seconds + 1)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [row.webhook_id] * 2
    assert repo.get("t1", row.id).status == "delivered"


@dataclass
class LeaseStolenDuringDelivery:
    """Delivers; meanwhile the lease expires and another worker claims the row."""

    inner: HttpDeliverer
    thief: WebhookDlqRepository
    victim_url: str

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        timeout: float | None = None,
    ) -> DeliveryResult:
        result = self.inner.deliver(
            url, body, webhook_id, extra_headers, tenant_id=tenant_id, timeout=timeout
        )
        if url == self.victim_url:
            [row] = [r for r in due_rows(self.thief) if r.url == url]
            assert self.thief.claim(row, lease_seconds=60) is not None
        return result


def test_lost_lease_fails_that_row_and_the_pass_goes_on(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given two due rows, and the first one's lease is taken over while it is being delivered
    first = add_row(repo, clock, receiver.url("/first"))
    clock.advance(1)
    second = add_row(repo, clock, receiver.url("/second"))
    # The other worker lives an hour later: for it, this worker's lease has expired.
    thief_clock = FakeClock(clock() + timedelta(hours=1))
    thief = WebhookDlqRepository(
        boto3.client("dynamodb"), aws_env["WORKFLOWS_WEBHOOK_DLQ_TABLE"], clock=thief_clock
    )
    deliverer = LeaseStolenDuringDelivery(
        HttpDeliverer([SECRET], timeout=5, policy=scheme_policy, clock=clock), thief, first.url
    )

    # When the worker passes
    report = make_worker(aws_env, clock, deliverer=deliverer).run(lambda: ONE_PASS_MS)

    # Then the first outcome is not recorded over the new holder's lease, and the second row is done
    assert report == WorkerReport(passes=1, delivered=1, failed=1)
    stolen = repo.get("t1", first.id)
    assert (stolen.status, stolen.attempts) == ("pending", 0)
    assert stolen.lease_expires_at == pytest.approx(thief_clock().timestamp() + 60)
    assert repo.get("t1", second.id).status == "delivered"


@dataclass
class Budget:
    """The Lambda's remaining time; sleeping spends it and moves the clock."""

    clock: FakeClock
    left_ms: float
    sleeps: list[float] = field(default_factory=list)

    def remaining_ms(self) -> int:
        return int(self.left_ms)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.left_ms -= seconds * 1000
        self.clock.advance(seconds)


def test_passes_repeat_every_interval_until_time_runs_short(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a row due now and one due in 20 s, and a 60 s invocation
    now_row = add_row(repo, clock, receiver.url("/now"))
    later_row = add_row(repo, clock, receiver.url("/later"), next_attempt_at=clock().timestamp() + 20)
    budget = Budget(clock, 60_000)
    worker = make_worker(aws_env, clock, sleep=budget.sleep, webhook_dlq_interval_sec=15)

    # When the worker runs
    report = worker.run(budget.remaining_ms)

    # Then it passed at 0 s, 15 s and 30 s, and stopped with 15 s (timeout 10 s + margin) left
    assert report == WorkerReport(passes=3, delivered=2)
    assert budget.sleeps == [15, 15]
    assert [r.path for r in receiver.requests] == ["/now", "/later"]
    assert repo.get("t1", now_row.id).status == repo.get("t1", later_row.id).status == "delivered"


def test_pass_stops_early_when_time_runs_short_and_leaves_rows_due(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given two due rows and an invocation that loses 3 s per check
    first = add_row(repo, clock, receiver.url("/first"))
    clock.advance(1)
    second = add_row(repo, clock, receiver.url("/second"))
    left = [23_000]

    def remaining_ms() -> int:
        left[0] -= 3_000
        return left[0]

    # When the worker runs
    report = make_worker(aws_env, clock).run(remaining_ms)

    # Then only the first row was tried; the second stays due for the next invocation
    assert report == WorkerReport(passes=1, delivered=1)
    assert repo.get("t1", first.id).status == "delivered"
    assert [r.id for r in due_rows(repo)] == [second.id]


def test_a_pass_takes_at_most_a_batch_oldest_first(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    rows = []
    for i in range(3):
        rows.append(add_row(repo, clock, receiver.url(f"/r{i}")))
        clock.advance(1)

    report = make_worker(aws_env, clock, webhook_dlq_batch=2).run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1, delivered=2)
    # Delivered concurrently: the receiver may see them in either order.
    assert sorted(r.path for r in receiver.requests) == ["/r0", "/r1"]
    assert [r.id for r in due_rows(repo)] == [rows[2].id]


# ---- tenants: one tenant's backlog does not hide another's ------------------------------------


@dataclass
class Accepting:
    """Sends nothing: every delivery succeeds, and the URLs are noted in order."""

    urls: list[str] = field(default_factory=list)

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        timeout: float | None = None,
    ) -> DeliveryResult:
        self.urls.append(url)
        return DeliveryResult("delivered", 200)


def test_one_pass_reads_another_tenants_row_behind_a_hundred_older_rows(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository
) -> None:
    # Given tenant a's hundred due rows, all older than tenant b's one
    for i in range(100):
        add_row(repo, clock, f"http://127.0.0.1:9/a{i}", tenant_id="a")
        clock.advance(1)
    late = add_row(repo, clock, "http://127.0.0.1:9/b", tenant_id="b")

    # When one pass runs (a batch of 25)
    report = make_worker(aws_env, clock, deliverer=Accepting()).run(lambda: ONE_PASS_MS)

    # Then b's row was read and delivered with 24 of a's
    assert report == WorkerReport(passes=1, delivered=25)
    assert repo.get("b", late.id).status == "delivered"
    assert len(due_rows(repo)) == 76


def test_a_row_added_between_the_emptiness_check_and_the_removal_keeps_its_tenant_listed(
    aws_env: dict[str, str], clock: FakeClock
) -> None:
    # Given a tenant whose only row was delivered long ago
    table = aws_env["WORKFLOWS_WEBHOOK_DLQ_TABLE"]
    client = boto3.client("dynamodb")
    repo = WebhookDlqRepository(client, table, clock=clock)
    claimed = repo.claim(add_row(repo, clock, "http://127.0.0.1:9/old"), 60)
    assert claimed is not None
    repo.mark_delivered(claimed)
    clock.advance(FORGET_MARGIN_SEC + 1)

    # And another function that adds a row of it right after the check found the partition empty
    other = WebhookDlqRepository(boto3.client("dynamodb"), table, clock=clock)
    added: list[DlqRow] = []

    def add_before_the_removal(params: dict[str, Any], **_: Any) -> None:
        if params.get("UpdateExpression", "").startswith("REMOVE") and not added:
            added.append(add_row(other, clock, "http://127.0.0.1:9/new"))

    client.meta.events.register("provide-client-params.dynamodb.UpdateItem", add_before_the_removal)

    # When the worker's store tries to unlist the tenant
    forgotten = repo.forget_if_empty("t1")

    # Then the removal was refused: the tenant stays listed and its new row is due
    assert len(added) == 1
    assert forgotten is False
    assert repo.pending_tenants() == ["t1"]
    assert [r.id for r in repo.due("t1", 10)] == [added[0].id]


def test_rows_in_the_shared_partition_of_earlier_versions_are_still_delivered(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a row as earlier versions stored it: in the one shared partition, its tenant unlisted
    table = aws_env["WORKFLOWS_WEBHOOK_DLQ_TABLE"]
    client = boto3.client("dynamodb")
    row = add_row(repo, clock, receiver.url())
    client.update_item(
        TableName=table,
        Key={"id": {"S": row.id}},
        UpdateExpression="SET due_shard = :legacy",
        ExpressionAttributeValues={":legacy": {"S": LEGACY_DUE_SHARD}},
    )
    client.delete_item(TableName=table, Key={"id": {"S": REGISTRY_ID}})

    # When the worker passes
    report = make_worker(aws_env, clock).run(lambda: ONE_PASS_MS)

    # Then the row was delivered
    assert report == WorkerReport(passes=1, delivered=1)
    assert repo.get("t1", row.id).status == "delivered"
    assert len(receiver.requests) == 1


# ---- the repository's own rules ------------------------------------------------------------


def test_claim_is_exclusive_between_workers(clock: FakeClock, repo: WebhookDlqRepository) -> None:
    row = add_row(repo, clock, "http://127.0.0.1:9/hook")

    first = repo.claim(row, lease_seconds=60)
    second = repo.claim(row, lease_seconds=60)

    assert first is not None
    assert first.lease_expires_at == pytest.approx(clock().timestamp() + 60)
    assert second is None


def test_claim_refuses_a_stale_read(clock: FakeClock, repo: WebhookDlqRepository) -> None:
    # Given a row read before another worker rescheduled it
    stale = add_row(repo, clock, "http://127.0.0.1:9/hook")
    claimed = repo.claim(stale, lease_seconds=60)
    assert claimed is not None
    repo.reschedule(claimed, clock().timestamp(), "HTTP 500")

    # When the stale copy is claimed, nothing is leased
    assert repo.claim(stale, lease_seconds=60) is None


def test_outcomes_need_the_lease(clock: FakeClock, repo: WebhookDlqRepository) -> None:
    row = add_row(repo, clock, "http://127.0.0.1:9/hook")

    with pytest.raises(ValueError, match="claim"):
        repo.mark_delivered(row)


def test_get_hides_another_tenants_row(clock: FakeClock, repo: WebhookDlqRepository) -> None:
    row = add_row(repo, clock, "http://127.0.0.1:9/hook", tenant_id="t1")

    with pytest.raises(NotFound):
        repo.get("t2", row.id)
    with pytest.raises(NotFound):
        repo.get("t1", "missing")


def test_adding_the_same_row_twice_conflicts(clock: FakeClock, repo: WebhookDlqRepository) -> None:
    row = add_row(repo, clock, "http://127.0.0.1:9/hook")

    with pytest.raises(Conflict):
        repo.add(row)


def test_rows_round_trip(clock: FakeClock, repo: WebhookDlqRepository) -> None:
    row = add_row(
        repo,
        clock,
        "http://127.0.0.1:9/hook",
        headers={"X-A": "1"},
        next_attempt_at=clock().timestamp() + 0.25,
    )

    assert repo.get("t1", row.id) == row


# ---- composition and the Lambda handler ----------------------------------------------------


def test_built_worker_signs_with_the_configured_secret(
    aws_env: dict[str, str], clock: FakeClock, receiver: Receiver
) -> None:
    settings = settings_from(
        aws_env,
        webhook_secret=SecretStr("raw-secret"),
        webhook_allowlist="127.0.0.1",
        webhook_allowed_ports="*",
    )
    repo, worker = _built(settings, clock)
    row = add_row(repo, clock, receiver.url())

    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)
    [request] = receiver.requests
    verify(["raw-secret"], request.headers, request.body, now=clock())
    assert repo.get("t1", row.id).status == "delivered"


def test_built_worker_without_a_secret_sends_unsigned(
    aws_env: dict[str, str], clock: FakeClock, receiver: Receiver
) -> None:
    settings = settings_from(aws_env, webhook_allowlist="127.0.0.1", webhook_allowed_ports="*")
    repo, worker = _built(settings, clock)
    row = add_row(repo, clock, receiver.url())

    worker.run(lambda: ONE_PASS_MS)

    [request] = receiver.requests
    assert request.headers["webhook-id"] == row.webhook_id
    assert "webhook-signature" not in request.headers


@dataclass
class FakeLambdaContext:
    remaining_ms: int
    function_name: str = "DlqRetryFunction"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:DlqRetryFunction"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "req-1"
    log_group_name: str = "/aws/lambda/DlqRetryFunction"
    log_stream_name: str = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_handler_runs_the_containers_worker_and_returns_its_report(
    aws_env: dict[str, str],
    clock: FakeClock,
    repo: WebhookDlqRepository,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the composition root's worker and a due row
    worker = make_worker(aws_env, clock)
    monkeypatch.setattr(lambda_handler, "parts", lambda: SimpleNamespace(dlq_worker=worker))
    add_row(repo, clock, receiver.url())

    # When the schedule invokes the function with 20 s left
    event = json.loads((EVENTS / "DlqRetryFunction/schedule.json").read_text())
    result = lambda_handler.handle(event, FakeLambdaContext(remaining_ms=ONE_PASS_MS))

    # Then it reports the pass
    assert result == {
        "passes": 1,
        "delivered": 1,
        "rescheduled": 0,
        "exhausted": 0,
        "skipped": 0,
        "failed": 0,
    }


# ---- must-show paths: retries until delivered, Retry-After, two workers ----------------------


def test_fails_twice_then_delivered_on_the_third_attempt_with_one_webhook_id(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a receiver that answers 500 twice, then accepts
    receiver.reply(Reply(500, body=b""), Reply(500, body=b""))
    row = add_row(repo, clock, receiver.url())
    worker = make_worker(aws_env, clock)

    # When the worker passes whenever the row is due again (15 s, then 30 s with jitter 0.5)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, rescheduled=1)
    clock.advance(15)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, rescheduled=1)
    clock.advance(29)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1)
    clock.advance(1)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)

    # Then the third attempt delivered it, every attempt with the same webhook-id and a valid signature
    assert [r.headers["webhook-id"] for r in receiver.requests] == [row.webhook_id] * 3
    assert_signed(receiver.requests[-1], row, clock())
    stored = repo.get("t1", row.id)
    assert (stored.status, stored.attempts) == ("delivered", 3)


def test_too_many_requests_waits_at_least_retry_after(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given a receiver that answers 429 with Retry-After: 120 (the backoff alone would be 15 s)
    receiver.reply(Reply(429, headers={"Retry-After": "120"}, body=b""))
    row = add_row(repo, clock, receiver.url())
    worker = make_worker(aws_env, clock)

    # When the worker tries
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, rescheduled=1)

    # Then the row is not tried again before Retry-After has passed
    stored = repo.get("t1", row.id)
    assert stored.next_attempt_at >= clock().timestamp() + 120
    assert stored.last_error == "HTTP 429"
    clock.advance(119)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1)
    assert len(receiver.requests) == 1
    clock.advance(1)
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)


@dataclass
class RunsOtherWorkerFirst:
    """On its first delivery, lets another worker make a whole pass before sending."""

    inner: HttpDeliverer
    other: DlqWorker | None = None
    other_reports: list[WorkerReport] = field(default_factory=list)

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        timeout: float | None = None,
    ) -> DeliveryResult:
        if self.other is not None:
            other, self.other = self.other, None
            self.other_reports.append(other.run(lambda: ONE_PASS_MS))
        return self.inner.deliver(url, body, webhook_id, extra_headers, tenant_id=tenant_id, timeout=timeout)


def test_two_workers_on_the_same_rows_deliver_each_row_once(
    aws_env: dict[str, str], clock: FakeClock, repo: WebhookDlqRepository, receiver: Receiver
) -> None:
    # Given three due rows and two workers on one table and one clock
    rows = []
    for i in range(3):
        rows.append(add_row(repo, clock, receiver.url(f"/r{i}")))
        clock.advance(1)
    second = make_worker(aws_env, clock)
    interleaving = RunsOtherWorkerFirst(
        HttpDeliverer([SECRET], timeout=5, policy=scheme_policy, clock=clock), other=second
    )
    # One delivery at a time: the first worker claims r1 and r2 only after r0 has been sent.
    first = make_worker(aws_env, clock, deliverer=interleaving, webhook_dlq_concurrency=1)

    # When the first worker has claimed r0 and, before sending it, the second makes a full pass
    report = first.run(lambda: ONE_PASS_MS)

    # Then the second skipped the leased r0 and delivered r1 and r2; the first delivered r0 and
    # skipped the rows the second had taken
    assert interleaving.other_reports == [WorkerReport(passes=1, delivered=2, skipped=1)]
    assert report == WorkerReport(passes=1, delivered=1, skipped=2)
    assert sorted(r.path for r in receiver.requests) == ["/r0", "/r1", "/r2"]
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(r.webhook_id for r in rows)
    assert {repo.get("t1", r.id).attempts for r in rows} == {1}
    assert {repo.get("t1", r.id).status for r in rows} == {"delivered"}


# ---- every attempt is told on its run ----------------------------------------------------------


@pytest.fixture
def runs(aws_env: dict[str, str], clock: FakeClock) -> RunRepository:
    settings = settings_from(aws_env)
    return RunRepository(
        boto3.client("dynamodb"), settings.runs_table, settings.run_events_table, clock=clock
    )


def new_run(runs: RunRepository, run_id: str = "run-1", tenant_id: str = "t1") -> Run:
    definition = WorkflowDefinition.model_validate(
        {"name": "d", "steps": [{"id": "a", "type": "log", "config": {"message": "x"}}]}
    )
    run = Run(
        run_id=run_id,
        tenant_id=tenant_id,
        owner_id="u",
        definition_version=1,
        definition_name="d",
        status=RunStatus.SUCCEEDED,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )
    runs.create(run, definition)
    return run


def delivery_events(
    runs: RunRepository, run_id: str = "run-1", tenant_id: str = "t1"
) -> list[dict[str, Any]]:
    page = runs.list_events(tenant_id, run_id, types=["webhook_delivery"])
    return [event.payload for event in page.events]


def test_every_attempt_appends_a_delivery_event_to_the_run(
    aws_env: dict[str, str],
    clock: FakeClock,
    repo: WebhookDlqRepository,
    runs: RunRepository,
    receiver: Receiver,
) -> None:
    # Given a row of an existing run, to a URL with a secret in its query string
    new_run(runs)
    receiver.reply(Reply(503, body=b"busy"))
    row = add_row(repo, clock, receiver.url("/hook?token=s3cr3t"), headers={"Authorization": "Bearer abc"})
    worker = make_worker(aws_env, clock, runs=runs)

    # When one attempt fails and the next one delivers
    worker.run(lambda: ONE_PASS_MS)
    clock.advance(15)
    worker.run(lambda: ONE_PASS_MS)

    # Then the run has one event per attempt, naming the host only
    base = {"source": "dlq_retry", "webhook_id": row.webhook_id, "dlq_id": row.id, "host": "127.0.0.1"}
    assert delivery_events(runs) == [
        {
            **base,
            "attempt": 1,
            "outcome": "transient",
            "status": "pending",
            "status_code": 503,
            "error": "HTTP 503: busy",
        },
        {
            **base,
            "attempt": 2,
            "outcome": "delivered",
            "status": "delivered",
            "status_code": 200,
            "error": None,
        },
    ]
    text = json.dumps(delivery_events(runs))
    for leaked in ("s3cr3t", "Bearer", "/hook"):
        assert leaked not in text


def test_permanent_failure_event_says_exhausted(
    aws_env: dict[str, str],
    clock: FakeClock,
    repo: WebhookDlqRepository,
    runs: RunRepository,
    receiver: Receiver,
) -> None:
    new_run(runs)
    receiver.reply(Reply(410, body=b""))
    add_row(repo, clock, receiver.url())

    make_worker(aws_env, clock, runs=runs).run(lambda: ONE_PASS_MS)

    [event] = delivery_events(runs)
    assert (event["outcome"], event["status"], event["status_code"]) == ("permanent", "exhausted", 410)


def test_event_error_text_is_truncated(
    aws_env: dict[str, str],
    clock: FakeClock,
    repo: WebhookDlqRepository,
    runs: RunRepository,
    receiver: Receiver,
) -> None:
    new_run(runs)
    receiver.reply(Reply(500, body=b"x" * 5000))
    add_row(repo, clock, receiver.url())

    make_worker(aws_env, clock, runs=runs).run(lambda: ONE_PASS_MS)

    [event] = delivery_events(runs)
    assert event["error"].startswith("HTTP 500: xxx")
    assert len(event["error"]) <= 200


def test_a_row_whose_run_is_gone_is_still_delivered_and_the_pass_goes_on(
    aws_env: dict[str, str],
    clock: FakeClock,
    repo: WebhookDlqRepository,
    runs: RunRepository,
    receiver: Receiver,
) -> None:
    # Given a row whose run no longer exists, then a row of an existing run
    orphan = add_row(repo, clock, receiver.url("/orphan"), run_id="run-gone")
    clock.advance(1)
    new_run(runs)
    kept = add_row(repo, clock, receiver.url("/kept"))

    # When the worker passes
    report = make_worker(aws_env, clock, runs=runs).run(lambda: ONE_PASS_MS)

    # Then both are delivered and only the existing run got an event
    assert report == WorkerReport(passes=1, delivered=2)
    assert repo.get("t1", orphan.id).status == repo.get("t1", kept.id).status == "delivered"
    assert [e["dlq_id"] for e in delivery_events(runs)] == [kept.id]


def test_built_worker_records_attempts_on_runs(
    aws_env: dict[str, str], clock: FakeClock, runs: RunRepository, receiver: Receiver
) -> None:
    settings = settings_from(aws_env, webhook_allowlist="127.0.0.1", webhook_allowed_ports="*")
    new_run(runs)
    repo, worker = _built(settings, clock)
    add_row(repo, clock, receiver.url())

    worker.run(lambda: ONE_PASS_MS)

    assert [e["outcome"] for e in delivery_events(runs)] == ["delivered"]


# ---- signing secrets: rotation and Secrets Manager ------------------------------------------

OLD_SECRET = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA=="
NEW_SECRET = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw=="


@pytest.mark.parametrize("receiver_secret", [OLD_SECRET, NEW_SECRET], ids=["old-only", "new-only"])
def test_rotation_verifies_with_either_the_old_or_the_new_secret(
    aws_env: dict[str, str], clock: FakeClock, receiver: Receiver, receiver_secret: str
) -> None:
    # Given both secrets configured during a rotation, newest first
    settings = settings_from(
        aws_env,
        webhook_secret=SecretStr(f"{NEW_SECRET}, {OLD_SECRET}"),
        webhook_allowlist="127.0.0.1",
        webhook_allowed_ports="*",
    )
    repo, worker = _built(settings, clock)
    add_row(repo, clock, receiver.url())

    # When a row is delivered
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)

    # Then a receiver that knows only one of the secrets verifies it
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split()) == 2
    verify([receiver_secret], request.headers, request.body, now=clock())


def test_receiver_with_another_secret_does_not_verify_a_rotated_delivery(
    aws_env: dict[str, str], clock: FakeClock, receiver: Receiver
) -> None:
    settings = settings_from(
        aws_env,
        webhook_secret=SecretStr(f"{NEW_SECRET},{OLD_SECRET}"),
        webhook_allowlist="127.0.0.1",
        webhook_allowed_ports="*",
    )
    repo, worker = _built(settings, clock)
    add_row(repo, clock, receiver.url())

    worker.run(lambda: ONE_PASS_MS)

    [request] = receiver.requests
    with pytest.raises(WebhookVerificationError):
        verify([SECRET], request.headers, request.body, now=clock())


@pytest.fixture
def fresh_secret_cache() -> Iterator[None]:
    parameters.clear_caches()
    DEFAULT_PROVIDERS.clear()  # its client must be created inside this test's mock_aws
    yield
    parameters.clear_caches()
    DEFAULT_PROVIDERS.clear()


def test_secrets_are_read_from_secrets_manager_on_first_delivery(
    aws_env: dict[str, str], clock: FakeClock, receiver: Receiver, fresh_secret_cache: None
) -> None:
    # Given the deployed shape: only the secret's ARN in the settings
    secretsmanager = boto3.client("secretsmanager")
    arn = secretsmanager.create_secret(Name="webhook-signing", SecretString=f"{NEW_SECRET},{OLD_SECRET}")[
        "ARN"
    ]
    settings = settings_from(
        aws_env, webhook_secret_arn=arn, webhook_allowlist="127.0.0.1", webhook_allowed_ports="*"
    )
    repo, worker = _built(settings, clock)
    add_row(repo, clock, receiver.url())

    # When the worker delivers
    assert worker.run(lambda: ONE_PASS_MS) == WorkerReport(passes=1, delivered=1)

    # Then the delivery is signed with both secrets from Secrets Manager
    [request] = receiver.requests
    verify([OLD_SECRET], request.headers, request.body, now=clock())
    verify([NEW_SECRET], request.headers, request.body, now=clock())


def test_building_the_worker_reads_no_secret(
    aws_env: dict[str, str], clock: FakeClock, fresh_secret_cache: None
) -> None:
    # An ARN that does not exist: building must not touch Secrets Manager at all.
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf"
    settings = settings_from(aws_env, webhook_secret_arn=arn)

    _built(settings, clock)

    assert DEFAULT_PROVIDERS == {}


def test_unreadable_secret_reschedules_without_sending_unsigned(
    aws_env: dict[str, str], clock: FakeClock, receiver: Receiver, fresh_secret_cache: None
) -> None:
    # Given an ARN naming no secret
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf"
    settings = settings_from(
        aws_env, webhook_secret_arn=arn, webhook_allowlist="127.0.0.1", webhook_allowed_ports="*"
    )
    repo, worker = _built(settings, clock)
    row = add_row(repo, clock, receiver.url())

    # When the worker passes
    report = worker.run(lambda: ONE_PASS_MS)

    # Then nothing was sent and the row waits for a later attempt
    assert report == WorkerReport(passes=1, rescheduled=1)
    assert receiver.requests == []
    assert (repo.get("t1", row.id).last_error or "").startswith("signing secret unavailable")
