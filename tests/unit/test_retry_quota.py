"""A retry starts a run's work again, so it counts against the caller's submission quotas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, FakeClock, drain, make_fake
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
# Fails at once, and again after every retry: a condition that renders neither true nor false.
FAILING = {
    "definition": {
        "name": "fails",
        "steps": [
            {
                "id": "b",
                "type": "branch",
                "config": {"condition": "{{ 'maybe' }}", "true_next": "_end", "false_next": "_end"},
            }
        ],
    }
}


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user", quota_daily_per_user=3)


@pytest.fixture
def api(parts: Parts) -> Iterator[TestClient]:
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-KEY"] = parts.api_keys.create("t1", "ada", ["operator"])[0]
        yield client


def _failed_run(api: TestClient, parts: Parts) -> str:
    submitted = api.post(f"{P}/runs", json=FAILING)
    assert submitted.status_code == 202, submitted.text
    drain(parts)
    run_id = str(submitted.json()["run_id"])
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "failed"
    return run_id


def test_a_retry_is_counted_like_a_submission(api: TestClient, parts: Parts) -> None:
    run_id = _failed_run(api, parts)
    retried = api.post(f"{P}/runs/{run_id}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.headers["RateLimit-Limit"], retried.headers["RateLimit-Remaining"]) == ("3", "1")


def test_a_retry_beyond_the_quota_answers_429_and_leaves_the_run_failed(
    api: TestClient, parts: Parts
) -> None:
    # Given a failed run, and a daily quota of 3 of which the submission and one retry used 2
    run_id = _failed_run(api, parts)
    assert api.post(f"{P}/runs/{run_id}/retry").status_code == 200
    drain(parts)
    assert api.post(f"{P}/runs", json=FAILING).status_code == 202
    # When the run is retried once more
    refused = api.post(f"{P}/runs/{run_id}/retry")
    # Then the quota refuses it, and the run is not started again
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "failed"
