"""Bad requests answer JSON errors with a stable code and the offending field, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, api_client, log_definition, make_container
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


RUNS = "/api/v1/workflows/runs"


def _error(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    return error


def _queue_depth(container: Parts) -> int:
    attributes = container.sqs.get_queue_attributes(
        QueueUrl=container.settings.dispatch_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(RUNS, content=b'{"definition": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert _error(response)["code"] == "malformed_json"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(RUNS, content=b'{"definition": {}}', headers=headers)
    assert response.status_code == 415
    assert _error(response)["code"] == "unsupported_media_type"


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/v1/workflows/nope/nope")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = client.delete(RUNS)
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"


def test_missing_field_is_422_naming_it(client: TestClient) -> None:
    response = client.post(RUNS, json={"inputs": {}})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "definition"


def test_unknown_step_type_is_422_naming_step_and_field(client: TestClient, container: Parts) -> None:
    definition = log_definition("hi")
    definition["steps"].append({"id": "mystery", "type": "teleport", "config": {}})
    response = client.post(RUNS, json={"definition": definition})
    assert response.status_code == 422
    error = _error(response)
    assert error["details"][0]["field"] == "definition.steps[1].type"
    assert "mystery" in error["details"][0]["message"]
    assert _queue_depth(container) == 0  # nothing half-written


def test_bad_step_config_is_422_naming_the_config_field(client: TestClient) -> None:
    definition = {
        "name": "x",
        "steps": [{"id": "a", "type": "log", "config": {"message": "hi", "level": "loud"}}],
    }
    response = client.post(RUNS, json={"definition": definition})
    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "definition.steps[0].config.level"


def test_duplicate_step_ids_and_unknown_targets_are_422(client: TestClient) -> None:
    definition = {
        "name": "x",
        "steps": [
            {"id": "a", "type": "log", "config": {"message": "1"}, "on_success": "zzz"},
            {"id": "a", "type": "log", "config": {"message": "2"}},
        ],
    }
    response = client.post(RUNS, json={"definition": definition})
    assert response.status_code == 422
    fields = {d["field"] for d in _error(response)["details"]}
    assert fields == {"definition.steps[1].id", "definition.steps[0].on_success"}


def test_missing_api_key_is_401_with_challenge(client: TestClient) -> None:
    response = client.get(f"{RUNS}/x", headers={"X-API-KEY": ""})
    assert response.status_code == 401
    assert _error(response)["code"] == "unauthenticated"
    assert "WWW-Authenticate" in response.headers


def test_wrong_api_key_is_401(client: TestClient) -> None:
    response = client.get(f"{RUNS}/x", headers={"X-API-KEY": "wrong"})
    assert response.status_code == 401


def test_bad_query_parameter_is_422(client: TestClient) -> None:
    response = client.get(f"{RUNS}/00000000-0000-4000-8000-000000000000/events", params={"limit": 5000})
    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "limit"


def test_enqueue_failure_fails_the_run_and_answers_503(aws_env: dict[str, str], clock: FakeClock) -> None:
    # Given a queue that no longer exists
    gone = aws_env["WORKFLOWS_DISPATCH_QUEUE_URL"] + "-gone"
    container = make_container(aws_env, clock, dispatch_queue_url=gone)
    # When a run is submitted
    with api_client(container) as client:
        response = client.post(RUNS, json={"definition": log_definition("hi")})
    # Then the caller is told to retry, and the stored run is failed rather than queued forever
    assert response.status_code == 503
    assert _error(response)["code"] == "dependency_unavailable"
    assert response.headers["retry-after"] == "1"
    items = container.dynamodb.scan(TableName=container.settings.runs_table)["Items"]
    runs = [item for item in items if item["sk"]["S"] == "RUN"]
    assert [(r["status"]["S"], r["status_reason"]["S"]) for r in runs] == [("failed", "enqueue_failed")]


def test_deployed_api_key_comes_from_ssm(client: TestClient, container: Parts) -> None:
    import boto3
    from aws_lambda_powertools.utilities import parameters

    # Given the key only in an SSM SecureString parameter, as template.yaml deploys it
    boto3.client("ssm").put_parameter(Name="/workflows/api-key", Value="from-ssm", Type="SecureString")
    container.settings = container.settings.model_copy(
        update={"api_key": None, "api_key_parameter": "/workflows/api-key"}
    )
    parameters.clear_caches()
    try:
        ok = client.get(f"{RUNS}/x", headers={"X-API-KEY": "from-ssm"})
        bad = client.get(f"{RUNS}/x", headers={"X-API-KEY": "test-key-0123456789"})
    finally:
        parameters.clear_caches()
    assert ok.status_code == 404  # authenticated; the run just does not exist
    assert bad.status_code == 401
