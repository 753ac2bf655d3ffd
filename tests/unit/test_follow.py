"""Following a run over a WebSocket (services/follow.py) on the in-memory fakes: what each
connection is sent, and when."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import FakeClock, drain, log_definition
from tests.fakes import FakeConnections, FakeFollowers
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.follow import (
    CONNECTION_SECONDS,
    FRAME_BYTES,
    MAX_EVENT_BYTES,
    FollowLimits,
    event_frames,
)
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import EventType, NewEvent, Run, RunEvent
from workflows.errors import DependencyUnavailable, Forbidden, LimitExceeded, NotFound, ValidationFailed
from workflows.roots.parts import Parts
from workflows.services.follow import (
    SUBPROTOCOL,
    RunFollowing,
    client_action,
    follow_target,
    presented_credential,
)

ADMIN = Principal(tenant_id="t1", user_id="alice", permissions=ALL_PERMISSIONS)


def _submit(container: Parts, *messages: str, principal: Principal = ADMIN) -> Run:
    definition = WorkflowDefinition.model_validate(log_definition(*messages))
    return container.run_service.submit(principal, definition, {})


def _append(container: Parts, run: Run, count: int = 1) -> None:
    events = [NewEvent(event_type=EventType.WEBHOOK_DELIVERY) for _ in range(count)]
    container.runs.append_events(run.tenant_id, run.run_id, events)


def _parts(container: Parts) -> tuple[RunFollowing, FakeFollowers, FakeConnections]:
    followers, connections = container.followers, container.connections
    assert isinstance(followers, FakeFollowers)
    assert isinstance(connections, FakeConnections)
    return container.following, followers, connections


def test_the_catch_up_sends_every_event_after_since_in_order(container: Parts) -> None:
    # Given a run with 4 events, followed from event 1
    following, _, connections = _parts(container)
    run = _submit(container, "a")
    drain(container)
    following.connect(ADMIN, "c1", run.run_id, 1)

    # When the client says it follows
    outcome = following.follow("c1")

    # Then it is sent events 2..4, then the end, and the connection is closed
    assert outcome == "ended"
    assert connections.seqs("c1") == [2, 3, 4]
    assert connections.frames["c1"][-1] == {
        "type": "end",
        "run_id": run.run_id,
        "status": "succeeded",
        "next_since": 4,
    }
    assert connections.closed == ["c1"]


def test_nothing_is_pushed_before_the_client_follows(container: Parts) -> None:
    following, _, connections = _parts(container)
    run = _submit(container, "a")
    following.connect(ADMIN, "c1", run.run_id, 0)
    _append(container, run, 2)

    assert following.push(run.tenant_id, run.run_id) == {}
    assert connections.frames == {}

    following.follow("c1")
    assert connections.seqs("c1") == [1, 2]


def test_a_commit_is_pushed_once_and_a_repeated_stream_record_sends_nothing(container: Parts) -> None:
    following, followers, connections = _parts(container)
    run = _submit(container, "a")
    following.connect(ADMIN, "c1", run.run_id, 0)
    following.follow("c1")
    _append(container, run, 2)

    assert following.push(run.tenant_id, run.run_id) == {"c1": "sent"}
    # A duplicate or late record of the same commit
    following.push(run.tenant_id, run.run_id)
    _append(container, run)
    following.push(run.tenant_id, run.run_id)

    assert connections.seqs("c1") == [1, 2, 3]
    assert followers.followers(run.tenant_id, run.run_id)[0].since == 3


def test_a_commit_made_while_the_catch_up_posts_is_sent_by_the_catch_up(container: Parts) -> None:
    # Given a follower whose catch-up is posting (it holds the connection's lease)
    following, _, connections = _parts(container)
    run = _submit(container, "a")
    _append(container, run, 2)
    following.connect(ADMIN, "c1", run.run_id, 0)
    pushed: list[dict[str, str]] = []

    def commit_meanwhile() -> None:
        # Its stream record arrives while the lease is taken: the push skips the connection
        _append(container, run)
        pushed.append(following.push(run.tenant_id, run.run_id))

    connections.on_post = commit_meanwhile

    # When the catch-up ends
    following.follow("c1")

    # Then the commit's event was sent by it, once, in order
    assert pushed == [{"c1": "busy"}]
    assert connections.seqs("c1") == [1, 2, 3]


def test_a_gone_connection_is_forgotten_and_no_longer_counted(container: Parts) -> None:
    following, followers, connections = _parts(container)
    run = _submit(container, "a")
    following.connect(ADMIN, "c1", run.run_id, 0)
    following.follow("c1")
    connections.gone.add("c1")
    _append(container, run)

    assert following.push(run.tenant_id, run.run_id) == {"c1": "gone"}
    assert followers.connection("c1") is None
    assert followers.tenants["t1"] == 0
    assert following.followed([(run.tenant_id, run.run_id)]) == {}


def test_disconnect_forgets_the_connection_and_a_repeat_is_harmless(container: Parts) -> None:
    following, followers, _ = _parts(container)
    run = _submit(container, "a")
    following.connect(ADMIN, "c1", run.run_id, 0)

    following.disconnect("c1")
    following.disconnect("c1")

    assert followers.followers(run.tenant_id, run.run_id) == []
    assert followers.tenants["t1"] == 0


def test_another_tenants_run_is_not_found(container: Parts) -> None:
    following, followers, _ = _parts(container)
    run = _submit(container, "a")
    other = Principal(tenant_id="t2", user_id="bob", permissions=ALL_PERMISSIONS)

    with pytest.raises(NotFound):
        following.connect(other, "c1", run.run_id, 0)
    assert followers.connections == {}


def test_another_users_run_needs_the_read_permission(container: Parts) -> None:
    following, _, _ = _parts(container)
    run = _submit(container, "a")
    viewer = Principal(tenant_id="t1", user_id="bob", permissions=frozenset())

    with pytest.raises(Forbidden):
        following.connect(viewer, "c1", run.run_id, 0)


def test_followers_are_bounded_per_run_and_per_tenant(container: Parts, clock: FakeClock) -> None:
    _, followers, connections = _parts(container)
    following = RunFollowing(
        container.runs,
        container.run_outputs,
        followers,
        connections,
        FollowLimits(per_run=2, per_tenant=3),
        clock=clock,
    )
    first, second = _submit(container, "a"), _submit(container, "b")
    following.connect(ADMIN, "c1", first.run_id, 0)
    following.connect(ADMIN, "c2", first.run_id, 0)
    with pytest.raises(LimitExceeded):
        following.connect(ADMIN, "c3", first.run_id, 0)
    following.connect(ADMIN, "c3", second.run_id, 0)
    with pytest.raises(LimitExceeded):
        following.connect(ADMIN, "c4", second.run_id, 0)


def test_an_expired_follower_is_dropped_at_its_next_push(container: Parts, clock: FakeClock) -> None:
    following, followers, connections = _parts(container)
    run = _submit(container, "a")
    following.connect(ADMIN, "c1", run.run_id, 0)
    following.follow("c1")
    clock.advance(CONNECTION_SECONDS + 3600)
    _append(container, run)

    assert following.push(run.tenant_id, run.run_id) == {"c1": "expired"}
    assert followers.connection("c1") is None
    assert connections.seqs("c1") == []


def test_follow_from_an_unknown_connection_is_not_found(container: Parts) -> None:
    following, _, _ = _parts(container)
    with pytest.raises(NotFound):
        following.follow("nobody")


def test_a_batch_reads_each_distinct_run_once(container: Parts) -> None:
    following, followers, _ = _parts(container)
    runs = [_submit(container, "a") for _ in range(3)]
    keys = [(r.tenant_id, r.run_id) for r in runs]

    assert following.followed([*keys, *keys]) == {}
    assert followers.batch_reads == [3]


# ---- frames ---------------------------------------------------------------------------


def _event(seq: int, size: int) -> RunEvent:
    return RunEvent(
        event_seq=seq,
        event_type="step_completed",
        payload={"output": "x" * size},
        created_at="2026-01-01T00:00:00.000Z",
    )


def test_frames_stay_within_one_billed_message_and_keep_the_order() -> None:
    events = [_event(seq, 5000) for seq in range(1, 21)]

    frames = list(event_frames("r", events, 20))

    assert len(frames) > 1
    assert all(len(frame) <= FRAME_BYTES for frame in frames)
    bodies = [json.loads(frame) for frame in frames]
    assert [e["event_seq"] for b in bodies for e in b["events"]] == list(range(1, 21))
    assert bodies[-1]["next_since"] == 20
    assert [b["next_since"] for b in bodies[:-1]] == [b["events"][-1]["event_seq"] for b in bodies[:-1]]


def test_an_event_too_large_for_a_frame_is_sent_without_its_payload() -> None:
    (frame,) = event_frames("r", [_event(1, MAX_EVENT_BYTES + 1)], 1)

    (event,) = json.loads(frame)["events"]
    assert len(frame) < 128 * 1024
    assert event["payload"] == {}
    assert event["payload_omitted"] is True


# ---- what a $connect and a message carry -----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-API-KEY": "k1"}, ("key", "k1", None)),
        ({"authorization": "Bearer a.b.c"}, ("bearer", "a.b.c", None)),
        ({"Sec-WebSocket-Protocol": "workflows.v1, key.wfk_abc"}, ("key", "wfk_abc", SUBPROTOCOL)),
        ({"sec-websocket-protocol": "workflows.v1,bearer.a.b.c"}, ("bearer", "a.b.c", SUBPROTOCOL)),
    ],
)
def test_credentials_come_from_headers_or_the_subprotocol(
    headers: dict[str, str], expected: tuple[str, str, str | None]
) -> None:
    credential = presented_credential(headers)
    assert credential is not None
    assert (credential.kind, credential.value, credential.subprotocol) == expected


def test_no_credential_in_the_query_string_counts() -> None:
    assert presented_credential({"sec-websocket-protocol": "workflows.v1"}) is None
    assert presented_credential({}) is None


@pytest.mark.parametrize(
    "query",
    [
        None,
        {"run_id": "not-a-run"},
        {"run_id": "00000000-0000-4000-8000-000000000000", "since": "-1"},
        {"run_id": "00000000-0000-4000-8000-000000000000", "since": "1e3"},
        {"run_id": "00000000-0000-4000-8000-000000000000", "since": str(2**53 + 1)},
        {"run_id": "00000000-0000-4000-8000-000000000000", "since": "9" * 5000},
    ],
)
def test_a_connect_names_a_run_id_and_a_bounded_since(query: dict[str, Any] | None) -> None:
    with pytest.raises(ValidationFailed):
        follow_target(query)


def test_a_connect_since_defaults_to_zero() -> None:
    run_id = "00000000-0000-4000-8000-000000000000"
    assert follow_target({"run_id": run_id}) == (run_id, 0)


@pytest.mark.parametrize("body", [None, "", "[]", "{", '{"action": "other"}', "x" * 5000, '"follow"'])
def test_a_message_is_a_small_follow_action(body: str | None) -> None:
    with pytest.raises(ValidationFailed):
        client_action(body)
    assert client_action('{"action": "follow"}') == "follow"


def test_a_failed_post_frees_the_lease_so_the_retry_delivers(container: Parts) -> None:
    following, _, connections = _parts(container)
    run = _submit(container, "a")
    following.connect(ADMIN, "c1", run.run_id, 0)
    following.follow("c1")
    _append(container, run)

    def fail() -> None:
        raise DependencyUnavailable("the management API failed")

    broken = connections.post
    calls = {"n": 0}

    def post_once_failing(connection_id: str, data: bytes) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            fail()
        return broken(connection_id, data)

    connections.post = post_once_failing  # type: ignore[method-assign]
    with pytest.raises(DependencyUnavailable):
        following.push(run.tenant_id, run.run_id)
    # The stream batch is retried
    assert following.push(run.tenant_id, run.run_id) == {"c1": "sent"}
    assert connections.seqs("c1") == [1]


def test_followers_at_different_positions_each_get_what_they_have_not_seen(container: Parts) -> None:
    following, _, connections = _parts(container)
    run = _submit(container, "a")
    _append(container, run, 3)
    following.connect(ADMIN, "early", run.run_id, 0)
    following.connect(ADMIN, "late", run.run_id, 2)
    following.follow("early")
    following.follow("late")
    _append(container, run, 2)

    assert following.push(run.tenant_id, run.run_id) == {"early": "sent", "late": "sent"}
    assert connections.seqs("early") == [1, 2, 3, 4, 5]
    assert connections.seqs("late") == [3, 4, 5]


def test_a_follower_far_behind_is_caught_up_page_by_page_in_order(container: Parts) -> None:
    following, _, connections = _parts(container)
    run = _submit(container, "a")
    for _ in range(25):
        _append(container, run, 10)  # 250 events: three pages of the events route
    following.connect(ADMIN, "c1", run.run_id, 7)

    following.follow("c1")

    assert connections.seqs("c1") == list(range(8, 251))
