"""Paging a run's events costs the page, not the history: one Query reading `limit` items.

Histories are written straight into the events table (the item shape the run repository writes,
run_items.events_item), then one page is fetched through the API while every DynamoDB request
is counted. The tests only read: the histories (100, 1,000 and 10,000 events) are written once,
into one account the module shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, api_client, log_definition, moto_account, moto_parts
from workflows.adapters.run_items import events_item, run_pk
from workflows.domain.run import RunEvent
from workflows.roots.parts import Parts

# The module's tests share one account, so they share one worker.
pytestmark = pytest.mark.xdist_group("event-paging-cost")

BASE = "/api/v1/workflows"
EVENT_TYPES = ("step_started", "step_completed")


@dataclass
class Reads:
    requests: dict[str, int] = field(default_factory=dict)
    items_read: int = 0
    items_returned: int = 0

    def wrap(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            response = call(*args, **kwargs)
            self.requests[operation] = self.requests.get(operation, 0) + 1
            if operation == "query":
                self.items_read += int(response.get("ScannedCount", 0))
                self.items_returned += int(response.get("Count", 0))
            else:
                self.items_read += 1 if "Item" in response else 0
            return response

        return counted


def new_run(client: TestClient) -> str:
    """A queued run (never dispatched, so it writes no events of its own)."""
    response = client.post(f"{BASE}/runs", json={"definition": log_definition("x")})
    assert response.status_code == 202
    return str(response.json()["run_id"])


def write_history(container: Parts, run_id: str, size: int) -> None:
    """`size` events, seq 1..size, alternating types, two per commit (as a step's
    step_started + step_completed are); 25 items per BatchWriteItem. The run item counts them."""
    table = container.settings.run_events_table
    pk = run_pk("default", run_id)
    events = [
        RunEvent(
            event_seq=seq,
            event_type=EVENT_TYPES[seq % 2],
            payload={"n": seq},
            step_id="s1",
            created_at="2026-01-01T12:00:00.000Z",
        )
        for seq in range(1, size + 1)
    ]
    items = [events_item(pk, events[i : i + 2], expires_at=1_800_000_000) for i in range(0, size, 2)]
    for start in range(0, len(items), 25):
        chunk = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        response = container.dynamodb.batch_write_item(RequestItems={table: chunk})
        assert not response.get("UnprocessedItems")
    container.dynamodb.update_item(
        TableName=container.settings.runs_table,
        Key={"pk": {"S": pk}, "sk": {"S": "RUN"}},
        UpdateExpression="SET last_event_seq = :n",
        ExpressionAttributeValues={":n": {"N": str(size)}},
    )


def read_page(
    client: TestClient, container: Parts, monkeypatch: pytest.MonkeyPatch, run_id: str, **params: Any
) -> tuple[dict[str, Any], Reads]:
    reads = Reads()
    with monkeypatch.context() as patch:
        for operation in ("query", "get_item", "scan"):
            patch.setattr(
                container.dynamodb, operation, reads.wrap(operation, getattr(container.dynamodb, operation))
            )
        response = client.get(f"{BASE}/runs/{run_id}/events", params=params)
    assert response.status_code == 200
    return response.json(), reads


@dataclass
class Histories:
    container: Parts
    client: TestClient
    runs: dict[int, str]  # events in the history -> the run's id


@pytest.fixture(scope="module")
def histories(stateful_template: dict[str, Any]) -> Iterator[Histories]:
    """One moto account for the module (these tests read the tables and queues themselves: they
    run on moto), with a run of each history size the tests page through."""
    with moto_account(stateful_template) as env:
        container = moto_parts(env, FakeClock())
        with api_client(container) as client:
            runs = {}
            for size in (100, 1_000, 10_000):
                runs[size] = new_run(client)
                write_history(container, runs[size], size)
            yield Histories(container, client, runs)


@pytest.fixture
def container(histories: Histories) -> Parts:
    return histories.container


@pytest.fixture
def client(histories: Histories) -> TestClient:
    return histories.client


@pytest.fixture
def history(histories: Histories) -> Callable[[int], str]:
    """The run whose history has `size` events."""
    return histories.runs.__getitem__


@pytest.mark.parametrize("since", [0, 5000, 5001, 9900])
def test_a_page_of_a_10000_event_run_reads_100_items_in_one_query(
    client: TestClient,
    container: Parts,
    monkeypatch: pytest.MonkeyPatch,
    history: Callable[[int], str],
    since: int,
) -> None:
    # Given
    run_id = history(10_000)
    # When
    page, reads = read_page(client, container, monkeypatch, run_id, since=since, limit=100)
    # Then: the page, from one Query that read about 50 commit items (plus the run's GetItem); a
    # page starting inside a commit drops that commit's earlier events
    assert [e["event_seq"] for e in page["events"]] == list(range(since + 1, since + 101))
    assert page["next_since"] == since + 100
    assert page["has_more"] is (since + 100 < 10_000)
    assert reads.requests == {"query": 1, "get_item": 1}
    # 100 events are 50 or 51 two-event commits, plus one ending within the margin
    assert reads.items_read - 1 == reads.items_returned <= 52


def test_page_cost_does_not_grow_with_history(
    client: TestClient,
    container: Parts,
    monkeypatch: pytest.MonkeyPatch,
    history: Callable[[int], str],
) -> None:
    # Given: runs with 100, 1,000 and 10,000 events
    costs = {}
    for size in (100, 1_000, 10_000):
        run_id = history(size)
        # When: the first page of each
        _, reads = read_page(client, container, monkeypatch, run_id, since=0, limit=100)
        costs[size] = (sum(reads.requests.values()), reads.items_read)
    # Then: the same requests, and the same items read but for the one commit past the
    # page's end that a 100-event history does not have
    assert {requests for requests, _ in costs.values()} == {2}
    assert costs[10_000] == costs[1_000]
    assert costs[100][1] == 50 + 1
    assert costs[10_000][1] / costs[100][1] <= 1.05


def test_the_last_page_of_a_long_history_says_it_is_the_last(
    client: TestClient,
    container: Parts,
    monkeypatch: pytest.MonkeyPatch,
    history: Callable[[int], str],
) -> None:
    run_id = history(1_000)
    page, reads = read_page(client, container, monkeypatch, run_id, since=950, limit=100)
    assert [e["event_seq"] for e in page["events"]] == list(range(951, 1001))
    assert page["has_more"] is False
    assert page["next_since"] == 1000
    assert reads.requests["query"] == 1
    assert reads.items_read == 25 + 1  # two events per stored commit


def test_a_types_filtered_page_reads_at_most_limit_items(
    client: TestClient,
    container: Parts,
    monkeypatch: pytest.MonkeyPatch,
    history: Callable[[int], str],
) -> None:
    # Given: half the events are step_completed
    run_id = history(10_000)
    # When
    page, reads = read_page(
        client, container, monkeypatch, run_id, since=5000, limit=100, types="step_completed"
    )
    # Then: one Query; it read no more than the limit and returned only the asked-for type
    assert reads.requests == {"query": 1, "get_item": 1}
    assert reads.items_read - 1 <= 100
    assert {e["event_type"] for e in page["events"]} == {"step_completed"}
    assert len(page["events"]) == 50
    assert page["next_since"] == 5100
    assert page["has_more"] is True
