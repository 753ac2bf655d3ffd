"""Fair shares of the dispatcher (domain.shares, engine.shares): one tenant's flood and slow
calls cost that tenant time, never another's. On the in-memory fakes; the dispatcher's batch
concurrency on its real handler."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import LOCAL_WEBHOOKS, FakeClock, drain, log_definition, make_fake
from tests.fakes import FakeQueue, FakeShareStore
from tests.receivers import Receiver
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import Run, RunStatus
from workflows.domain.shares import ALL_TENANTS
from workflows.observability import logger
from workflows.roots import dispatcher as dispatcher_root
from workflows.roots.parts import Parts

A, B = "acme", "globex"
NO_CALL_BOUNDS = {"tenant_calls_in_flight": 0, "calls_in_flight": 0}


def _submit(parts: Parts, tenant: str, definition: dict[str, Any]) -> Run:
    caller = Principal(tenant, "alice", ALL_PERMISSIONS)
    return parts.run_service.submit(caller, WorkflowDefinition.model_validate(definition), {})


def _status(parts: Parts, run: Run) -> RunStatus:
    return parts.runs.get(run.tenant_id, run.run_id).status


def _webhook(url: str) -> dict[str, Any]:
    return {
        "name": "call",
        "steps": [
            {"id": "call", "type": "webhook", "config": {"url": url}, "retry": {"max_attempts": 1}},
        ],
    }


def _shares(parts: Parts) -> FakeShareStore:
    store = parts.share_store
    assert isinstance(store, FakeShareStore)
    return store


# ---- step rate -----------------------------------------------------------------------------


def test_a_tenant_over_its_step_rate_waits_while_another_runs_at_once(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_steps_per_sec=1, tenant_steps_burst=1, **NO_CALL_BOUNDS)
    flood = [_submit(parts, A, log_definition("a")) for _ in range(8)]
    quiet = _submit(parts, B, log_definition("b"))

    actions = drain(parts).actions

    assert _status(parts, quiet) == RunStatus.SUCCEEDED
    waiting = [run for run in flood if _status(parts, run) == RunStatus.QUEUED]
    assert waiting, "the flood ran past its rate"
    assert actions.count("deferred") == len(waiting)


def test_a_deferred_kick_runs_when_its_moment_comes_and_is_charged_once(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_steps_per_sec=2, tenant_steps_burst=1, **NO_CALL_BOUNDS)
    flood = [_submit(parts, A, log_definition("a")) for _ in range(6)]
    drain(parts)
    started = clock().timestamp()

    for _ in range(10):
        clock.advance(1)
        drain(parts)

    assert [_status(parts, run) for run in flood] == [RunStatus.SUCCEEDED] * 6
    # Six one-step runs at half a second each, however often they were sent again.
    assert _shares(parts).clocks[A] == pytest.approx(started + 3.0)


def test_inline_steps_are_charged_to_their_tenant(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_steps_per_sec=10, tenant_steps_burst=100, **NO_CALL_BOUNDS)
    run = _submit(parts, A, log_definition("a", "b", "c", "d", "e"))
    drain(parts)

    assert _status(parts, run) == RunStatus.SUCCEEDED
    assert _shares(parts).clocks[A] == pytest.approx(clock().timestamp() + 0.5)


def test_a_kick_reserves_every_step_it_may_run(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_steps_per_sec=1, tenant_steps_burst=1, **NO_CALL_BOUNDS)
    five = _submit(parts, A, log_definition("a", "b", "c", "d", "e"))
    one = _submit(parts, A, log_definition("f"))

    drain(parts)

    assert _status(parts, five) == RunStatus.SUCCEEDED
    assert _status(parts, one) == RunStatus.QUEUED
    queue = parts.queue
    assert isinstance(queue, FakeQueue)
    [pending] = queue.messages
    # Its turn comes after the five steps the first kick reserved, not after one.
    assert pending.message.not_before == pytest.approx(clock().timestamp() + 5)


def test_steps_a_kick_reserved_but_did_not_run_are_given_back(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_steps_per_sec=10, tenant_steps_burst=100, **NO_CALL_BOUNDS)
    definition = {
        "name": "wait",
        "steps": [
            {"id": "a", "type": "log", "config": {"message": "a"}},
            {"id": "wait", "type": "delay", "config": {"seconds": 60}},
            {"id": "b", "type": "log", "config": {"message": "b"}},
        ],
    }
    run = _submit(parts, A, definition)

    drain(parts)

    # Three steps reserved; the kick stopped at the delay after two.
    assert _status(parts, run) == RunStatus.RUNNING
    assert _shares(parts).clocks[A] == pytest.approx(clock().timestamp() + 0.2)


def test_a_long_deferral_writes_the_run_so_the_sweeper_leaves_it(clock: FakeClock) -> None:
    parts = make_fake(
        clock,
        tenant_steps_per_sec=0.001,
        tenant_steps_burst=1,
        sweep_grace_sec=1000,
        dispatch_visibility_timeout_sec=30,
        **NO_CALL_BOUNDS,
    )
    first, second = _submit(parts, A, log_definition("a")), _submit(parts, A, log_definition("b"))
    version = parts.runs.get(A, second.run_id).version
    drain(parts)

    assert _status(parts, first) == RunStatus.SUCCEEDED
    touched = parts.runs.get(A, second.run_id)
    assert touched.status == RunStatus.QUEUED
    assert touched.version == version + 1
    queue = parts.queue
    assert isinstance(queue, FakeQueue)
    [pending] = queue.messages
    assert pending.message.version == touched.version
    # Sent in a hop no longer than half the grace, its moment kept.
    assert (pending.visible_at - clock()).total_seconds() <= 500
    assert pending.message.not_before == pytest.approx(clock().timestamp() + 1000)


# ---- calls in flight -------------------------------------------------------------------------


def test_a_call_over_its_tenants_bound_waits_while_another_tenant_calls(
    clock: FakeClock, receiver: Receiver
) -> None:
    parts = make_fake(clock, tenant_calls_in_flight=1, calls_in_flight=0, **LOCAL_WEBHOOKS)
    # A's one permit is held by a call in flight elsewhere.
    assert _shares(parts).acquire(A, "elsewhere", 1, clock().timestamp() + 600, clock().timestamp())
    mine = _submit(parts, A, _webhook(receiver.url("/a")))
    theirs = _submit(parts, B, _webhook(receiver.url("/b")))

    actions = drain(parts).actions

    assert "call_deferred" in actions
    assert _status(parts, theirs) == RunStatus.SUCCEEDED
    assert _status(parts, mine) == RunStatus.QUEUED
    assert [r.path for r in receiver.requests] == ["/b"]

    # The call elsewhere ends: A's turn comes at its next check.
    _shares(parts).release(A, "elsewhere")
    clock.advance(parts.settings.call_recheck_sec)
    drain(parts)
    assert _status(parts, mine) == RunStatus.SUCCEEDED
    assert [r.path for r in receiver.requests] == ["/b", "/a"]


def test_calls_of_all_tenants_together_are_bounded(clock: FakeClock, receiver: Receiver) -> None:
    parts = make_fake(clock, tenant_calls_in_flight=5, calls_in_flight=1, **LOCAL_WEBHOOKS)
    now = clock().timestamp()
    assert _shares(parts).acquire(ALL_TENANTS, "elsewhere", 1, now + 600, now)
    run = _submit(parts, B, _webhook(receiver.url("/b")))

    drain(parts)

    assert _status(parts, run) == RunStatus.QUEUED
    assert receiver.requests == []
    # Refused by everyone's pool, it gave its tenant's permit back.
    assert _shares(parts).permits.get(B, {}) == {}


def test_a_permit_is_given_back_when_the_call_fails(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_calls_in_flight=1, calls_in_flight=1, **LOCAL_WEBHOOKS)
    # Nobody listens on this port: the call fails at once.
    run = _submit(parts, A, _webhook("http://127.0.0.1:9/nobody"))

    drain(parts)

    assert _status(parts, run) == RunStatus.FAILED
    assert _shares(parts).permits[A] == {}
    assert _shares(parts).permits[ALL_TENANTS] == {}


def test_local_steps_need_no_permit(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_calls_in_flight=1, calls_in_flight=1)
    now = clock().timestamp()
    _shares(parts).acquire(A, "elsewhere", 1, now + 600, now)
    run = _submit(parts, A, log_definition("a"))

    drain(parts)

    assert _status(parts, run) == RunStatus.SUCCEEDED


# ---- the batch's records side by side ----------------------------------------------------------


class _HeldReceiver:
    """Answers each POST only once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                held.arrived.set()
                held.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def held() -> Iterator[_HeldReceiver]:
    receiver = _HeldReceiver()
    yield receiver
    receiver.close()


