"""The DLQ worker's pool: one tenant's rows cost that tenant time, never another's, on in-memory
fakes.

Every tenant with due rows is read in each pass whatever one tenant's backlog, tenants beyond a
batch are taken in turn across passes, one tenant's rows in flight are bounded, the due rows are
taken one tenant at a time, no row is claimed when the invocation's time runs short or the pass's
interval is over, and a replay's deadline is capped. The slow and hanging endpoint tests use real
sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import FakeClock
from tests.fakes import FakeDlqStore, due_rows
from tests.receivers import Receiver, trickler
from workflows.adapters.dlq import FORGET_MARGIN_SEC
from workflows.adapters.http.delivery import HttpDeliverer, scheme_policy
from workflows.domain.delivery import DeliveryResult
from workflows.domain.dlq import DlqRow
from workflows.errors import Throttled
from workflows.services.webhooks.worker import REPLAY_TIMEOUT_CAP_SEC, DlqWorker, WorkerReport, round_robin
from workflows.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# One pass and no sleep (see test_dlq_worker.py): the 15 s interval leaves less than the margin.
ONE_PASS_MS = 20_000


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def make_worker(clock: FakeClock, deliverer: Any, **settings: Any) -> tuple[FakeDlqStore, DlqWorker]:
    store = FakeDlqStore(clock=clock)
    worker = DlqWorker(store, deliverer, Settings(**settings), clock=clock, sleep=_no_sleep, rand=lambda: 0.5)
    return store, worker


def add_row(store: FakeDlqStore, clock: FakeClock, url: str, tenant_id: str, **fields: Any) -> DlqRow:
    row = DlqRow.new(
        tenant_id=tenant_id,
        run_id="run-1",
        url=url,
        body_json=json.dumps({"event": "x"}),
        now=clock(),
        **fields,
    )
    store.add(row)
    clock.advance(1)  # distinct next_attempt_at: the due order is well defined
    return row


@dataclass
class Recording:
    """Delivers nothing; records each call and answers 200."""

    calls: list[tuple[str, float | None]] = field(default_factory=list)
    before: Callable[[str], None] | None = None

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        method: str = "POST",
        timeout: float | None = None,
    ) -> DeliveryResult:
        self.calls.append((url, timeout))
        if self.before is not None:
            self.before(url)
        return DeliveryResult("delivered", 200)


# ---- round robin -----------------------------------------------------------------------------


def test_round_robin_takes_one_row_per_tenant_in_turn(clock: FakeClock) -> None:
    rows = [
        DlqRow.new(tenant_id=t, run_id="r", url=f"http://127.0.0.1:9/{t}{i}", body_json="{}", now=clock())
        for t, i in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("a", 4), ("b", 2)]
    ]

    ordered = round_robin(rows)

    assert [row.url.rsplit("/", 1)[1] for row in ordered] == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    assert round_robin([]) == []


def test_a_pass_delivers_the_due_rows_one_tenant_at_a_time(clock: FakeClock) -> None:
    # Given tenant a's three rows due before tenant b's and c's
    recording = Recording()
    store, worker = make_worker(clock, recording, webhook_dlq_concurrency=1)
    for path, tenant in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c")]:
        add_row(store, clock, f"http://127.0.0.1:9/{path}", tenant)

    # When one pass delivers them one at a time
    report = worker.run(lambda: ONE_PASS_MS)

    # Then b and c did not wait behind all of a's rows
    assert report == WorkerReport(passes=1, delivered=5)
    assert [url.rsplit("/", 1)[1] for url, _ in recording.calls] == ["a1", "b1", "c1", "a2", "a3"]


def test_one_pass_delivers_another_tenants_row_behind_a_hundred_older_rows(clock: FakeClock) -> None:
    # Given tenant a's hundred due rows, all older than tenant b's one
    recording = Recording()
    store, worker = make_worker(clock, recording)
    for i in range(100):
        add_row(store, clock, f"http://127.0.0.1:9/a{i}", "a")
    late = add_row(store, clock, "http://127.0.0.1:9/b", "b")

    # When one pass runs (a batch of 25)
    report = worker.run(lambda: ONE_PASS_MS)

    # Then b's row is among the batch, and a's rows filled the rest, oldest first
    assert report == WorkerReport(passes=1, delivered=25)
    assert store.get("b", late.id).status == "delivered"
    assert sorted(url.rsplit("/", 1)[1] for url, _ in recording.calls if "/a" in url) == sorted(
        f"a{i}" for i in range(24)
    )


def test_a_pass_goes_on_from_the_tenant_after_the_last_one_read(clock: FakeClock) -> None:
    # Given three tenants with two due rows each and a batch of two, delivered one at a time
    recording = Recording()
    store, worker = make_worker(clock, recording, webhook_dlq_batch=2, webhook_dlq_concurrency=1)
    for tenant in ("a", "b", "c"):
        for i in (1, 2):
            add_row(store, clock, f"http://127.0.0.1:9/{tenant}{i}", tenant)

    # When two passes run
    worker.run(lambda: ONE_PASS_MS)
    worker.run(lambda: ONE_PASS_MS)

    # Then the second pass began with c, which the first had no room for
    assert [url.rsplit("/", 1)[1] for url, _ in recording.calls] == ["a1", "b1", "c1", "a2"]


def test_a_pass_unlists_a_tenant_left_without_pending_rows(clock: FakeClock) -> None:
    # Given a tenant whose only row was delivered by an earlier pass
    store, worker = make_worker(clock, Recording())
    add_row(store, clock, "http://127.0.0.1:9/a", "a")
    worker.run(lambda: ONE_PASS_MS)
    assert store.pending_tenants() == ["a"]

    # When a pass runs once no row can be on its way any more
    clock.advance(FORGET_MARGIN_SEC + 1)
    worker.run(lambda: ONE_PASS_MS)

    # Then the tenant is no longer listed
    assert store.pending_tenants() == []


class ThrottledTenant(FakeDlqStore):
    """Refuses to read one tenant's due rows, as a throttled query would."""

    def __init__(self, refused: str, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.refused = refused

    def due(self, tenant_id: str, limit: int) -> list[DlqRow]:
        if tenant_id == self.refused:
            raise Throttled("rate exceeded")
        return super().due(tenant_id, limit)


def test_a_failed_read_of_one_tenant_does_not_stop_the_others(clock: FakeClock) -> None:
    recording = Recording()
    store = ThrottledTenant("a", clock=clock)
    worker = DlqWorker(store, recording, Settings(), clock=clock, sleep=_no_sleep, rand=lambda: 0.5)
    add_row(store, clock, "http://127.0.0.1:9/a", "a")
    late = add_row(store, clock, "http://127.0.0.1:9/b", "b")

    report = worker.run(lambda: ONE_PASS_MS)

    assert report == WorkerReport(passes=1, delivered=1, failed=1)
    assert store.get("b", late.id).status == "delivered"


# ---- concurrency ------------------------------------------------------------------------------


def test_the_pool_delivers_up_to_its_size_at_once(clock: FakeClock) -> None:
    # Given deliveries that each wait for a second one to be in flight (no sleeping: a barrier)
    barrier = threading.Barrier(2, timeout=10)
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def overlap(url: str) -> None:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        try:
            barrier.wait()  # one at a time would break the barrier after 10 s
        finally:
            with lock:
                in_flight[0] -= 1

    recording = Recording(before=overlap)
    store, worker = make_worker(clock, recording, webhook_dlq_concurrency=2)
    for i in range(4):
        add_row(store, clock, f"http://127.0.0.1:9/r{i}", f"t{i}")

    # When a pass runs
    report = worker.run(lambda: ONE_PASS_MS)

    # Then two deliveries were in flight together, never more
    assert report == WorkerReport(passes=1, delivered=4)
    assert in_flight[1] == 2


@pytest.fixture
def trickling() -> Iterator[Receiver]:
    r = Receiver(default=trickler(0.5))
    yield r
    r.close()


@dataclass
class Timed:
    """Wraps a deliverer and notes when each URL's delivery started and ended."""

    inner: HttpDeliverer
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        method: str = "POST",
        timeout: float | None = None,
    ) -> DeliveryResult:
        self.started[url] = time.monotonic()
        try:
            return self.inner.deliver(
                url, body, webhook_id, extra_headers, tenant_id=tenant_id, timeout=timeout
            )
        finally:
            self.ended[url] = time.monotonic()


