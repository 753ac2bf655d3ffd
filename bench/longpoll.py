"""8. Long poll: what a waiting events read costs per second it waits, and how soon it answers.

`GET /runs/{id}/events?since=N&wait=S` through the API function's handler (Mangum, an API
Gateway 2.0 event), really waiting: the meter counts the DynamoDB requests and read units of a
read that waits its whole wait on a run with nothing new (25 s, 5 s with --quick), once for an
ordinary run and once for a run carrying 60 KB of inputs (a GetItem is billed on the whole
item, so the check's cost follows the run item's size). The same read without `wait` is the
baseline: what polling the route once a second costs per second instead. Then reads that
another thread's commit ends, the commit made at several points of the check schedule: the
time from the commit to the answer (informative: it depends on where in the schedule the
commit falls, and on this machine's load).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any

from bench import common
from bench.meter import Meter
from bench.prices import API_MEMORY_MB, PRICES

# When, in seconds after the read starts, another thread commits an event to the run.
COMMIT_AFTER = (0.15, 0.7, 2.3, 4.6)
PLAIN_READS = 20


def _handle(api: Any, run_id: str, query: dict[str, str]) -> tuple[dict[str, Any], float]:
    path = f"/api/v1/workflows/runs/{run_id}/events"
    event = common.api_event("GET", path, query=query)
    started = time.perf_counter()
    response = api.handler(event, common.lambda_context("ApiFunction", API_MEMORY_MB, 29_000))
    elapsed = time.perf_counter() - started
    assert response["statusCode"] == 200, response
    body: dict[str, Any] = json.loads(response["body"])
    return body, elapsed


def _waiting(api: Any, meter: Meter, run_id: str, wait: int) -> dict[str, Any]:
    """A read that waits all of `wait` (nothing happens), beside the same read without it."""
    meter.reset()
    plain_seconds = [_handle(api, run_id, {"since": "0"})[1] for _ in range(PLAIN_READS)]
    plain = meter.snapshot()
    meter.reset()
    body, elapsed = _handle(api, run_id, {"since": "0", "wait": str(wait)})
    waited = meter.snapshot()
    assert body["events"] == [], body
    assert body["next_since"] == 0, body
    plain_rru = plain.get("dynamodb.rru", 0) / PLAIN_READS
    plain_requests = plain.get("dynamodb.requests", 0) / PLAIN_READS
    checks = waited.get("dynamodb.GetItem", 0) - plain.get("dynamodb.GetItem", 0) / PLAIN_READS
    waiting_rru = waited.get("dynamodb.rru", 0) - plain_rru
    return {
        "wait_seconds": wait,
        "answered_after_seconds": round(elapsed, 3),
        "checks": checks,
        "checks_per_second": checks / wait,
        "rru": waited.get("dynamodb.rru", 0),
        "rru_per_waiting_second": waiting_rru / wait,
        "rru_per_check": waiting_rru / checks if checks else None,
        "requests": waited.get("dynamodb.requests", 0),
        "plain_read_rru": plain_rru,
        "plain_read_requests": plain_requests,
        "plain_read_p50_ms": statistics.median(plain_seconds) * 1000,
    }


def _notice(api: Any, container: Any, principal: Any, definition: Any, after: float) -> float:
    """Seconds from another thread's commit to the waiting read's answer."""
    from workflows.domain.run import EventType, NewEvent

    run = container.run_service.submit(principal, definition, {})
    committed: list[float] = []

    def commit() -> None:
        time.sleep(after)
        event = NewEvent(event_type=EventType.WEBHOOK_DELIVERY)
        container.runs.append_events(run.tenant_id, run.run_id, [event])
        committed.append(time.perf_counter())

    writer = threading.Thread(target=commit)
    writer.start()
    body, _ = _handle(api, run.run_id, {"since": "0", "wait": "20"})
    answered = time.perf_counter()
    writer.join()
    assert [e["event_seq"] for e in body["events"]] == [1], body
    return answered - committed[0]


def _usd_per_million_seconds(rru_per_second: float, requests_per_second: float, gb_seconds: float) -> float:
    per_request = PRICES["apigw_http_per_million_requests"] + PRICES["lambda_per_million_requests"]
    return (
        rru_per_second * PRICES["dynamodb_per_million_rru"]
        + requests_per_second * per_request
        + gb_seconds * 1_000_000 * PRICES["lambda_per_gb_second_arm64"]
    )


def run(quick: bool = False) -> dict[str, Any]:
    import boto3

    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.principal import ALL_PERMISSIONS, Principal
    from workflows.roots import api as api_root
    from workflows.services.queries import MAX_WAIT_SECONDS, poll_delays

    wait = 5 if quick else MAX_WAIT_SECONDS
    result: dict[str, Any] = {"schedule_checks": len(poll_delays(wait))}
    with common.moto_resources() as env:
        raw = boto3.session.Session().client("dynamodb")
        meter = Meter(common.table_properties(env), raw)
        meter.install()
        try:
            api = common.load_function("api")
            container = api_root.parts()
            principal = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
            definition = WorkflowDefinition.model_validate(
                {"name": "followed", "steps": [{"id": "s1", "type": "log", "config": {"message": "x"}}]}
            )
            with meter.paused():  # queued runs: nothing dispatches them, so they have no events
                ordinary = container.run_service.submit(principal, definition, {})
                large = container.run_service.submit(principal, definition, {"text": "x" * 60_000})
            result["ordinary"] = _waiting(api, meter, ordinary.run_id, wait)
            result["large_inputs"] = _waiting(api, meter, large.run_id, wait)
            with meter.paused():
                latencies = [_notice(api, container, principal, definition, after) for after in COMMIT_AFTER]
        finally:
            meter.uninstall()
    result["notice_seconds"] = [round(s, 3) for s in latencies]
    result["notice_max_seconds"] = max(latencies)
    result["notice_mean_seconds"] = statistics.mean(latencies)
    # Following a run for a second: waiting in one long poll, or one plain read each second.
    o = result["ordinary"]
    gb = API_MEMORY_MB / 1024
    result["usd_per_million_seconds_long_poll"] = _usd_per_million_seconds(
        o["rru_per_waiting_second"], 1 / wait, gb
    )
    result["usd_per_million_seconds_short_poll"] = _usd_per_million_seconds(
        o["plain_read_rru"], 1.0, gb * o["plain_read_p50_ms"] / 1000
    )
    result["usd_per_million_seconds_long_poll_reads_only"] = (
        o["rru_per_waiting_second"] * PRICES["dynamodb_per_million_rru"]
    )
    return result
