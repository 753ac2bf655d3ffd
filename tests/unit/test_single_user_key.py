"""The single-user key's sources: a service that cannot read its key says so with 503
`api_key_unavailable`, never 500 and never 401 for a key it could not compare."""

from __future__ import annotations

from fastapi.testclient import TestClient

from workflows.roots.parts import Parts

RUNS = "/api/v1/workflows/runs"


def _without_key_source(container: Parts) -> None:
    container.settings = container.settings.model_copy(
        update={"api_key": None, "api_key_secret_arn": None, "api_key_parameter": None}
    )


def test_no_key_source_configured_answers_503_api_key_unavailable(
    client: TestClient, container: Parts
) -> None:
    _without_key_source(container)

    response = client.get(RUNS)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "api_key_unavailable"
    assert response.headers["retry-after"] == "1"


def test_a_request_without_a_key_is_401_whether_or_not_the_key_is_readable(
    client: TestClient, container: Parts
) -> None:
    _without_key_source(container)

    response = client.get(RUNS, headers={"X-API-KEY": ""})

    assert response.status_code == 401


def test_a_submission_while_the_key_is_unavailable_answers_503(client: TestClient, container: Parts) -> None:
    _without_key_source(container)

    response = client.post(RUNS, json={"definition": {"name": "x", "steps": []}})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "api_key_unavailable"
