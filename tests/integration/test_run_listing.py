"""GET /runs: a tenant's runs newest first, filtered, in cursor pages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, drain, log_definition
from workflows.adapters.run_index import listing_shard
from workflows.adapters.run_items import run_key
from workflows.api.auth import authenticate
from workflows.domain.principal import ALL_PERMISSIONS, RUNS_CONTROL, Principal
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


BASE = "/api/v1/workflows"
RUNS = f"{BASE}/runs"


def _submit(client: TestClient, clock: FakeClock, n: int = 1, **body: Any) -> list[str]:
    ids = []
    for _ in range(n):
        response = client.post(RUNS, json={"definition": log_definition("m"), **body})
        assert response.status_code == 202, response.text
        ids.append(response.json()["run_id"])
        clock.advance(1)
    return ids


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [run["run_id"] for run in response.json()["runs"]]


def _error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def test_lists_runs_newest_first(client: TestClient, clock: FakeClock) -> None:
    ids = _submit(client, clock, 3)

    response = client.get(RUNS)

    assert _ids(response) == list(reversed(ids))
    assert response.json()["next_cursor"] is None
    assert response.json()["runs"][0]["status"] == "queued"


def test_pages_with_a_cursor(client: TestClient, clock: FakeClock) -> None:
    ids = _submit(client, clock, 5)

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(RUNS, params=params).json()
        seen += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(ids))


def test_filters_by_status(client: TestClient, clock: FakeClock, container: Parts) -> None:
    done = _submit(client, clock, 2)
    drain(container)
    queued = _submit(client, clock, 1)

    assert _ids(client.get(RUNS, params={"status": "succeeded"})) == list(reversed(done))
    assert _ids(client.get(RUNS, params={"status": "queued"})) == queued
    both = client.get(RUNS, params=[("status", "queued"), ("status", "succeeded")])
    assert len(_ids(both)) == 3


def test_status_filter_pages_are_filled(client: TestClient, clock: FakeClock, container: Parts) -> None:
    done = _submit(client, clock, 3)
    drain(container)
    _submit(client, clock, 4)

    page = client.get(RUNS, params={"status": "succeeded", "limit": 2}).json()
    rest = client.get(RUNS, params={"status": "succeeded", "limit": 2, "cursor": page["next_cursor"]}).json()

    assert [r["run_id"] for r in page["runs"]] == [done[2], done[1]]
    assert [r["run_id"] for r in rest["runs"]] == [done[0]]


def test_a_run_stored_before_the_listing_was_sharded_is_listed_in_its_place(
    client: TestClient, clock: FakeClock, container: Parts
) -> None:
    # Given three runs, the middle one keyed in the listing as runs were before it was sharded
    ids = _submit(client, clock, 3)
    key = run_key("default", ids[1])
    container.dynamodb.update_item(
        TableName=container.settings.runs_table,
        Key=key,
        UpdateExpression="SET gsi1pk = :tenant",
        ExpressionAttributeValues={":tenant": {"S": "default"}},
    )

    # When they are paged one at a time
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        page = client.get(RUNS, params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        seen += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    # Then it is listed in its place, and its next commit moves it to its shard
    assert seen == list(reversed(ids))
    drain(container)
    item = container.dynamodb.get_item(TableName=container.settings.runs_table, Key=key)["Item"]
    assert item["gsi1pk"]["S"] == f"default#{listing_shard(ids[1])}"
    assert _ids(client.get(RUNS)) == list(reversed(ids))


def test_unknown_status_is_422(client: TestClient) -> None:
    response = client.get(RUNS, params={"status": "sleeping"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "status[0]"


def test_filters_by_workflow(client: TestClient, clock: FakeClock) -> None:
    wid = client.post(BASE, json=log_definition("m")).json()["workflow_id"]
    _submit(client, clock, 2)
    saved = [client.post(f"{BASE}/{wid}/runs", json={}).json()["run_id"] for _ in range(2)]

    assert set(_ids(client.get(RUNS, params={"workflow_id": wid}))) == set(saved)
    assert _ids(client.get(RUNS, params={"workflow_id": "00000000-0000-4000-8000-000000000000"})) == []


def test_filters_by_creation_time(client: TestClient, clock: FakeClock) -> None:
    # Given runs at 12:00:00, :01, :02, :03
    ids = _submit(client, clock, 4)

    after = _ids(client.get(RUNS, params={"created_after": "2026-01-01T12:00:01Z"}))
    before = _ids(client.get(RUNS, params={"created_before": "2026-01-01T12:00:02Z"}))
    between = _ids(
        client.get(
            RUNS,
            params={"created_after": "2026-01-01T12:00:00Z", "created_before": "2026-01-01T12:00:03+00:00"},
        )
    )

    # Then both bounds are exclusive
    assert after == [ids[3], ids[2]]
    assert before == [ids[1], ids[0]]
    assert between == [ids[2], ids[1]]


def test_time_without_offset_is_utc(client: TestClient, clock: FakeClock) -> None:
    ids = _submit(client, clock, 2)
    assert _ids(client.get(RUNS, params={"created_after": "2026-01-01T12:00:00.500"})) == [ids[1]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"created_after": "yesterday"}, "created_after"),
        (
            {"created_after": "2026-01-02T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
            "created_before",
        ),
        ({"limit": 201}, "limit"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_filters_are_422(client: TestClient, params: dict[str, Any], field: str) -> None:
    response = client.get(RUNS, params=params)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == field


def _cursor(client: TestClient, clock: FakeClock) -> str:
    _submit(client, clock, 3)
    cursor: str = client.get(RUNS, params={"limit": 1}).json()["next_cursor"]
    return cursor


def _tamper(cursor: str, **key: str) -> str:
    document = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    document["k"].update(key)
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGpzb24", "W10", "eyJ2IjoxLCJxIjoieCIsImsiOnt9fQ"])
def test_malformed_cursor_is_400(client: TestClient, cursor: str) -> None:
    response = client.get(RUNS, params={"cursor": cursor})
    assert response.status_code == 400
    assert _error_code(response) == "invalid_cursor"


def test_cursor_pointing_into_another_tenant_is_400(client: TestClient, clock: FakeClock) -> None:
    cursor = _cursor(client, clock)
    response = client.get(RUNS, params={"cursor": _tamper(cursor, gsi1pk="other", pk="other#x")})
    assert response.status_code == 400
    assert _error_code(response) == "invalid_cursor"


def test_cursor_with_extra_key_fields_is_400(client: TestClient, clock: FakeClock) -> None:
    cursor = _cursor(client, clock)
    response = client.get(RUNS, params={"cursor": _tamper(cursor, extra="x")})
    assert response.status_code == 400


def test_cursor_used_with_other_filters_is_400(client: TestClient, clock: FakeClock) -> None:
    cursor = _cursor(client, clock)
    response = client.get(RUNS, params={"cursor": cursor, "status": "queued"})
    assert response.status_code == 400
    assert _error_code(response) == "invalid_cursor"


def test_other_tenants_runs_are_not_listed(client: TestClient, clock: FakeClock) -> None:
    cursor = _cursor(client, clock)
    app: Any = client.app
    app.dependency_overrides[authenticate] = lambda: Principal("other", "u", ALL_PERMISSIONS)

    assert _ids(client.get(RUNS)) == []
    # A cursor issued to the first tenant does not work for the second.
    assert client.get(RUNS, params={"cursor": cursor}).status_code == 400


def test_listing_without_the_read_permission_shows_only_the_callers_own_runs(client: TestClient) -> None:
    admins = client.post(RUNS, json={"definition": log_definition("hi"), "inputs": {}}).json()["run_id"]
    app: Any = client.app
    app.dependency_overrides[authenticate] = lambda: Principal("default", "u", frozenset({RUNS_CONTROL}))

    response = client.get(RUNS)

    assert response.status_code == 200
    assert admins not in _ids(response)
