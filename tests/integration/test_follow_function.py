"""FollowFunction on moto: its WebSocket routes, the runs table's stream as the event source
mapping hands it over (devstack's StreamPoller), and the followers' items in the quotas table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.functions import LambdaContext
from devstack.workers import StreamPoller, stream_event, streams_client
from tests.conftest import API_KEY, FakeClock, drain, log_definition, moto_account, moto_parts, settings_from
from tests.fakes import FakeConnections
from workflows.adapters.followers import FollowersRepository
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.follow import Follower, FollowLimits
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import EventType, NewEvent
from workflows.errors import Conflict, LimitExceeded
from workflows.roots import follow as follow_root
from workflows.roots.parts import Parts

pytestmark = pytest.mark.moto
ADMIN = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)


def _context() -> LambdaContext:
    return LambdaContext(function_name="FollowFunction", memory_limit_in_mb=256, timeout_ms=30_000)


@pytest.fixture
def parts(
    stateful_template: dict[str, Any], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Parts]:
    with moto_account(stateful_template, streams=True) as env:
        parts = moto_parts(env, clock)
        parts.give(connections=FakeConnections())
        monkeypatch.setattr(follow_root, "parts", lambda: parts)
        yield parts


def _posted(parts: Parts) -> FakeConnections:
    connections = parts.connections
    assert isinstance(connections, FakeConnections)
    return connections


def _ws(
    kind: str,
    connection_id: str = "conn-1=",
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """An API Gateway WebSocket event, as the template's routes send it."""
    route = {"CONNECT": "$connect", "DISCONNECT": "$disconnect", "MESSAGE": "$default"}[kind]
    event: dict[str, Any] = {
        "requestContext": {
            "routeKey": route,
            "eventType": kind,
            "connectionId": connection_id,
            "domainName": "127.0.0.1",
            "stage": "v1",
            "apiId": "local",
        },
        "isBase64Encoded": False,
    }
    if headers is not None:
        event["headers"] = headers
    if query is not None:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


def _submit(parts: Parts) -> str:
    definition = WorkflowDefinition.model_validate(log_definition("one", "two"))
    return parts.run_service.submit(ADMIN, definition, {}).run_id


def _connect(run_id: str, since: int = 0, connection_id: str = "conn-1=", **headers: str) -> dict[str, Any]:
    event = _ws(
        "CONNECT",
        connection_id,
        headers=headers or {"X-API-KEY": API_KEY},
        query={"run_id": run_id, "since": str(since)},
    )
    answer: dict[str, Any] = follow_root.handle(event, _context())
    return answer


def _poller(parts: Parts) -> StreamPoller:
    table = boto3.client("dynamodb").describe_table(TableName=parts.settings.runs_table)["Table"]
    return StreamPoller(streams_client(), table["LatestStreamArn"], follow_root.handle)


def test_a_follower_receives_every_event_once_in_order_then_the_end(parts: Parts) -> None:
    # Given a queued run, a connection following it and a poller of the runs table's stream
    poller = _poller(parts)
    run_id = _submit(parts)
    assert _connect(run_id) == {"statusCode": 200}
    follow_root.handle(_ws("MESSAGE", body='{"action": "follow"}'), _context())

    # When the run runs to its end and the stream's records reach the function
    drain(parts)
    while poller.poll_once():
        pass

    # Then the connection got events 1..6 once each, in order, then the end, and was closed
    posted = _posted(parts)
    assert posted.seqs("conn-1=") == [1, 2, 3, 4, 5, 6]
    assert posted.frames["conn-1="][-1]["type"] == "end"
    assert posted.closed == ["conn-1="]
    assert parts.followers.connection("conn-1=") is None