def test_a_slow_tenant_does_not_hold_back_another_tenants_row(
    clock: FakeClock, receiver: Receiver, trickling: Receiver
) -> None:
    # Given tenant a's row, due first, at an endpoint that trickles its answer, and tenant b's
    # row at a healthy one; deliveries have a 1 s deadline
    timed = Timed(HttpDeliverer([SECRET], timeout=1, policy=scheme_policy, clock=clock))
    store, worker = make_worker(clock, timed, webhook_dlq_timeout_sec=1)
    slow = add_row(store, clock, trickling.url(), "a")
    healthy = add_row(store, clock, receiver.url(), "b")

    # When one pass runs
    started = time.monotonic()
    report = worker.run(lambda: ONE_PASS_MS)
    elapsed = time.monotonic() - started

    # Then b's row was delivered while a's was still in flight, and a's timed out at its deadline
    assert report == WorkerReport(passes=1, delivered=1, rescheduled=1)
    assert elapsed < 8, f"took {elapsed:.1f} s for a 1 s deadline"
    assert timed.started[healthy.url] < timed.ended[slow.url]
    assert store.get("b", healthy.id).status == "delivered"
    left = store.get("a", slow.id)
    assert (left.status, left.attempts, left.last_error) == ("pending", 1, "timeout: ReadTimeout")
    assert left.lease_expires_at is None
    assert len(receiver.requests) == len(trickling.requests) == 1


