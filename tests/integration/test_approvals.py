"""Quorum approvals (`required_approvals`) and the approvals inbox (`GET /approvals`).

Multi-user mode on the in-memory fakes, and once through the DynamoDB adapter on moto. Callers
(tenant t1 unless said otherwise): owen submits the runs (no role); alice, bob and carol are
assignees (no role); dave is neither (no role); vera is a viewer, otto an operator; zed is an
admin of tenant t2.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, AtomicRequests, FakeClock, drain, log_definition, make_fake, settings_from
from tests.faults import Faulty
from workflows.adapters.run_index import listing_partitions
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
USERS = {
    "owen": ("t1", []),
    "alice": ("t1", []),
    "bob": ("t1", []),
    "carol": ("t1", []),
    "dave": ("t1", []),
    "vera": ("t1", ["viewer"]),
    "otto": ("t1", ["operator"]),
    "zed": ("t2", ["admin"]),
}


class Api:
    def __init__(self, c: Parts, client: TestClient) -> None:
        self.c = c
        self.client = client
        self.keys = {
            user: c.api_keys.create(tenant, user, roles)[0] for user, (tenant, roles) in USERS.items()
        }

    def call(self, who: str, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return self.client.request(
            method, P + path, json=body, params=params or None, headers={"X-API-KEY": self.keys[who]}
        )

    def submit(self, config: dict[str, Any], *, who: str = "owen", name: str = "review") -> str:
        definition = {
            "name": name,
            "steps": [
                {"id": "review", "type": "approval", "config": {"instructions": "Ship it?", **config}},
                {"id": "after", "type": "log", "config": {"message": "{{ steps.review.output.approvers }}"}},
            ],
        }
        response = self.call(who, "POST", "/runs", {"definition": definition, "inputs": {}})
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def decide(self, who: str, run_id: str, decision: str = "approve", **body: Any) -> Any:
        return self.call(who, "POST", f"/runs/{run_id}/steps/review/{decision}", body or None)

    def run(self, run_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.call("vera", "GET", f"/runs/{run_id}").json()
        return body

    def events(self, run_id: str, *types: str) -> list[dict[str, Any]]:
        page = self.call("vera", "GET", f"/runs/{run_id}/events", limit=1000, types=",".join(types))
        events: list[dict[str, Any]] = page.json()["events"]
        return events

    def inbox(self, who: str, **params: Any) -> Any:
        return self.call(who, "GET", "/approvals", **params)

    def inbox_ids(self, who: str, **params: Any) -> list[str]:
        response = self.inbox(who, **params)
        assert response.status_code == 200, response.text
        return [item["run_id"] for item in response.json()["approvals"]]


@pytest.fixture
def api(clock: FakeClock) -> Iterator[Api]:
    c = make_fake(clock, auth_mode="multi_user")
    c.give(runs=Faulty(c.runs))  # so that a test can make two readers of a run meet
    with APPS.lend(c) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield Api(c, client)


THREE = {"assignees": ["alice", "bob", "carol"], "required_approvals": 2}


# ---- quorum ------------------------------------------------------------------------------


def test_two_of_three_assignees_complete_the_step(api: Api) -> None:
    # Given a run waiting for two of three assignees
    run_id = api.submit(THREE)
    drain(api.c)
    # When the first approves, the run keeps waiting and says how far the quorum is
    first = api.decide("alice", run_id, comment="looks fine")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "run_id": run_id,
        "action": "approve",
        "result": "applied",
        "status": "waiting_approval",
        "approvals": 1,
        "required_approvals": 2,
    }
    assert api.run(run_id)["status"] == "waiting_approval"
    # When the second approves, the step completes
    second = api.decide("bob", run_id, comment="ship it", fields={"channel": "blog"})
    assert second.json()["status"] == "running"
    assert second.json()["approvals"] == 2
    drain(api.c)
    # Then the run goes on, the output lists the approvers, and each decision is an event
    run = api.c.runs.get("t1", run_id)
    assert run.status.value == "succeeded"
    assert run.step_outputs["review"] == {
        "decision": "approve",
        "comment": "ship it",
        "fields": {"channel": "blog"},
        "approver": "bob",
        "approvers": ["alice", "bob"],
    }
    assert run.step_outputs["after"]["message"] == '["alice", "bob"]'  # templates read them
    granted = [e["payload"] for e in api.events(run_id, "approval_granted")]
    assert [(g["approver"], g["approvals"], g["required_approvals"]) for g in granted] == [
        ("alice", 1, 2),
        ("bob", 2, 2),
    ]
    assert granted[0]["comment"] == "looks fine"


def test_the_same_approver_twice_counts_once(api: Api) -> None:
    run_id = api.submit(THREE)
    drain(api.c)
    assert api.decide("alice", run_id).json()["result"] == "applied"
    # When alice approves again
    again = api.decide("alice", run_id)
    # Then it is a clear answer, not an error, and nothing more is recorded
    assert again.status_code == 200
    assert again.json()["result"] == "already_applied"
    assert again.json()["approvals"] == 1
    assert again.json()["status"] == "waiting_approval"
    assert len(api.events(run_id, "approval_granted")) == 1
    assert api.run(run_id)["status"] == "waiting_approval"


def test_a_non_assignee_gets_403_and_changes_nothing(api: Api) -> None:
    run_id = api.submit(THREE)
    drain(api.c)
    version = api.c.runs.get("t1", run_id).version
    assert api.decide("dave", run_id).status_code == 403
    assert api.decide("dave", run_id, "reject").status_code == 403
    assert api.decide("zed", run_id).status_code == 404  # another tenant's run
    assert api.c.runs.get("t1", run_id).version == version


def test_a_rejection_after_one_approval_rejects_the_step(api: Api) -> None:
    run_id = api.submit(THREE)
    drain(api.c)
    api.decide("alice", run_id)
    # When another assignee rejects
    rejected = api.decide("carol", run_id, "reject", comment="not yet")
    # Then the step fails as any rejection does
    assert rejected.json()["status"] == "failed"
    run = api.run(run_id)
    assert run["error"]["code"] == "approval_rejected"
    payload = api.events(run_id, "approval_rejected")[0]["payload"]
    assert (payload["approver"], payload["approvals"], payload["required_approvals"]) == ("carol", 1, 2)
    assert payload["comment"] == "not yet"


def test_required_approvals_must_be_reachable_and_positive(api: Api) -> None:
    for config in (
        {"assignees": ["alice", "bob"], "required_approvals": 3},
        {"assignees": ["alice", "alice"], "required_approvals": 2},  # one distinct assignee
        {"required_approvals": 0},
    ):
        definition = {"name": "x", "steps": [{"id": "a", "type": "approval", "config": config}]}
        response = api.call("owen", "POST", "/runs", {"definition": definition})
        assert response.status_code == 422, response.text
        fields = [d["field"] for d in response.json()["error"]["details"]]
        assert fields == ["definition.steps[0].config.required_approvals"]
    # Without assignees, any number of distinct approvers allowed to decide may be required.
    assert api.submit({"required_approvals": 3}, who="owen")


def test_a_timeout_with_one_of_two_approvals_applies_on_timeout(api: Api, clock: FakeClock) -> None:
    rejected = api.submit({**THREE, "timeout_seconds": 3600})
    approved = api.submit({**THREE, "timeout_seconds": 3600, "on_timeout": "approve"})
    drain(api.c)
    # Given one approval of the two each needs (it moved the run past the timeout's first kick)
    api.decide("alice", rejected)
    api.decide("alice", approved)
    # When the timeout passes
    clock.advance(3601)
    drain(api.c)
    # Then on_timeout decides; the partial approval decided nothing, and the output lists it
    assert api.run(rejected)["error"]["code"] == "approval_rejected"
    run = api.c.runs.get("t1", approved)
    assert run.status.value == "succeeded"
    assert run.step_outputs["review"]["approver"] == "system:timeout"
    assert run.step_outputs["review"]["approvers"] == ["alice"]
    timeout = api.events(approved, "step_timeout")[0]["payload"]
    assert (timeout["approvals"], timeout["required_approvals"]) == (1, 2)


def test_two_approvers_at_the_same_moment_are_both_counted(api: Api) -> None:
    # Given two approvers who both read the run before either writes
    run_id = api.submit(THREE)
    drain(api.c)
    runs = api.c.runs
    assert isinstance(runs, Faulty)
    both_read = threading.Barrier(2, timeout=10)
    first_read: set[int] = set()

    def wait_for_the_other(*args: object, **kwargs: object) -> None:
        if threading.get_ident() not in first_read:
            first_read.add(threading.get_ident())
            both_read.wait()  # neither commits before the other has read the same version

    runs.hook("get_with_definition", wait_for_the_other, after=True, times=None)
    results: dict[str, Any] = {}

    def approve(user: str) -> None:
        results[user] = api.c.control.decide("t1", run_id, "review", "approve", user)

    threads = [threading.Thread(target=approve, args=(user,)) for user in ("alice", "bob")]
    # When both approve at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    runs.heal()
    # Then one lost the race, read again and was counted: the quorum of two is met
    assert {r.result for r in results.values()} == {"applied"}
    assert sorted(r.approvals for r in results.values()) == [1, 2]
    drain(api.c)
    run = runs.get("t1", run_id)
    assert run.status.value == "succeeded"
    assert sorted(run.step_outputs["review"]["approvers"]) == ["alice", "bob"]
    assert len(api.events(run_id, "approval_granted")) == 2


# ---- the inbox -----------------------------------------------------------------------------


def test_the_inbox_lists_a_pending_approval_for_its_assignees_only(api: Api, clock: FakeClock) -> None:
    run_id = api.submit({**THREE, "timeout_seconds": 3600}, name="publish")
    api.submit({"assignees": ["bob"]})  # bob's only
    drain(api.c)
    # alice sees hers, with everything an approver needs
    response = api.inbox("alice", status="pending", assignee="me")
    assert response.status_code == 200
    (item,) = response.json()["approvals"]
    assert item == {
        "run_id": run_id,
        "step_id": "review",
        "workflow_id": None,
        "definition_name": "publish",
        "instructions": "Ship it?",
        "assignees": ["alice", "bob", "carol"],
        "required_approvals": 2,
        "approvals": [],
        "requested_at": "2026-01-01T12:00:00.000Z",
        "expires_at": "2026-01-01T13:00:00.000Z",
        "links": {
            "run": f"{P}/runs/{run_id}",
            "approve": f"{P}/runs/{run_id}/steps/review/approve",
            "reject": f"{P}/runs/{run_id}/steps/review/reject",
        },
    }
    assert response.json()["next_cursor"] is None
    assert len(api.inbox_ids("bob", assignee="me")) == 2
    # Not for someone who is not an assignee, nor for another tenant
    assert api.inbox_ids("dave", assignee="me") == []
    assert api.inbox_ids("dave") == []
    assert api.inbox_ids("zed", assignee="me") == []
    assert api.inbox_ids("zed") == []
    # An operator may decide any of them, but none is addressed to them or unassigned
    assert api.inbox_ids("otto", assignee="me") == []
    assert len(api.inbox_ids("otto")) == 2
    # The owner sees their runs' approvals when listing everything they may read
    assert len(api.inbox_ids("owen")) == 2


def test_an_approval_without_assignees_is_in_the_inbox_of_those_who_may_decide(api: Api) -> None:
    run_id = api.submit({})
    drain(api.c)
    assert api.inbox_ids("otto", assignee="me") == [run_id]
    assert api.inbox_ids("alice", assignee="me") == []  # she may not decide it
    assert api.inbox_ids("vera", assignee="me") == []  # reading is not deciding
    assert api.inbox_ids("vera") == [run_id]
    assert api.decide("otto", run_id).json()["status"] == "running"


def test_the_inbox_drops_an_approval_once_decided(api: Api) -> None:
    run_id = api.submit(THREE)
    drain(api.c)
    # One approval short of the quorum: still pending, showing who approved
    api.decide("alice", run_id)
    (item,) = api.inbox("bob", assignee="me").json()["approvals"]
    assert [a["approver"] for a in item["approvals"]] == ["alice"]
    assert api.inbox_ids("alice", assignee="me") == [run_id]  # listed until the step is decided
    # The quorum met: gone for everyone
    api.decide("bob", run_id)
    assert api.inbox_ids("carol", assignee="me") == []
    assert api.inbox_ids("otto") == []


def test_a_paused_approval_leaves_the_inbox_until_resumed(api: Api) -> None:
    run_id = api.submit(THREE)
    drain(api.c)
    assert api.call("otto", "POST", f"/runs/{run_id}/pause").json()["status"] == "paused"
    assert api.inbox_ids("alice", assignee="me") == []  # it cannot be decided while paused
    api.call("otto", "POST", f"/runs/{run_id}/resume")
    assert api.inbox_ids("alice", assignee="me") == [run_id]


def test_the_inbox_pages_oldest_first(api: Api, clock: FakeClock) -> None:
    ids = []
    for _ in range(5):
        ids.append(api.submit(THREE))
        drain(api.c)
        clock.advance(1)
    api.submit({"assignees": ["dave"]})  # filtered out of alice's pages
    drain(api.c)
    first = api.inbox("alice", assignee="me", limit=2).json()
    assert [a["run_id"] for a in first["approvals"]] == ids[:2]
    # A decision between pages does not disturb the next one (even of the last item shown)
    api.decide("otto", ids[1])
    second = api.inbox("alice", assignee="me", limit=2, cursor=first["next_cursor"]).json()
    assert [a["run_id"] for a in second["approvals"]] == ids[2:4]
    third = api.inbox("alice", assignee="me", limit=2, cursor=second["next_cursor"]).json()
    assert [a["run_id"] for a in third["approvals"]] == ids[4:]
    assert third["next_cursor"] is None
    # A cursor is bound to its listing
    other = api.inbox("bob", assignee="me", limit=2, cursor=first["next_cursor"])
    assert other.status_code == 400
    assert other.json()["error"]["code"] == "invalid_cursor"


def test_another_users_inbox_needs_the_tenant_read_permission(api: Api) -> None:
    run_id = api.submit(THREE)
    api.submit({})  # unassigned: not alice's assignment
    drain(api.c)
    refused = api.inbox("dave", assignee="alice")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert api.inbox_ids("vera", assignee="alice") == [run_id]
    assert api.inbox_ids("alice", assignee="alice") == [run_id]  # one's own id is `me`


def test_the_inbox_refuses_what_it_cannot_list_naming_the_field(api: Api) -> None:
    for params, field in (
        ({"status": "approved"}, "status"),
        ({"assignee": "../x"}, "assignee"),
        ({"limit": 0}, "limit"),
    ):
        response = api.inbox("alice", **params)
        assert response.status_code == 422, params
        assert response.json()["error"]["details"][0]["field"] == field


# ---- on DynamoDB (moto), through the real adapter -------------------------------------------


class Recording:
    """A DynamoDB client that records the operations it is asked for."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return attribute(*args, **kwargs)

        return call


