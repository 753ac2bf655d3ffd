"""Idempotency-Key on run submissions: one run per key and body, replayed for 24 hours."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, log_definition, make_container
from workflows.adapters.idempotency import IdempotencyRepository
from workflows.adapters.run_index import listing_partitions
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.errors import IdempotencyInProgress
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
ADHOC = {"definition": log_definition("Hello {{ inputs.name }}"), "inputs": {"name": "Ada"}}


def _count_runs(container: Parts, tenant_id: str = "default") -> int:
    """The tenant's runs in the `by-tenant` index, every shard of it."""
    return sum(
        int(
            container.dynamodb.query(
                TableName=container.settings.runs_table,
                IndexName="by-tenant",
                KeyConditionExpression="gsi1pk = :t",
                ExpressionAttributeValues={":t": {"S": partition}},
                Select="COUNT",
            )["Count"]
        )
        for partition in listing_partitions(tenant_id)
    )


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

    # Then exactly one run exists and every answer is a 202 naming it
    assert _count_runs(container) == 1
    assert [r.status_code for r in responses] == [202] * 10
    assert len({r.json()["run_id"] for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1


def test_parallel_service_calls_create_exactly_one_run(container: Parts) -> None:
    principal = Principal("t1", "u", ALL_PERMISSIONS)
    service = container.run_service
    barrier = threading.Barrier(10)
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()
    from workflows.domain.definition import WorkflowDefinition

    definition = WorkflowDefinition.model_validate(log_definition("m"))

    def call() -> None:
        barrier.wait()
        run, replayed = service.submit_once(
            principal, "key", {"body": 1}, lambda: service.submit(principal, definition, {})
        )
        with lock:
            results.append((run.run_id, replayed))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 10
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(1 for _, replayed in results if not replayed) == 1
    assert _count_runs(container, "t1") == 1


def test_a_request_finding_a_claim_in_progress_creates_the_run_it_names(container: Parts) -> None:
    # Given a claim whose holder named its run and has not stored it (still busy, or dead)
    principal = Principal("t1", "u", ALL_PERMISSIONS)
    container.idempotency.claim("t1", "u", "key", _fingerprint({"body": 1}), "named-run")
    from workflows.domain.definition import WorkflowDefinition

    definition = WorkflowDefinition.model_validate(log_definition("m"))
    service = container.run_service

    # When another request with the same key and body arrives, at once (no lease to wait on)
    run, replayed = service.submit_once(
        principal, "key", {"body": 1}, lambda: service.submit(principal, definition, {})
    )

    # Then it creates that run, and the claim is completed with it
    assert (run.run_id, replayed) == ("named-run", False)
    assert _count_runs(container, "t1") == 1
    record = container.idempotency.get("t1", "u", "key")
    assert record is not None
    assert (record.status, record.run_id) == ("completed", "named-run")


def test_a_claim_stored_before_claims_named_their_run_holds_until_its_lease(
    container: Parts, clock: FakeClock
) -> None:
    # Given an in-progress claim in the older form: a lease, no run id
    repository = IdempotencyRepository(container.dynamodb, container.settings.idempotency_table, clock=clock)
    now = clock()
    container.dynamodb.put_item(
        TableName=container.settings.idempotency_table,
        Item={
            "id": {"S": repository.record_id("t1", "u", "key")},
            "tenant_id": {"S": "t1"},
            "user_id": {"S": "u"},
            "status": {"S": "in_progress"},
            "body_hash": {"S": _fingerprint({"body": 1})},
            "token": {"S": "old"},
            "expiration": {"N": str(int(now.timestamp()) + 86400)},
            "lease_expires_at": {"N": str(int(now.timestamp() * 1000) + 60_000)},
        },
    )
    principal = Principal("t1", "u", ALL_PERMISSIONS)

    # Then a request with the key is told to retry while the lease holds
    with pytest.raises(IdempotencyInProgress):
        container.run_service.submit_once(principal, "key", {"body": 1}, _never)
    # And takes the claim over once it ran out
    clock.advance(61)
    claim = repository.claim("t1", "u", "key", _fingerprint({"body": 1}), "new-run")
    assert (claim.won, claim.run_id) == (True, "new-run")


def test_a_second_claim_gets_the_run_id_the_first_named(container: Parts, clock: FakeClock) -> None:
    repository = IdempotencyRepository(container.dynamodb, container.settings.idempotency_table, clock=clock)
    first = repository.claim("t1", "u", "key", "hash", "run-a")
    second = repository.claim("t1", "u", "key", "hash", "run-b")

    assert (first.won, first.run_id) == (True, "run-a")
    assert (second.won, second.run_id) == (False, "run-a")


def test_completion_and_release_act_only_on_the_claim_naming_that_run(
    container: Parts, clock: FakeClock
) -> None:
    repository = IdempotencyRepository(container.dynamodb, container.settings.idempotency_table, clock=clock)
    repository.claim("t1", "u", "key", "hash", "run-a")

    repository.complete("t1", "u", "key", "hash", "run-b")
    repository.release("t1", "u", "key", "run-b")
    record = repository.get("t1", "u", "key")
    assert record is not None
    assert (record.status, record.run_id) == ("in_progress", "run-a")

    repository.complete("t1", "u", "key", "hash", "run-a")
    repository.release("t1", "u", "key", "run-a")  # a completed claim is never released
    record = repository.get("t1", "u", "key")
    assert record is not None
    assert (record.status, record.run_id) == ("completed", "run-a")


def test_completing_a_released_claim_writes_it_again(container: Parts, clock: FakeClock) -> None:
    # Given a claim released by a refused request while a racing one stored its run
    repository = IdempotencyRepository(container.dynamodb, container.settings.idempotency_table, clock=clock)
    repository.claim("t1", "u", "key", "hash", "run-a")
    repository.release("t1", "u", "key", "run-a")

    # When the racing request completes it
    repository.complete("t1", "u", "key", "hash", "run-a")

    # Then the key stands for that run again, and a later claim gets it
    claim = repository.claim("t1", "u", "key", "hash", "run-b")
    assert (claim.won, claim.run_id) == (False, "run-a")
    assert claim.existing is not None
    assert claim.existing.status == "completed"


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