def test_a_stream_batch_seen_twice_sends_nothing_twice(parts: Parts) -> None:
    poller = _poller(parts)
    run_id = _submit(parts)
    _connect(run_id)
    follow_root.handle(_ws("MESSAGE", body='{"action": "follow"}'), _context())
    parts.runs.append_events(ADMIN.tenant_id, run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)])
    stream = streams_client()
    shard = stream.describe_stream(StreamArn=poller._arn)["StreamDescription"]["Shards"][0]["ShardId"]
    start = stream.get_shard_iterator(StreamArn=poller._arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = stream.get_records(ShardIterator=start["ShardIterator"])["Records"]
    event = stream_event(records, poller._arn)
    assert follow_root.handle(event, _context()) == {"batchItemFailures": []}
    assert follow_root.handle(event, _context()) == {"batchItemFailures": []}

    assert _posted(parts).seqs("conn-1=") == [1]


def test_a_catch_up_starts_after_since(parts: Parts) -> None:
    run_id = _submit(parts)
    drain(parts)
    _connect(run_id, since=4)

    follow_root.handle(_ws("MESSAGE", body='{"action": "follow"}'), _context())

    assert _posted(parts).seqs("conn-1=") == [5, 6]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"X-API-KEY": "wrong"}, 401, "unauthenticated"),
        ({"Sec-WebSocket-Protocol": "workflows.v1, key.wrong"}, 401, "unauthenticated"),
    ],
)
def test_a_connect_without_a_valid_credential_is_refused(
    parts: Parts, headers: dict[str, str], status: int, code: str
) -> None:
    run_id = _submit(parts)
    event = _ws("CONNECT", headers=headers, query={"run_id": run_id})

    answer = follow_root.handle(event, _context())

    assert answer["statusCode"] == status
    assert json.loads(answer["body"])["code"] == code
    assert parts.followers.connection("conn-1=") is None


def test_a_browser_authenticates_with_the_subprotocol_and_is_answered_with_it(parts: Parts) -> None:
    run_id = _submit(parts)
    answer = _connect(run_id, **{"Sec-WebSocket-Protocol": f"workflows.v1, key.{API_KEY}"})
    assert answer == {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "workflows.v1"}}


def test_an_unknown_run_and_a_bad_id_are_refused_with_their_codes(parts: Parts) -> None:
    unknown = _connect("00000000-0000-4000-8000-000000000000")
    bad = follow_root.handle(
        _ws("CONNECT", headers={"X-API-KEY": API_KEY}, query={"run_id": "../x"}), _context()
    )
    no_id = follow_root.handle(_ws("CONNECT", "bad id!", headers={"X-API-KEY": API_KEY}), _context())

    assert (unknown["statusCode"], json.loads(unknown["body"])["code"]) == (404, "not_found")
    assert (bad["statusCode"], json.loads(bad["body"])["code"]) == (422, "validation_error")
    assert no_id["statusCode"] == 400


def test_a_bad_message_is_answered_with_an_error_frame(parts: Parts) -> None:
    run_id = _submit(parts)
    _connect(run_id)

    answer = follow_root.handle(_ws("MESSAGE", body="not json"), _context())

    assert answer == {"statusCode": 200}
    (frame,) = _posted(parts).frames["conn-1="]
    assert frame["type"] == "error"
    assert frame["code"] == "validation_error"


def test_disconnect_forgets_the_follower(parts: Parts) -> None:
    run_id = _submit(parts)
    _connect(run_id)

    assert follow_root.handle(_ws("DISCONNECT"), _context()) == {"statusCode": 200}
    assert follow_root.handle(_ws("DISCONNECT"), _context()) == {"statusCode": 200}
    assert parts.followers.followers(ADMIN.tenant_id, run_id) == []


# ---- the items ----------------------------------------------------------------------


def _follower(connection_id: str, run_id: str = "r1", tenant: str = "t1") -> Follower:
    return Follower(connection_id, tenant, run_id, "u", since=0, expires_at=2_000_000_000)


def test_the_repository_bounds_followers_per_run_and_per_tenant(parts: Parts) -> None:
    repo = FollowersRepository(parts.dynamodb, parts.settings.quotas_table)
    limits = FollowLimits(per_run=2, per_tenant=3)
    repo.add(_follower("a"), limits, now=1.0)
    repo.add(_follower("b"), limits, now=1.0)
    with pytest.raises(LimitExceeded):
        repo.add(_follower("c"), limits, now=1.0)
    repo.add(_follower("c", "r2"), limits, now=1.0)
    with pytest.raises(LimitExceeded):
        repo.add(_follower("d", "r3"), limits, now=1.0)
    with pytest.raises(Conflict):
        repo.add(_follower("a", "r3"), FollowLimits(per_run=2, per_tenant=10), now=1.0)

    assert repo.remove("a") is not None
    assert repo.remove("a") is None
    repo.add(_follower("d", "r3"), limits, now=1.0)  # room again
    assert [f.connection_id for f in repo.followers("t1", "r1")] == ["b"]


