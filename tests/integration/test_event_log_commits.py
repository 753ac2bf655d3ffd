"""A commit is one conditional write of the run item, which carries the events not yet in the
events table; a later commit copies them there, as one item, before the run item lets them go.
Readers never miss a committed event, and a copy that did not happen (throttled, or the process
killed in between) leaves the run item as it was, for the next try to copy them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from tests.commits import new_run, transition
from tests.conftest import AtomicRequests, FakeClock, api_client, drain, log_definition, settings_from
from tests.faults import Faulty, one_step_left
from workflows.adapters.run_items import run_pk, stored_events
from workflows.adapters.runs import RunRepository
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import EventType, NewEvent, RunStatus
from workflows.errors import Throttled
from workflows.roots.parts import Parts


@pytest.fixture
def dynamodb() -> Faulty:
    """The emulator's DynamoDB client, which a test can make refuse the copies of events."""
    return Faulty(AtomicRequests(boto3.client("dynamodb")))


@pytest.fixture
def container(aws_env: dict[str, str], clock: FakeClock, dynamodb: Faulty) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return Parts(
        settings_from(aws_env), clock=clock, dynamodb=dynamodb, sqs=boto3.client("sqs"), s3=boto3.client("s3")
    )


@pytest.fixture
def client(container: Parts) -> Iterator[TestClient]:
    with api_client(container) as test_client:
        yield test_client


BASE = "/api/v1/workflows"


def refuse_event_copies(dynamodb: Faulty, container: Parts, error: Exception) -> None:
    """From now on every write to the events table fails with `error` (until `heal`)."""
    events_table = container.settings.run_events_table
    dynamodb.fail("put_item", error, times=None, when=lambda **kwargs: kwargs["TableName"] == events_table)


def throttled() -> ClientError:
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem"
    )


def stored_seqs(container: Parts, run_id: str) -> list[int]:
    """Every event sequence number in the events table, in key order, duplicates kept."""
    response = container.dynamodb.query(
        TableName=container.settings.run_events_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": run_pk("default", run_id)}},
    )
    return [event.event_seq for item in response["Items"] for event in stored_events(item)]


def api_seqs(client: TestClient, run_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{BASE}/runs/{run_id}/events", params=params)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def submit(client: TestClient, *messages: str) -> str:
    response = client.post(f"{BASE}/runs", json={"definition": log_definition(*messages)})
    assert response.status_code == 202
    return str(response.json()["run_id"])


def test_events_ride_in_the_run_item_until_a_later_commit_copies_them(
    client: TestClient, container: Parts, dynamodb: Faulty
) -> None:
    run_id = submit(client, "a", "b", "c")
    drain(container)
    final = container.runs.get("default", run_id)
    assert final.status == RunStatus.SUCCEEDED

    # Fewer copies than commits: the latest events ride in the run item, the earlier are stored
    stored = stored_seqs(container, run_id)
    carried = [event.event_seq for event in final.latest_events]
    assert carried
    assert carried == list(range(carried[0], final.last_event_seq + 1))
    assert sorted(set(stored) | set(carried)) == list(range(1, final.last_event_seq + 1))
    # A reader sees every event once, in order, wherever it is kept
    page = api_seqs(client, run_id)
    assert [e["event_seq"] for e in page["events"]] == list(range(1, final.last_event_seq + 1))
    assert page["has_more"] is False


@pytest.mark.parametrize(
    "error", [throttled(), RuntimeError("the Lambda was killed")], ids=["throttled", "killed"]
)
def test_a_commit_that_could_not_copy_the_carried_events_writes_nothing_and_the_next_try_does(
    container: Parts, dynamodb: Faulty, error: Exception
) -> None:
    settings = container.settings
    # A repository that copies the carried events at every commit.
    runs = RunRepository(
        container.dynamodb, settings.runs_table, settings.run_events_table, carry_item_bytes=0
    )
    client_run = new_run(container.runs, "run-copies", "default")
    first = transition(runs, client_run, {}, [_delivery(1), _delivery(2)])
    assert stored_seqs(container, first.run_id) == []  # they ride in the run item

    refuse_event_copies(dynamodb, container, error)
    with pytest.raises((Throttled, RuntimeError)):
        transition(runs, first, {}, [_delivery(3)])
    dynamodb.heal()
    # Nothing was written: the run item still carries the first commit's events
    unchanged = container.runs.get("default", first.run_id)
    assert (unchanged.version, [e.event_seq for e in unchanged.latest_events]) == (first.version, [1, 2])
    page = container.runs.list_events("default", first.run_id)
    assert [e.event_seq for e in page.events] == [1, 2]

    # A fresh process (nothing remembered) commits: it copies them first
    fresh = RunRepository(
        container.dynamodb, settings.runs_table, settings.run_events_table, carry_item_bytes=0
    )
    second = transition(fresh, unchanged, {}, [_delivery(3)])
    assert stored_seqs(container, first.run_id) == [1, 2]
    assert [e.event_seq for e in second.latest_events] == [3]
    page = container.runs.list_events("default", first.run_id)
    assert [e.event_seq for e in page.events] == [1, 2, 3]


def _delivery(attempt: int) -> NewEvent:
    return NewEvent(event_type=EventType.WEBHOOK_DELIVERY, payload={"attempt": attempt})


def test_a_page_that_ends_before_the_latest_commit_says_there_is_more(
    client: TestClient, container: Parts, dynamodb: Faulty
) -> None:
    run_id = submit(client, "a", "b")
    refuse_event_copies(dynamodb, container, throttled())
    container.engine.process(AdvanceMessage(tenant_id="default", run_id=run_id, version=1), one_step_left)
    dynamodb.heal()
    last = container.runs.get("default", run_id).last_event_seq
    assert last >= 2

    # Page by one event at a time: every committed event once, in order, then the end
    seen: list[int] = []
    since = 0
    while True:
        page = api_seqs(client, run_id, since=since, limit=1)
        seen += [e["event_seq"] for e in page["events"]]
        since = page["next_since"]
        if not page["has_more"]:
            break
    assert seen == list(range(1, last + 1))