def test_the_inbox_on_dynamodb_is_a_query_of_the_sparse_index(
    aws_env: dict[str, str], clock: FakeClock
) -> None:
    # Given the stack's tables from template.yaml, and runs of two tenants
    dynamodb = Recording(AtomicRequests(boto3.client("dynamodb")))
    c = Parts(
        settings_from(aws_env, auth_mode="multi_user"),
        clock=clock,
        dynamodb=dynamodb,
        sqs=boto3.client("sqs"),
    )
    indexes = boto3.client("dynamodb").describe_table(TableName=c.settings.runs_table)["Table"]
    approvals_index = {i["IndexName"]: i for i in indexes["GlobalSecondaryIndexes"]}["approvals"]
    assert [k["AttributeName"] for k in approvals_index["KeySchema"]] == [
        "approval_tenant",
        "approval_requested",
    ]
    with APPS.lend(c) as app, TestClient(app, raise_server_exceptions=False) as client:
        api = Api(c, client)
        waiting = []
        for _ in range(3):
            waiting.append(api.submit(THREE))
            drain(c)  # requested when the dispatcher reaches the step
            clock.advance(1)
        api.submit({"assignees": ["dave"]})
        unassigned = api.submit({})
        api.call("owen", "POST", "/runs", {"definition": log_definition("no approval here")})
        api.submit({"assignees": ["alice"]}, who="zed")  # another tenant's "alice"
        drain(c)
        dynamodb.calls.clear()
        # When alice pages through her inbox
        first = api.inbox("alice", assignee="me", limit=2).json()
        rest = api.inbox("alice", assignee="me", limit=2, cursor=first["next_cursor"]).json()
        # Then: hers only, oldest first, from Queries of the index (no scan, no run item read)
        assert [a["run_id"] for a in first["approvals"] + rest["approvals"]] == waiting
        assert rest["next_cursor"] is None
        on_runs = {
            (name, kwargs.get("IndexName"))
            for name, kwargs in dynamodb.calls
            if kwargs.get("TableName") == c.settings.runs_table
        }
        assert on_runs == {("query", "approvals")}
        others = {(name, kwargs.get("TableName")) for name, kwargs in dynamodb.calls} - {
            ("query", c.settings.runs_table)
        }
        assert others == {("get_item", c.settings.api_keys_table)}  # the caller's key
        assert api.inbox_ids("otto", assignee="me") == [unassigned]
        assert api.inbox_ids("zed", assignee="me") == []  # t2's is not addressed to zed
        assert len(api.inbox_ids("zed")) == 1
        # The index holds only the runs that wait: a decision removes its entry
        api.decide("alice", waiting[0])
        assert api.decide("bob", waiting[0]).json()["status"] == "running"
        assert api.inbox_ids("carol", assignee="me") == waiting[1:]
        drain(c)
        entries = [
            entry
            for partition in listing_partitions("t1")
            for entry in boto3.client("dynamodb").query(
                TableName=c.settings.runs_table,
                IndexName="approvals",
                KeyConditionExpression="approval_tenant = :t",
                ExpressionAttributeValues={":t": {"S": partition}},
            )["Items"]
        ]
        assert len(entries) == 4  # waiting[1:], dave's and the unassigned one