def test_at_most_the_tenant_bound_of_one_tenants_rows_are_in_flight(clock: FakeClock) -> None:
    # Given tenant a's six rows, whose deliveries each wait for a second one of a's to be in
    # flight (a barrier, no sleeping), tenant b's row, four slots and a bound of two per tenant
    barrier = threading.Barrier(2, timeout=10)
    lock = threading.Lock()
    in_flight: Counter[str] = Counter()
    most: Counter[str] = Counter()

    def count(url: str) -> None:
        tenant = url.rsplit("/", 1)[1][0]
        with lock:
            in_flight[tenant] += 1
            most[tenant] = max(most[tenant], in_flight[tenant])
        try:
            if tenant == "a":
                barrier.wait()
        finally:
            with lock:
                in_flight[tenant] -= 1

    recording = Recording(before=count)
    store, worker = make_worker(clock, recording, webhook_dlq_concurrency=4, webhook_dlq_tenant_concurrency=2)
    for i in range(6):
        add_row(store, clock, f"http://127.0.0.1:9/a{i}", "a")
    add_row(store, clock, "http://127.0.0.1:9/b0", "b")

    # When a pass runs
    report = worker.run(lambda: ONE_PASS_MS)

    # Then every row was delivered, never more than two of a's at once
    assert report == WorkerReport(passes=1, delivered=7)
    assert most["a"] == 2


@pytest.fixture
def hanging() -> Iterator[str]:
    """A URL on 127.0.0.1 that accepts connections and never answers: nothing accepts them
    from the listening socket's backlog, so every request waits for the client's deadline."""
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    server.close()


class OutcomeLog(FakeDlqStore):
    """Notes each recorded outcome, in the order the worker recorded them."""

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.outcomes: list[tuple[str, str]] = []

    def mark_delivered(self, row: DlqRow) -> DlqRow:
        stored = super().mark_delivered(row)
        self.outcomes.append((row.tenant_id, "delivered"))
        return stored

    def reschedule(self, row: DlqRow, next_attempt_at: float, error: str) -> DlqRow:
        stored = super().reschedule(row, next_attempt_at, error)
        self.outcomes.append((row.tenant_id, "rescheduled"))
        return stored


