"""Artifacts: stored in S3 with metadata in DynamoDB, listed and fetched per run, tenant-scoped."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
from fastapi.testclient import TestClient

from tests.conftest import drain, log_definition
from workflows.adapters import artifacts as artifacts_module
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


BASE = "/api/v1/workflows"


def finished_run(client: TestClient, container: Parts) -> str:
    response = client.post(f"{BASE}/runs", json={"definition": log_definition("hello")})
    assert response.status_code == 202
    drain(container)
    return str(response.json()["run_id"])


def save(container: Parts, run_id: str, content: bytes = b"report", **kw: Any) -> Any:
    values: dict[str, Any] = {"step_id": "s1", "name": "report.txt", "mime_type": "text/plain"}
    values.update(kw)
    return container.artifacts.save("default", run_id, content=content, **values)


def test_save_puts_an_encrypted_object_and_its_metadata(container: Parts) -> None:
    # When
    meta = save(container, "run-1", b"hello artifact")
    # Then
    s3 = boto3.client("s3")
    bucket = container.settings.artifacts_bucket
    head = s3.head_object(Bucket=bucket, Key=f"default/run-1/{meta.artifact_id}")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "text/plain"
    item = boto3.client("dynamodb").get_item(
        TableName=container.settings.artifacts_table,
        Key={"pk": {"S": "default#run-1"}, "sk": {"S": meta.artifact_id}},
    )["Item"]
    assert item["sha256"]["S"] == hashlib.sha256(b"hello artifact").hexdigest()
    assert item["size_bytes"]["N"] == "14"
    assert item["s3_key"]["S"] == meta.s3_key
    assert int(item["expires_at"]["N"]) > 0
    assert container.artifacts.read(meta) == b"hello artifact"


def test_saving_again_with_the_same_id_keeps_the_first(container: Parts) -> None:
    first = save(container, "run-1", b"one", artifact_id="step-s1-output")
    again = save(container, "run-1", b"one", artifact_id="step-s1-output")
    assert again == first
    assert len(container.artifacts.list("default", "run-1")) == 1


def test_an_unsafe_mime_type_is_stored_as_octet_stream(container: Parts) -> None:
    meta = save(container, "run-1", mime_type="text/plain\r\nX-Evil: 1")
    assert meta.mime_type == "application/octet-stream"


def test_list_answers_the_runs_artifacts_oldest_first(
    client: TestClient, container: Parts, clock: Any
) -> None:
    # Given
    run_id = finished_run(client, container)
    first = save(container, run_id, b"a", name="first.txt")
    clock.advance(1)
    second = save(container, run_id, b"bb", name="second.json", mime_type="application/json")
    save(container, "another-run", b"c")
    # When
    response = client.get(f"{BASE}/runs/{run_id}/artifacts")
    # Then
    assert response.status_code == 200
    body = response.json()
    assert body["run_id"] == run_id
    assert [a["artifact_id"] for a in body["artifacts"]] == [first.artifact_id, second.artifact_id]
    listed = body["artifacts"][1]
    assert listed["name"] == "second.json"
    assert listed["size_bytes"] == 2
    assert listed["mime_type"] == "application/json"
    assert listed["sha256"] == hashlib.sha256(b"bb").hexdigest()
    assert listed["step_id"] == "s1"
    assert "s3_key" not in listed


def test_list_of_a_run_without_artifacts_is_empty(client: TestClient, container: Parts) -> None:
    run_id = finished_run(client, container)
    response = client.get(f"{BASE}/runs/{run_id}/artifacts")
    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "artifacts": []}


def test_get_answers_metadata_and_a_five_minute_presigned_url(client: TestClient, container: Parts) -> None:
    # Given
    run_id = finished_run(client, container)
    meta = save(container, run_id, b"contents")
    # When
    response = client.get(f"{BASE}/runs/{run_id}/artifacts/{meta.artifact_id}")
    # Then
    assert response.status_code == 200
    body = response.json()
    assert body["artifact_id"] == meta.artifact_id
    assert body["links"]["download"].endswith("?download=true")
    url = urlparse(body["download_url"])
    assert url.path.endswith(f"/default/{run_id}/{meta.artifact_id}")
    query = parse_qs(url.query)
    # SigV4 states the lifetime, SigV2 the moment it ends
    assert query.get("X-Amz-Expires") == ["300"] or "Expires" in query
    assert query["response-content-disposition"][0].startswith("attachment;")


def test_download_streams_the_bytes_with_the_stored_content_type(
    client: TestClient, container: Parts
) -> None:
    run_id = finished_run(client, container)
    meta = save(container, run_id, b'{"answer": 42}', name="answer.json", mime_type="application/json")
    response = client.get(f"{BASE}/runs/{run_id}/artifacts/{meta.artifact_id}", params={"download": "true"})
    assert response.status_code == 200
    assert response.content == b'{"answer": 42}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert 'filename="answer.json"' in response.headers["content-disposition"]


def test_download_of_an_empty_artifact_is_empty(client: TestClient, container: Parts) -> None:
    run_id = finished_run(client, container)
    meta = save(container, run_id, b"")
    response = client.get(f"{BASE}/runs/{run_id}/artifacts/{meta.artifact_id}?download=true")
    assert response.status_code == 200
    assert response.content == b""


def test_download_of_a_large_artifact_redirects_to_s3(
    client: TestClient, container: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a 10-byte limit stands in for 10 MiB
    monkeypatch.setattr("workflows.api.routes.artifacts.MAX_READ_BYTES", 10)
    run_id = finished_run(client, container)
    meta = save(container, run_id, b"more than ten bytes")
    # When
    response = client.get(
        f"{BASE}/runs/{run_id}/artifacts/{meta.artifact_id}?download=true", follow_redirects=False
    )
    # Then
    assert response.status_code == 303
    assert meta.artifact_id in response.headers["location"]


def test_read_refuses_more_than_its_bound(container: Parts) -> None:
    meta = save(container, "run-1", b"x" * 20)
    with pytest.raises(artifacts_module.PayloadTooLarge):
        container.artifacts.read(meta, max_bytes=10)


def test_unknown_artifact_answers_404(client: TestClient, container: Parts) -> None:
    run_id = finished_run(client, container)
    response = client.get(f"{BASE}/runs/{run_id}/artifacts/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_run_answers_404(client: TestClient) -> None:
    assert client.get(f"{BASE}/runs/no-such-run/artifacts").status_code == 404
    assert client.get(f"{BASE}/runs/no-such-run/artifacts/a1").status_code == 404


def test_another_tenants_artifacts_answer_404(client: TestClient, container: Parts) -> None:
    # Given: a run of another tenant (same run id) with an artifact
    run_id = finished_run(client, container)
    theirs = container.artifacts.save(
        "other", run_id, step_id="s1", name="secret.txt", content=b"secret", mime_type="text/plain"
    )
    # When / Then: the caller's run exists but the artifact is not theirs
    response = client.get(f"{BASE}/runs/{run_id}/artifacts/{theirs.artifact_id}")
    assert response.status_code == 404
    assert client.get(f"{BASE}/runs/{run_id}/artifacts").json()["artifacts"] == []


def test_artifacts_need_an_api_key(client: TestClient, container: Parts) -> None:
    run_id = finished_run(client, container)
    response = client.get(f"{BASE}/runs/{run_id}/artifacts", headers={"X-API-KEY": ""})
    assert response.status_code == 401
