"""Idempotency-Key on run submissions: one run per key and body, replayed for 24 hours."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, log_definition, make_container
from workflows.adapters.idempotency import IdempotencyRepository
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.errors import IdempotencyInProgress
from workflows.roots.parts import Parts
from workflows.services import runs as runs_service


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


BASE = "/api/v1/workflows"
RUNS = f"{BASE}/runs"
ADHOC = {"definition": log_definition("Hello {{ inputs.name }}"), "inputs": {"name": "Ada"}}


def _count_runs(container: Parts, tenant_id: str = "default") -> int:
    response = container.dynamodb.query(
        TableName=container.settings.runs_table,
        IndexName="by-tenant",
        KeyConditionExpression="gsi1pk = :t",
        ExpressionAttributeValues={":t": {"S": tenant_id}},
        Select="COUNT",
    )
    return int(response["Count"])


def _post(client: TestClient, key: str, body: dict[str, Any] = ADHOC, url: str = RUNS) -> Any:
    return client.post(url, json=body, headers={"Idempotency-Key": key})


def test_same_key_and_body_returns_the_same_run(client: TestClient, container: Parts) -> None:
    first = _post(client, "k1")
    second = _post(client, "k1")

    assert first.status_code == second.status_code == 202
    assert second.json()["run_id"] == first.json()["run_id"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert _count_runs(container) == 1


def test_body_key_order_does_not_matter(client: TestClient, container: Parts) -> None:
    first = _post(client, "k1", {"inputs": {"name": "Ada"}, "definition": ADHOC["definition"]})
    second = _post(client, "k1")
    assert second.json()["run_id"] == first.json()["run_id"]


def test_same_key_with_another_body_is_409(client: TestClient, container: Parts) -> None:
    _post(client, "k1")

    response = _post(client, "k1", {**ADHOC, "inputs": {"name": "Bo"}})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert _count_runs(container) == 1


def test_same_key_on_another_route_is_409(client: TestClient) -> None:
    wid = client.post(BASE, json=log_definition("m")).json()["workflow_id"]
    _post(client, "k1")

    response = _post(client, "k1", {"inputs": {"name": "Ada"}}, url=f"{BASE}/{wid}/runs")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"


def test_different_keys_create_different_runs(client: TestClient, container: Parts) -> None:
    assert _post(client, "k1").json()["run_id"] != _post(client, "k2").json()["run_id"]
    assert _count_runs(container) == 2


def test_saved_runs_are_idempotent_too(client: TestClient, container: Parts) -> None:
    wid = client.post(BASE, json=log_definition("m")).json()["workflow_id"]
    url = f"{BASE}/{wid}/runs"

    first = _post(client, "k1", {"inputs": {}}, url=url)
    second = _post(client, "k1", {"inputs": {}}, url=url)

    assert first.status_code == second.status_code == 202
    assert second.json()["run_id"] == first.json()["run_id"]
    assert _count_runs(container) == 1


def test_the_key_expires_after_24_hours(client: TestClient, container: Parts, clock: FakeClock) -> None:
    first = _post(client, "k1")
    clock.advance(24 * 3600 + 1)

    second = _post(client, "k1")

    assert second.status_code == 202
    assert second.json()["run_id"] != first.json()["run_id"]
    assert "idempotent-replayed" not in second.headers


def test_the_record_expires_with_ttl(client: TestClient, container: Parts, clock: FakeClock) -> None:
    _post(client, "k1")
    item = container.dynamodb.get_item(
        TableName=container.settings.idempotency_table,
        Key={"id": {"S": IdempotencyRepository.record_id("default", "admin", "k1")}},
    )["Item"]
    assert int(item["expiration"]["N"]) == int(clock().timestamp()) + 24 * 3600
    assert item["status"]["S"] == "completed"


def test_a_failed_submission_frees_the_key(client: TestClient, container: Parts) -> None:
    bad = {"definition": {"name": "x", "steps": [{"id": "a", "type": "teleport"}]}}

    assert _post(client, "k1", bad).status_code == 422
    assert _post(client, "k1", bad).status_code == 422  # not 409: the failure was not recorded
    assert _post(client, "k1").status_code == 202


@pytest.mark.parametrize("key", [b"", b"x" * 256, "naïve".encode(), b"tab\there"])
def test_bad_keys_are_422(client: TestClient, key: bytes) -> None:
    response = client.post(RUNS, json=ADHOC, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"


def test_parallel_requests_with_one_key_create_exactly_one_run(client: TestClient, container: Parts) -> None:
    # Given ten clients sending the same request with the same key at the same moment
    barrier = threading.Barrier(10)
    responses: list[Any] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        response = _post(client, "shared-key")
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one run exists and every answer names it (or says it is still in progress)
    assert _count_runs(container) == 1
    accepted = [r for r in responses if r.status_code == 202]
    others = [r for r in responses if r.status_code != 202]
    assert accepted
    assert len({r.json()["run_id"] for r in accepted}) == 1
    assert all(r.json()["error"]["code"] == "idempotency_in_progress" for r in others)
    assert sum(1 for r in accepted if "idempotent-replayed" not in r.headers) == 1


def test_parallel_service_calls_create_exactly_one_run(container: Parts) -> None:
    principal = Principal("t1", "u", ALL_PERMISSIONS)
    service = container.run_service
    barrier = threading.Barrier(10)
    created: list[str] = []
    results: list[str] = []
    lock = threading.Lock()
    from workflows.domain.definition import WorkflowDefinition

    definition = WorkflowDefinition.model_validate(log_definition("m"))

    def submit() -> Any:
        run = service.submit(principal, definition, {})
        with lock:
            created.append(run.run_id)
        return run

    def call() -> None:
        barrier.wait()
        run, _ = service.submit_once(principal, "key", {"body": 1}, submit)
        with lock:
            results.append(run.run_id)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(created) == 1
    assert results == created * 10
    assert _count_runs(container, "t1") == 1


def test_a_request_waiting_too_long_gets_in_progress(
    container: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claim held by a request that has not finished (and whose lease has not run out)
    monkeypatch.setattr(runs_service, "IDEMPOTENCY_POLL_SECONDS", (0.01, 0.01))
    principal = Principal("t1", "u", ALL_PERMISSIONS)
    container.idempotency.claim("t1", "u", "key", _fingerprint({"body": 1}))

    # When another request with the same key and body arrives
    with pytest.raises(IdempotencyInProgress):
        container.run_service.submit_once(principal, "key", {"body": 1}, _never)


def test_a_claim_whose_holder_died_is_taken_over(
    container: Parts, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_service, "IDEMPOTENCY_POLL_SECONDS", ())
    principal = Principal("t1", "u", ALL_PERMISSIONS)
    container.idempotency.claim("t1", "u", "key", _fingerprint({"body": 1}))
    clock.advance(61)  # past the claim's lease
    from workflows.domain.definition import WorkflowDefinition

    definition = WorkflowDefinition.model_validate(log_definition("m"))
    service = container.run_service

    _, replayed = service.submit_once(
        principal, "key", {"body": 1}, lambda: service.submit(principal, definition, {})
    )

    assert not replayed
    assert _count_runs(container, "t1") == 1


def _fingerprint(request: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _never() -> Any:
    raise AssertionError("must not run")


def test_a_key_is_scoped_to_its_caller(aws_env: dict[str, str], clock: FakeClock) -> None:
    # Given two users of one tenant who happen to pick the same key
    from workflows.api import deps
    from workflows.api.app import create_app

    c = make_container(aws_env, clock, auth_mode="multi_user", disable_quotas=True)
    alice, _ = c.api_keys.create("t1", "alice", ["operator"])
    bob, _ = c.api_keys.create("t1", "bob", ["operator"])
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    with TestClient(app, raise_server_exceptions=False) as client:
        first = client.post(RUNS, json=ADHOC, headers={"Idempotency-Key": "k1", "X-API-KEY": alice})
        # When the other user sends the same key, with the same or another body
        same = client.post(RUNS, json=ADHOC, headers={"Idempotency-Key": "k1", "X-API-KEY": bob})
        other = client.post(
            RUNS,
            json={**ADHOC, "inputs": {"name": "Bo"}},
            headers={"Idempotency-Key": "k2", "X-API-KEY": bob},
        )
    # Then each is a request of its own: no replay of someone else's run, no 409
    assert first.status_code == same.status_code == other.status_code == 202
    assert same.json()["run_id"] != first.json()["run_id"]
    assert "idempotent-replayed" not in same.headers
