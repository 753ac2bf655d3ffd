"""Submission quotas per user and the per-tenant limit on runs executing at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, log_definition, make_container, make_fake
from workflows.api import deps
from workflows.api.app import create_app
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import RunStatus
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
ADHOC = {"definition": log_definition("hi"), "inputs": {}}


def client_for(c: Parts) -> TestClient:
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def multi(clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user")


@pytest.fixture
def api(multi: Parts) -> Iterator[TestClient]:
    with client_for(multi) as client:
        client.headers["X-API-KEY"] = multi.api_keys.create("t1", "ada", ["viewer"])[0]
        yield client


def test_the_61st_submission_in_a_minute_answers_429_with_headers(api: TestClient, clock: FakeClock) -> None:
    clock.now = clock.now.replace(second=10)
    for _i in range(60):
        accepted = api.post(f"{P}/runs", json=ADHOC)
        assert accepted.status_code == 202, accepted.text
    assert accepted.headers["RateLimit-Limit"] == "60"
    assert accepted.headers["RateLimit-Remaining"] == "0"
    # When
    refused = api.post(f"{P}/runs", json=ADHOC)
    # Then
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.headers["Retry-After"] == "50"
    assert refused.headers["RateLimit-Limit"] == "60"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Reset"] == "50"
    # And the next minute has room again
    clock.advance(50)
    assert api.post(f"{P}/runs", json=ADHOC).status_code == 202


def test_quotas_are_per_user(api: TestClient, multi: Parts) -> None:
    for _ in range(60):
        api.post(f"{P}/runs", json=ADHOC)
    assert api.post(f"{P}/runs", json=ADHOC).status_code == 429
    other = multi.api_keys.create("t1", "bob", [])[0]
    assert api.post(f"{P}/runs", json=ADHOC, headers={"X-API-KEY": other}).status_code == 202


def test_the_daily_cap_refuses_and_gives_the_minute_back(clock: FakeClock) -> None:
    c = make_fake(clock, auth_mode="multi_user", quota_daily_per_user=3)
    with client_for(c) as client:
        client.headers["X-API-KEY"] = c.api_keys.create("t1", "ada", [])[0]
        assert [client.post(f"{P}/runs", json=ADHOC).status_code for _ in range(3)] == [202] * 3
        refused = client.post(f"{P}/runs", json=ADHOC)
        assert refused.status_code == 429
        assert refused.headers["RateLimit-Limit"] == "3"
        assert int(refused.headers["Retry-After"]) > 60
        minute = c.quotas.count("t1", "ada", "min", 60, clock())
        assert minute.used == 4  # three accepted, this probe; the refused one was given back


def test_quotas_can_be_turned_off(clock: FakeClock) -> None:
    c = make_fake(clock, auth_mode="multi_user", disable_quotas=True, quota_burst_per_min=1)
    with client_for(c) as client:
        client.headers["X-API-KEY"] = c.api_keys.create("t1", "ada", [])[0]
        responses = [client.post(f"{P}/runs", json=ADHOC) for _ in range(3)]
        assert [r.status_code for r in responses] == [202] * 3
        assert "RateLimit-Limit" not in responses[0].headers


# ---- tenant concurrency ------------------------------------------------------------------

WAIT = {"name": "wait", "steps": [{"id": "pause", "type": "delay", "config": {"seconds": 1}}]}


def test_with_a_tenant_limit_of_2_five_runs_never_run_more_than_2_at_once_and_all_finish(
    aws_env: dict[str, str], clock: FakeClock
) -> None:
    # On moto: the test drives the dispatch queue's messages one at a time.
    c = make_container(
        aws_env, clock, auth_mode="multi_user", tenant_concurrency=2, tenant_concurrency_recheck_sec=1
    )
    with client_for(c) as client:
        client.headers["X-API-KEY"] = c.api_keys.create("t1", "ada", [])[0]
        run_ids = [
            client.post(f"{P}/runs", json={"definition": WAIT, "inputs": {}}).json()["run_id"]
            for _ in range(5)
        ]
    # And another tenant's run is not held back by t1's limit
    other = c.api_keys.create("t2", "zed", [])[0]
    with client_for(c) as client:
        client.post(f"{P}/runs", json={"definition": WAIT, "inputs": {}}, headers={"X-API-KEY": other})

    def statuses() -> list[RunStatus]:
        return [c.runs.get("t1", run_id).status for run_id in run_ids]

    most_running = 0
    started: list[str] = []
    deadline = time.monotonic() + 60
    url = c.settings.dispatch_queue_url
    while time.monotonic() < deadline and not all(s == RunStatus.SUCCEEDED for s in statuses()):
        received: dict[str, Any] = c.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in received.get("Messages", []):
            c.engine.process(AdvanceMessage.from_body(message["Body"]))
            c.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            current = statuses()
            most_running = max(most_running, sum(s == RunStatus.RUNNING for s in current))
            started += [
                r for r, s in zip(run_ids, current, strict=True) if s != RunStatus.QUEUED and r not in started
            ]
        clock.advance(1)  # the delay steps' own deadlines
    assert statuses() == [RunStatus.SUCCEEDED] * 5
    assert most_running == 2
    assert started[:2] == run_ids[:2]  # the first two submitted start first
    assert c.quotas.slot_holders("t1") == (0, set())


def test_a_slot_kept_by_a_run_that_ended_is_reclaimed(aws_env: dict[str, str], clock: FakeClock) -> None:
    c = make_container(aws_env, clock, tenant_concurrency=1)
    # Given a slot held by a run that no longer exists (its process died before giving it back)
    assert c.quotas.take_slot("default", "gone", 1)
    with client_for(c) as client:
        client.headers["X-API-KEY"] = "test-key-0123456789"
        run_id = client.post(f"{P}/runs", json=ADHOC).json()["run_id"]
    # When the run's kick arrives
    url = c.settings.dispatch_queue_url
    message = c.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
    outcome = c.engine.process(AdvanceMessage.from_body(message["Body"]))
    # Then the stale holder is found and the run starts
    assert outcome.action == "advanced"
    assert c.runs.get("default", run_id).status == RunStatus.SUCCEEDED