def test_a_tenant_count_left_high_by_lost_disconnects_starts_again_once_expired(parts: Parts) -> None:
    repo = FollowersRepository(parts.dynamodb, parts.settings.quotas_table)
    limits = FollowLimits(per_run=5, per_tenant=1)
    repo.add(_follower("a"), limits, now=1.0)  # never disconnected

    repo.add(_follower("b", "r2"), limits, now=3_000_000_000.0)

    assert [f.connection_id for f in repo.followers("t1", "r2")] == ["b"]


def test_the_lease_and_the_position_move_only_from_what_was_read(parts: Parts) -> None:
    repo = FollowersRepository(parts.dynamodb, parts.settings.quotas_table)
    repo.add(_follower("a"), FollowLimits(5, 5), now=1.0)
    (read,) = repo.followers("t1", "r1")

    assert not repo.claim(read, now=10.0, until=40.0)  # not ready
    assert repo.ready(read)
    assert repo.claim(read, now=10.0, until=40.0)
    assert not repo.claim(read, now=11.0, until=41.0)  # leased
    assert repo.advance(read, 7)
    assert not repo.advance(read, 9)  # since moved on from the one read
    (after,) = repo.followers("t1", "r1")
    assert (after.since, after.lease_until, after.ready) == (7, 0.0, True)
    assert repo.followed([("t1", "r1"), ("t1", "nobody")]) == {("t1", "r1"): [after]}


# ---- multi-user: tenants, users, revoked keys -----------------------------------------


@pytest.fixture
def multi(
    stateful_template: dict[str, Any], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Parts]:
    with moto_account(stateful_template) as env:
        parts = Parts(
            settings_from(env, auth_mode="multi_user"),
            clock=clock,
            dynamodb=boto3.client("dynamodb"),
            sqs=boto3.client("sqs"),
        )
        parts.give(connections=FakeConnections())
        monkeypatch.setattr(follow_root, "parts", lambda: parts)
        yield parts


def _alices_run(parts: Parts) -> str:
    alice = Principal(tenant_id="acme", user_id="alice", permissions=ALL_PERMISSIONS)
    definition = WorkflowDefinition.model_validate(log_definition("one"))
    return parts.run_service.submit(alice, definition, {}).run_id


def _refusal(answer: dict[str, Any]) -> tuple[int, str]:
    return answer["statusCode"], json.loads(answer["body"])["code"]


def test_another_tenants_run_is_not_found_over_the_websocket(multi: Parts) -> None:
    run_id = _alices_run(multi)
    key, _ = multi.api_keys.create("globex", "mallory", ["admin"])

    assert _refusal(_connect(run_id, **{"X-API-KEY": key})) == (404, "not_found")
    assert multi.followers.connection("conn-1=") is None


def test_another_users_run_needs_the_read_permission_over_the_websocket(multi: Parts) -> None:
    run_id = _alices_run(multi)
    nobody, _ = multi.api_keys.create("acme", "bob", [])
    viewer, _ = multi.api_keys.create("acme", "carol", ["viewer"])

    assert _refusal(_connect(run_id, **{"X-API-KEY": nobody})) == (403, "forbidden")
    assert _connect(run_id, **{"X-API-KEY": viewer}) == {"statusCode": 200}


def test_a_revoked_key_is_refused_at_connect(multi: Parts) -> None:
    run_id = _alices_run(multi)
    key, record = multi.api_keys.create("acme", "alice", ["admin"])
    multi.api_keys.revoke("acme", record.key_id, "alice")

    assert _refusal(_connect(run_id, **{"X-API-KEY": key})) == (401, "unauthenticated")