def _record(message: Any, n: int) -> dict[str, Any]:
    return {
        "messageId": f"m{n}",
        "receiptHandle": f"r{n}",
        "body": message.to_body(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dispatch",
        "awsRegion": "us-east-1",
    }


class _Context:
    function_name = "DispatcherFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dispatcher"
    aws_request_id = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


def test_a_slow_record_does_not_hold_the_others_of_its_batch(
    clock: FakeClock, held: _HeldReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = make_fake(clock, **LOCAL_WEBHOOKS)
    monkeypatch.setattr(dispatcher_root, "parts", lambda: parts)
    slow = _submit(parts, A, _webhook(held.url("/slow")))
    quick = _submit(parts, B, log_definition("b"))
    queue = parts.queue
    assert isinstance(queue, FakeQueue)
    kicks = queue.receive()
    # The slow run's record comes first in the batch.
    kicks.sort(key=lambda kick: kick.run_id != slow.run_id)
    seen_quick_done = threading.Event()

    def watch() -> None:
        # Let the slow call go once the quick run has ended, or give up after a while; a
        # batch worked one record after another never lets the quick run end first.
        held.arrived.wait(30)
        for _ in range(300):
            if _status(parts, quick) == RunStatus.SUCCEEDED:
                seen_quick_done.set()
                break
            time.sleep(0.02)
        held.release.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    response = dispatcher_root.handle({"Records": [_record(k, i) for i, k in enumerate(kicks)]}, _Context())
    watcher.join()

    assert response == {"batchItemFailures": []}
    assert seen_quick_done.is_set()
    assert _status(parts, slow) == RunStatus.SUCCEEDED


def test_each_records_log_keys_stay_on_its_own_lines(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = make_fake(clock)
    monkeypatch.setattr(dispatcher_root, "parts", lambda: parts)
    runs = [_submit(parts, tenant, log_definition("x")) for tenant in (A, B, A, B)]
    queue = parts.queue
    assert isinstance(queue, FakeQueue)
    kicks = queue.receive()
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logger.registered_formatter)
    level = logger.log_level
    logger.addHandler(handler)
    logger.setLevel("INFO")
    try:
        dispatcher_root.handle({"Records": [_record(k, i) for i, k in enumerate(kicks)]}, _Context())
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)

    lines = [json.loads(line) for line in written.getvalue().splitlines() if line.startswith("{")]
    processed = [line for line in lines if line.get("message") == "kick processed"]
    assert len(processed) == len(runs)
    owners = {run.run_id: run.tenant_id for run in runs}
    for line in processed:
        assert line["tenant_id"] == owners[line["run_id"]]
