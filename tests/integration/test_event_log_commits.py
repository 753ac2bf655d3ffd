"""A commit is one conditional write of the run item; its events are copied to the events table
after it. Readers never miss a committed event, and a copy that did not happen (throttled, or the
process killed in between) is made by the next writer before the run item moves on."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, drain, log_definition
from workflows.adapters.runs import RunRepository, run_pk, stored_events
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import EventType, NewEvent, RunStatus
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


BASE = "/api/v1/workflows"


class EventCopiesFail:
    """The DynamoDB client, except that writes to the events table fail with `error`."""

    def __init__(self, client: Any, events_table: str, error: Exception) -> None:
        self._client = client
        self._events_table = events_table
        self._error = error
        self.refused = 0

    def put_item(self, **kwargs: Any) -> Any:
        if kwargs["TableName"] == self._events_table:
            self.refused += 1
            raise self._error
        return self._client.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


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
    client: TestClient, container: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    container.engine._max_inline = 1
    run_id = submit(client, "a", "b", "c")
    real = container.runs._client
    faulty = EventCopiesFail(real, container.settings.run_events_table, throttled())

    # When the events table throttles every copy while the first step commits
    monkeypatch.setattr(container.runs, "_client", faulty)
    outcome = container.engine.process(AdvanceMessage(tenant_id="default", run_id=run_id, version=1))
    monkeypatch.setattr(container.runs, "_client", real)

    # Then the step is committed, and a reader sees all of its events though none is stored
    assert outcome.action == "advanced"
    assert faulty.refused == 1
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
    client: TestClient, container: Parts, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    container.engine._max_inline = 1
    run_id = submit(client, "a", "b")
    real = container.runs._client
    faulty = EventCopiesFail(real, container.settings.run_events_table, RuntimeError("the Lambda was killed"))
    monkeypatch.setattr(container.runs, "_client", faulty)
    with pytest.raises(RuntimeError):
        container.engine.process(AdvanceMessage(tenant_id="default", run_id=run_id, version=1))
    monkeypatch.setattr(container.runs, "_client", real)
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
    client: TestClient, container: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    container.engine._max_inline = 1
    run_id = submit(client, "a", "b")
    real = container.runs._client
    monkeypatch.setattr(
        container.runs, "_client", EventCopiesFail(real, container.settings.run_events_table, throttled())
    )
    container.engine.process(AdvanceMessage(tenant_id="default", run_id=run_id, version=1))
    monkeypatch.setattr(container.runs, "_client", real)
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