def test_a_hanging_receiver_holds_only_its_tenants_slots(
    clock: FakeClock, receiver: Receiver, hanging: str
) -> None:
    # Given tenant a's four older rows at a receiver that never answers, tenant b's four at a
    # healthy one, four slots, two per tenant, and a 0.5 s deadline
    store = OutcomeLog(clock=clock)
    deliverer = HttpDeliverer([SECRET], timeout=0.5, policy=scheme_policy, clock=clock)
    settings = Settings(
        webhook_dlq_timeout_sec=0.5, webhook_dlq_concurrency=4, webhook_dlq_tenant_concurrency=2
    )
    worker = DlqWorker(store, deliverer, settings, clock=clock, sleep=_no_sleep, rand=lambda: 0.5)
    for _ in range(4):
        add_row(store, clock, hanging, "a")
    for i in range(4):
        add_row(store, clock, receiver.url(f"/b{i}"), "b")

    # When one pass runs
    report = worker.run(lambda: ONE_PASS_MS)

    # Then all of b's rows were delivered before any of a's attempts ended
    assert report == WorkerReport(passes=1, delivered=4, rescheduled=4)
    assert store.outcomes == [("b", "delivered")] * 4 + [("a", "rescheduled")] * 4
    assert len(receiver.requests) == 4


# ---- time and deadlines -----------------------------------------------------------------------


def test_a_pass_stops_claiming_when_the_time_left_is_short(clock: FakeClock) -> None:
    # Given three due rows, and an invocation whose remaining time falls to the margin (the
    # 10 s delivery deadline plus the 5 s safety margin) at the third row
    recording = Recording()
    store, worker = make_worker(clock, recording, webhook_dlq_timeout_sec=10)
    rows = [add_row(store, clock, f"http://127.0.0.1:9/r{i}", f"t{i}") for i in range(3)]
    left = [30_000, 20_000, 16_000, 15_000, 14_000]

    def remaining_ms() -> int:
        return left.pop(0) if left else 0

    # When the worker runs
    report = worker.run(remaining_ms)

    # Then two rows were delivered; the third was never claimed and stays due
    assert report == WorkerReport(passes=1, delivered=2)
    assert [url for url, _ in recording.calls] == [rows[0].url, rows[1].url]
    untouched = store.get("t2", rows[2].id)
    assert (untouched.status, untouched.attempts, untouched.lease_expires_at) == ("pending", 0, None)
    assert [row.id for row in due_rows(store)] == [rows[2].id]


def test_a_pass_claims_no_row_once_its_interval_has_passed(clock: FakeClock) -> None:
    # Given two tenants' rows, delivered one at a time, the first taking the whole 15 s interval
    def slow_a(url: str) -> None:
        if url.endswith("/a"):
            clock.advance(15)

    store, worker = make_worker(clock, Recording(before=slow_a), webhook_dlq_concurrency=1)
    add_row(store, clock, "http://127.0.0.1:9/a", "a")
    waiting = add_row(store, clock, "http://127.0.0.1:9/b", "b")
    left = [30_000, 30_000, 30_000, 14_000]

    # When the worker runs
    report = worker.run(lambda: left.pop(0))

    # Then b's row was left, unclaimed and unwritten, for the next pass to read afresh
    assert report == WorkerReport(passes=1, delivered=1)
    assert store.get("b", waiting.id) == waiting


def test_each_row_gets_the_worker_timeout_and_a_replay_at_most_the_cap(clock: FakeClock) -> None:
    recording = Recording()
    store, worker = make_worker(clock, recording, webhook_dlq_timeout_sec=30)
    retried = add_row(store, clock, "http://127.0.0.1:9/retried", "t1")
    later = clock().timestamp() + 3600
    replayed = add_row(store, clock, "http://127.0.0.1:9/replayed", "t1", next_attempt_at=later)

    # One pass (the due row), then an operator's replay of the row not yet due
    worker.run(lambda: 60_000 if not recording.calls else 0)
    attempt = worker.replay("t1", replayed.id)

    assert recording.calls == [(retried.url, 30), (replayed.url, REPLAY_TIMEOUT_CAP_SEC)]
    assert attempt.kind == "delivered"
