"""13. Follow: what following a run live over the WebSocket API costs per second followed,
beside a plain events read each second and the long poll (bench/longpoll.py).

The same run as the long poll's: a queued run nothing happens to while it is followed (no
events). FollowFunction's real handler, in-process on moto, the meter counting every DynamoDB
request and read or write unit: a `$connect` (authenticated, the run read, the follower's
transaction), the client's `{"action": "follow"}` (its catch-up), a `$disconnect`; a commit of
the followed run as the runs table's stream hands it over (the push); and a batch of stream
records of runs nobody follows (what every commit of every run costs). API Gateway's bill:
connection minutes, and messages in 32 KB units ($connect, the client's message and
$disconnect counted as messages too, which errs high). A session is assumed to follow the run
for SESSION_SECONDS: its connect, follow and disconnect are spread over them.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench import common
from bench.meter import Meter
from bench.prices import (
    FOLLOW_MEMORY_MB,
    FOLLOW_STREAM_MS_PER_RECORD,
    PRICES,
    STREAM_BATCH,
)

# How long a client follows the run, connected once (API Gateway allows 2 hours).
SESSION_SECONDS = 300
# The events of the followed run while it is followed: the long poll's run has none.
EVENTS_PER_SECOND = 0.0
# A session longer than API Gateway's 10-minute idle timeout sends a `follow` this often.
KEEPALIVE_SECONDS = 540
UNFOLLOWED_RUNS = 100
UNFOLLOWED_RUNS_QUICK = 50
WS_UNIT = 32 * 1024


class Posts:
    """The management API: frames posted, and the 32 KB messages they are billed as."""

    def __init__(self) -> None:
        self.frames = 0
        self.messages = 0

    def post(self, connection_id: str, data: bytes) -> bool:
        self.frames += 1
        self.messages += max(1, math.ceil(len(data) / WS_UNIT))
        return True

    def close(self, connection_id: str) -> None:
        pass


def _ws_event(kind: str, connection_id: str, **extra: Any) -> dict[str, Any]:
    route = {"CONNECT": "$connect", "DISCONNECT": "$disconnect", "MESSAGE": "$default"}[kind]
    context = {"routeKey": route, "eventType": kind, "connectionId": connection_id, "stage": "v1"}
    return {"requestContext": context, "isBase64Encoded": False, **extra}


def _usd(snapshot: dict[str, float], seconds: float, *, invocations: float, messages: float) -> float:
    gb_seconds = math.ceil(seconds * 1000) / 1000 * FOLLOW_MEMORY_MB / 1024
    return (
        snapshot.get("dynamodb.rru", 0) * PRICES["dynamodb_per_million_rru"] / 1e6
        + (snapshot.get("dynamodb.wru", 0) + snapshot.get("dynamodb.wru_index", 0))
        * PRICES["dynamodb_per_million_wru"]
        / 1e6
        + invocations * PRICES["lambda_per_million_requests"] / 1e6
        + gb_seconds * PRICES["lambda_per_gb_second_arm64"]
        + messages * PRICES["apigw_websocket_per_million_messages"] / 1e6
    )


def run(quick: bool = False) -> dict[str, Any]:
    import boto3

    from bench import longpoll
    from bench.prices import API_MEMORY_MB
    from devstack.workers import stream_event, streams_client
    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.principal import ALL_PERMISSIONS, Principal
    from workflows.domain.run import EventType, NewEvent
    from workflows.roots import api as api_root
    from workflows.roots import follow as follow_root

    unfollowed_runs = UNFOLLOWED_RUNS_QUICK if quick else UNFOLLOWED_RUNS
    result: dict[str, Any] = {
        "session_seconds": SESSION_SECONDS,
        "events_per_second": EVENTS_PER_SECOND,
        "unfollowed_runs": unfollowed_runs,
    }
    with common.moto_resources(streams=True) as env:
        raw = boto3.session.Session().client("dynamodb")
        meter = Meter(common.table_properties(env), raw)
        meter.install()
        try:
            api = common.load_function("api")
            follow = common.load_function("follow")
            posts = Posts()
            follow_root.parts().give(connections=posts)
            container = api_root.parts()
            principal = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
            definition = WorkflowDefinition.model_validate(
                {"name": "followed", "steps": [{"id": "s1", "type": "log", "config": {"message": "x"}}]}
            )
            streams = streams_client()
            arn = raw.describe_table(TableName=env["WORKFLOWS_RUNS_TABLE"])["Table"]["LatestStreamArn"]
            shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
            position = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")
            iterator = position["ShardIterator"]

            def run_records() -> list[dict[str, Any]]:
                """The stream's new records of run items (the event source's filter)."""
                nonlocal iterator
                response = streams.get_records(ShardIterator=iterator)
                iterator = response["NextShardIterator"]
                return [r for r in response["Records"] if r["dynamodb"]["Keys"]["sk"]["S"] == "RUN"]

            def measured(event: dict[str, Any]) -> tuple[dict[str, float], float, Any]:
                meter.reset()
                started = time.perf_counter()
                context = common.lambda_context("FollowFunction", FOLLOW_MEMORY_MB, 30_000)
                answer = follow.handler(event, context)
                return meter.snapshot(), time.perf_counter() - started, answer

            with meter.paused():  # a queued run: nothing dispatches it, so it has no events
                run = container.run_service.submit(principal, definition, {})
                run_records()
            headers = {"x-api-key": common.API_KEY}
            query = {"run_id": run.run_id, "since": "0"}
            phases: dict[str, Any] = {}
            frames_before = posts.messages
            for name, event in (
                (
                    "connect",
                    _ws_event("CONNECT", "bench-conn=", headers=headers, queryStringParameters=query),
                ),
                ("follow", _ws_event("MESSAGE", "bench-conn=", body='{"action": "follow"}')),
            ):
                snapshot, seconds, answer = measured(event)
                assert answer["statusCode"] == 200, answer
                phases[name] = (snapshot, seconds, posts.messages - frames_before)
                frames_before = posts.messages
            # A commit of the followed run: the push of its one new event.
            with meter.paused():
                container.runs.append_events(
                    run.tenant_id, run.run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)]
                )
                records = run_records()
            snapshot, seconds, answer = measured(stream_event(records, arn))
            assert answer == {"batchItemFailures": []}, answer
            assert posts.messages > frames_before, "the followed run's commit was not pushed"
            phases["push"] = (snapshot, seconds, posts.messages - frames_before)
            frames_before = posts.messages
            # Commits of runs nobody follows: one stream batch.
            with meter.paused():
                for _ in range(unfollowed_runs):
                    container.run_service.submit(principal, definition, {})
                records = run_records()
            snapshot, seconds, answer = measured(stream_event(records, arn))
            assert answer == {"batchItemFailures": []}, answer
            assert posts.messages == frames_before
            phases["unfollowed_batch"] = (snapshot, seconds, 0)
            snapshot, seconds, answer = measured(_ws_event("DISCONNECT", "bench-conn="))
            phases["disconnect"] = (snapshot, seconds, 0)
            # The plain read each second of the same run, as bench/longpoll.py measures it.
            meter.reset()
            plain_seconds = [
                longpoll._handle(api, run.run_id, {"since": "0"})[1] for _ in range(longpoll.PLAIN_READS)
            ]
            plain = meter.snapshot()
        finally:
            meter.uninstall()

    costs: dict[str, float] = {}
    for name, (snapshot, seconds, frames) in phases.items():
        client_messages = 1 if name in ("connect", "follow", "disconnect") else 0
        invocations = 1.0
        costs[name] = _usd(snapshot, seconds, invocations=invocations, messages=frames + client_messages)
        result[name] = {
            "rru": snapshot.get("dynamodb.rru", 0),
            "wru": snapshot.get("dynamodb.wru", 0),
            "requests": snapshot.get("dynamodb.requests", 0),
            "ms": round(seconds * 1000, 2),
            "messages": frames + client_messages,
            "usd_per_million": costs[name] * 1e6,
        }
    batch = result["unfollowed_batch"]
    per_record_ms = batch["ms"] / records_count if (records_count := len(records)) else 0.0
    result["unfollowed_records"] = records_count
    result["unfollowed_ms_per_record"] = per_record_ms
    result["unfollowed_rru_per_record"] = batch["rru"] / records_count
    result["unfollowed_ms_per_record_bound"] = FOLLOW_STREAM_MS_PER_RECORD
    # At volume a batch is full (STREAM_BATCH records per invocation).
    result["unfollowed_usd_per_million_commits"] = (
        batch["rru"] / records_count * PRICES["dynamodb_per_million_rru"]
        + PRICES["lambda_per_million_requests"] / STREAM_BATCH
        + per_record_ms / 1000 * FOLLOW_MEMORY_MB / 1024 * PRICES["lambda_per_gb_second_arm64"] * 1e6
    )
    session = costs["connect"] + costs["follow"] + costs["disconnect"]
    minutes = PRICES["apigw_websocket_per_million_connection_minutes"] / 60  # per million seconds
    result["session_usd_per_million"] = session * 1e6
    result["push_usd_per_million_commits"] = costs["push"] * 1e6
    result["usd_per_million_seconds"] = (
        minutes + session * 1e6 / SESSION_SECONDS + EVENTS_PER_SECOND * costs["push"] * 1e6
    )
    result["usd_per_million_seconds_session_25s"] = minutes + session * 1e6 / 25
    # API Gateway closes a connection idle for 10 minutes: a longer session sends a `follow`
    # every KEEPALIVE_SECONDS to keep it (a catch-up that finds nothing new).
    keepalives = 7200 // KEEPALIVE_SECONDS
    result["usd_per_million_seconds_session_2h"] = (
        minutes + (session + keepalives * costs["follow"]) * 1e6 / 7200
    )
    result["usd_per_million_seconds_one_commit_per_second"] = (
        result["usd_per_million_seconds"] + costs["push"] * 1e6
    )
    plain_rru = plain.get("dynamodb.rru", 0) / longpoll.PLAIN_READS
    plain_ms = sorted(plain_seconds)[len(plain_seconds) // 2]
    result["plain_read_usd_per_million_seconds"] = longpoll._usd_per_million_seconds(
        plain_rru, 1.0, API_MEMORY_MB / 1024 * plain_ms
    )
    result["ratio_to_plain_read"] = (
        result["usd_per_million_seconds"] / result["plain_read_usd_per_million_seconds"]
    )
    # The commits per second at which following costs what reading every second does.
    result["break_even_commits_per_second"] = (
        result["plain_read_usd_per_million_seconds"] - result["usd_per_million_seconds"]
    ) / (costs["push"] * 1e6)
    return result
