"""A commit is one conditional write of the run item; its events are copied to the events table
after it. Readers never miss a committed event, and a copy that did not happen (throttled, or the
process killed in between) is made by the next writer before the run item moves on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from tests.conftest import AtomicRequests, FakeClock, api_client, drain, log_definition, settings_from
from tests.faults import Faulty, one_step_left
from workflows.adapters.run_items import run_pk, stored_events
from workflows.adapters.runs import RunRepository
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import EventType, NewEvent, RunStatus
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


def test_a_commit_whose_events_could_not_be_copied_still_shows_them_and_the_next_writer_copies_them(
    client: TestClient, container: Parts, dynamodb: Faulty
) -> None:
    run_id = submit(client, "a", "b", "c")

    # When the events table throttles every copy while the first step commits
    refuse_event_copies(dynamodb, container, throttled())
    outcome = container.engine.process(
        AdvanceMessage(tenant_id="default", run_id=run_id, version=1), one_step_left
    )
    dynamodb.heal()

    # Then the step is committed, and a reader sees all of its events though none is stored
    assert outcome.action == "advanced"
    assert dynamodb.faults["put_item"] == 1
    run = container.runs.get("default", run_id)
    assert run.steps_executed == 1
    assert stored_seqs(container, run_id) == []
    page = api_seqs(client, run_id)
    assert [e["event_seq"] for e in page["events"]] == list(range(1, run.last_event_seq + 1))
    assert page["has_more"] is False
    assert page["next_since"] == run.last_event_seq

    # And the next commit stores them first: the events table ends gap-free, each event once
    drain(container)
    final = container.runs.get("default", run_id)
    assert final.status == RunStatus.SUCCEEDED
    assert stored_seqs(container, run_id) == list(range(1, final.last_event_seq + 1))
    page = api_seqs(client, run_id)
    assert [e["event_seq"] for e in page["events"]] == list(range(1, final.last_event_seq + 1))


def test_a_process_killed_between_the_commit_and_the_copy_loses_nothing(
    client: TestClient, container: Parts, dynamodb: Faulty, clock: FakeClock
) -> None:
    run_id = submit(client, "a", "b")
    refuse_event_copies(dynamodb, container, RuntimeError("the Lambda was killed"))
    with pytest.raises(RuntimeError):
        container.engine.process(AdvanceMessage(tenant_id="default", run_id=run_id, version=1), one_step_left)
    dynamodb.heal()
    committed = container.runs.get("default", run_id)
    assert committed.steps_executed == 1
    assert stored_seqs(container, run_id) == []

    # A fresh process (nothing remembered) appends an event: it first stores the commit it found
    fresh = RunRepository(
        container.dynamodb, container.settings.runs_table, container.settings.run_events_table
    )
    delivery = NewEvent(event_type=EventType.WEBHOOK_DELIVERY, payload={"attempt": 1})
    seqs = fresh.append_events("default", run_id, [delivery])  # as the DLQ worker appends
    assert seqs == [committed.last_event_seq + 1]
    assert stored_seqs(container, run_id) == list(range(1, committed.last_event_seq + 2))

    # The message, redelivered once the commit's grace period is over, finishes the run; the
    # history is whole and stored once
    clock.advance(61)
    drain(container)
    final = container.runs.get("default", run_id)
    assert final.status == RunStatus.SUCCEEDED
    assert stored_seqs(container, run_id) == list(range(1, final.last_event_seq + 1))


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
