"""Saved definitions over HTTP: create, list, read, version, soft delete, validate, run."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import drain, log_definition
from workflows.api.auth import authenticate
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.roots.parts import Parts

BASE = "/api/v1/workflows"


def _error(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    return error


def _create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {**log_definition("Hello {{ inputs.name }}"), **overrides}
    response = client.post(BASE, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _as_tenant(client: TestClient, tenant_id: str) -> None:
    app: Any = client.app
    app.dependency_overrides[authenticate] = lambda: Principal(
        tenant_id=tenant_id, user_id="someone", permissions=ALL_PERMISSIONS
    )


# ---- create ------------------------------------------------------------------------------


def test_create_answers_201_with_the_definition(client: TestClient) -> None:
    response = client.post(BASE, json={**log_definition("hi"), "description": "greets", "tags": ["demo"]})

    assert response.status_code == 201, response.text
    body = response.json()
    uuid.UUID(body["workflow_id"])
    assert body["name"] == "hello"
    assert body["version"] == 1
    assert body["latest_version"] == 1
    assert body["status"] == "active"
    assert body["tags"] == ["demo"]
    assert body["created_at"] == body["updated_at"]
    assert body["definition"]["steps"][0]["config"] == {"message": "hi"}
    assert body["links"]["self"] == f"{BASE}/{body['workflow_id']}"
    assert response.headers["location"] == body["links"]["self"]


def test_duplicate_name_and_version_is_409(client: TestClient) -> None:
    _create(client)

    response = client.post(BASE, json=log_definition("again"))

    assert response.status_code == 409
    assert _error(response)["code"] == "conflict"


def test_same_name_with_another_version_is_allowed(client: TestClient) -> None:
    _create(client)
    assert client.post(BASE, json={**log_definition("v2"), "version": 2}).status_code == 201


def test_same_name_in_another_tenant_is_allowed(client: TestClient) -> None:
    _create(client)
    _as_tenant(client, "other")
    assert client.post(BASE, json=log_definition("x")).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "steps": [{"id": "a", "type": "teleport"}]}, "steps[0].type"),
        ({"name": "x", "steps": [{"id": "a", "type": "log", "config": {}}]}, "steps[0].config.message"),
        ({"name": "x", "steps": []}, "steps"),
        ({"steps": [{"id": "a", "type": "log", "config": {"message": "m"}}]}, "name"),
        (
            {
                "name": "x",
                "steps": [{"id": "a", "type": "log", "config": {"message": "m"}, "on_success": "b"}],
            },
            "steps[0].on_success",
        ),
        (
            {
                **log_definition("m"),
                "inputs_schema": {"type": "object", "properties": {"n": {"type": "strin"}}},
            },
            "inputs_schema.properties.n.type",
        ),
    ],
)
def test_invalid_definition_is_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post(BASE, json=body)

    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]


def test_too_many_steps_is_422(client: TestClient) -> None:
    response = client.post(BASE, json=log_definition(*["m"] * 51))

    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "steps"


def test_oversized_step_config_is_422(client: TestClient) -> None:
    big = {
        "name": "big",
        "steps": [{"id": "a", "type": "log", "config": {"message": "m", "pad": "x" * 40000}}],
    }

    response = client.post(BASE, json=big)

    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "steps[0].config"


def test_oversized_definition_is_413(client: TestClient) -> None:
    body = {**log_definition("m"), "metadata": {"blob": "x" * 300_000}}

    response = client.post(BASE, json=body)

    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


def test_nothing_is_stored_when_create_fails(client: TestClient) -> None:
    client.post(BASE, json={"name": "bad", "steps": [{"id": "a", "type": "teleport"}]})
    assert client.get(BASE).json()["workflows"] == []


# ---- read and list -----------------------------------------------------------------------


def test_get_returns_the_latest_version(client: TestClient) -> None:
    created = _create(client)
    wid = created["workflow_id"]
    client.post(f"{BASE}/{wid}/versions", json=log_definition("second"))

    body = client.get(f"{BASE}/{wid}").json()

    assert body["version"] == 2
    assert body["definition"]["steps"][0]["config"]["message"] == "second"
    assert client.get(f"{BASE}/{wid}", params={"version": 1}).json()["version"] == 1


def test_unknown_workflow_is_404(client: TestClient) -> None:
    response = client.get(f"{BASE}/{uuid.uuid4()}")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


def test_unknown_version_is_404(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    assert client.get(f"{BASE}/{wid}", params={"version": 7}).status_code == 404


def test_another_tenants_workflow_is_404_everywhere(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    _as_tenant(client, "other")

    assert client.get(f"{BASE}/{wid}").status_code == 404
    assert client.get(f"{BASE}/{wid}/versions").status_code == 404
    assert client.post(f"{BASE}/{wid}/versions", json=log_definition("x")).status_code == 404
    assert client.post(f"{BASE}/{wid}/runs", json={}).status_code == 404
    assert client.delete(f"{BASE}/{wid}").status_code == 404
    assert client.get(BASE).json()["workflows"] == []


def test_list_pages_newest_first_with_a_cursor(client: TestClient, clock: Any) -> None:
    ids = []
    for i in range(5):
        ids.append(_create(client, name=f"wf{i}")["workflow_id"])
        clock.advance(1)

    first = client.get(BASE, params={"limit": 2}).json()
    second = client.get(BASE, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = client.get(BASE, params={"limit": 2, "cursor": second["next_cursor"]}).json()

    seen = [w["workflow_id"] for page in (first, second, third) for w in page["workflows"]]
    assert seen == list(reversed(ids))
    assert third["next_cursor"] is None


def test_list_hides_deleted_unless_asked(client: TestClient) -> None:
    kept = _create(client, name="kept")["workflow_id"]
    gone = _create(client, name="gone")["workflow_id"]
    client.delete(f"{BASE}/{gone}")

    active = [w["workflow_id"] for w in client.get(BASE).json()["workflows"]]
    everything = {
        w["workflow_id"]: w["status"]
        for w in client.get(BASE, params={"include_deleted": True}).json()["workflows"]
    }

    assert active == [kept]
    assert everything == {kept: "active", gone: "deleted"}


def test_list_limit_is_bounded(client: TestClient) -> None:
    assert client.get(BASE, params={"limit": 201}).status_code == 422
    assert client.get(BASE, params={"limit": 0}).status_code == 422


@pytest.mark.parametrize("cursor", ["not-base64!!", "eyJ2IjoxfQ", "e30", "A" * 3000])
def test_malformed_cursor_is_400(client: TestClient, cursor: str) -> None:
    response = client.get(BASE, params={"cursor": cursor})
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_cursor"


def test_cursor_from_another_listing_is_400(client: TestClient) -> None:
    for i in range(3):
        _create(client, name=f"wf{i}")
    cursor = client.get(BASE, params={"limit": 1}).json()["next_cursor"]

    response = client.get(BASE, params={"cursor": cursor, "include_deleted": True})

    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_cursor"


# ---- versions ------------------------------------------------------------------------------


def test_new_version_is_latest_plus_one(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]

    response = client.post(f"{BASE}/{wid}/versions", json=log_definition("v2"))

    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2
    assert response.json()["definition"]["version"] == 2
    assert response.json()["workflow_id"] == wid


def test_a_new_version_keeps_what_its_body_leaves_out(client: TestClient) -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    wid = _create(client, inputs_schema=schema, description="greets", tags=["demo"])["workflow_id"]

    kept = client.post(f"{BASE}/{wid}/versions", json=log_definition("v2"))
    assert kept.status_code == 201, kept.text
    definition = kept.json()["definition"]
    assert (definition["inputs_schema"], definition["description"], definition["tags"]) == (
        schema,
        "greets",
        ["demo"],
    )
    # The kept schema still guards submissions of the new version.
    refused = client.post(f"{BASE}/{wid}/runs", json={"inputs": {}})
    assert refused.status_code == 422, refused.text

    cleared = client.post(
        f"{BASE}/{wid}/versions", json={**log_definition("v3"), "inputs_schema": None, "tags": []}
    )
    assert cleared.status_code == 201, cleared.text
    assert cleared.json()["definition"]["inputs_schema"] is None
    assert cleared.json()["definition"]["tags"] == []
    assert cleared.json()["definition"]["description"] == "greets"


def test_new_version_with_a_stale_expected_version_is_409(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]

    response = client.post(f"{BASE}/{wid}/versions", json={**log_definition("v2"), "version": 5})

    assert response.status_code == 409
    assert _error(response)["details"][0]["field"] == "version"


def test_new_version_taking_another_workflows_name_and_version_is_409(client: TestClient) -> None:
    wid = _create(client, name="a")["workflow_id"]
    _create(client, name="b", version=2)

    response = client.post(f"{BASE}/{wid}/versions", json=log_definition("x", name="b"))

    assert response.status_code == 409
    assert _error(response)["code"] == "conflict"


def test_invalid_new_version_is_422(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    response = client.post(
        f"{BASE}/{wid}/versions", json={"name": "x", "steps": [{"id": "a", "type": "nope"}]}
    )
    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "steps[0].type"


def test_versions_list_newest_first(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    for message in ("2", "3"):
        client.post(f"{BASE}/{wid}/versions", json=log_definition(message))

    page = client.get(f"{BASE}/{wid}/versions", params={"limit": 2}).json()
    rest = client.get(f"{BASE}/{wid}/versions", params={"limit": 2, "cursor": page["next_cursor"]}).json()

    assert [v["version"] for v in page["versions"]] == [3, 2]
    assert [v["version"] for v in rest["versions"]] == [1]
    assert rest["next_cursor"] is None


def test_concurrent_new_versions_get_distinct_numbers(container: Parts) -> None:
    import threading

    from workflows.domain.workflows import WorkflowHead

    principal = Principal(tenant_id="t", user_id="u", permissions=ALL_PERMISSIONS)
    service = container.definition_service
    head, _ = service.create(principal, _definition())
    results: list[WorkflowHead] = []

    def add() -> None:
        new, _ = service.add_version(principal, head.workflow_id, log_definition("x"))
        results.append(new)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.latest_version for r in results) == [2, 3, 4, 5]


def _definition() -> Any:
    from workflows.domain.definition import WorkflowDefinition

    return WorkflowDefinition.model_validate(log_definition("m"))


# ---- delete --------------------------------------------------------------------------------


def test_delete_is_soft_and_idempotent(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]

    first = client.delete(f"{BASE}/{wid}")
    again = client.delete(f"{BASE}/{wid}")

    assert first.status_code == 200
    assert first.json()["status"] == "deleted"
    assert again.status_code == 200
    assert again.json()["deleted_at"] == first.json()["deleted_at"]
    assert client.get(f"{BASE}/{wid}").json()["status"] == "deleted"


def test_delete_unknown_is_404(client: TestClient) -> None:
    assert client.delete(f"{BASE}/{uuid.uuid4()}").status_code == 404


def test_deleted_workflow_cannot_get_versions(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    client.delete(f"{BASE}/{wid}")

    response = client.post(f"{BASE}/{wid}/versions", json=log_definition("x"))

    assert response.status_code == 409
    assert _error(response)["code"] == "workflow_deleted"


# ---- validate ------------------------------------------------------------------------------


def test_validate_valid_definition(client: TestClient) -> None:
    response = client.post(f"{BASE}/validate", json=log_definition("m"))
    assert response.status_code == 200
    assert response.json() == {"valid": True, "errors": [], "warnings": []}


def test_validate_reports_errors_with_200(client: TestClient) -> None:
    body = {"name": "x", "steps": [{"id": "a", "type": "teleport"}, {"id": "a", "type": "log", "config": {}}]}

    response = client.post(f"{BASE}/validate", json=body)

    assert response.status_code == 200
    report = response.json()
    assert report["valid"] is False
    fields = [e["field"] for e in report["errors"]]
    assert "steps[0].type" in fields
    assert "steps[1].id" in fields
    assert "steps[1].config.message" in fields


def test_validate_reports_shape_errors(client: TestClient) -> None:
    report = client.post(f"{BASE}/validate", json={"steps": "nope"}).json()
    assert report["valid"] is False
    assert {"name", "steps"} <= {e["field"] for e in report["errors"]}


def test_validate_warns_about_unreachable_steps(client: TestClient) -> None:
    body = {
        "name": "x",
        "steps": [
            {"id": "a", "type": "log", "config": {"message": "m"}, "on_success": "_end"},
            {"id": "b", "type": "log", "config": {"message": "m"}},
        ],
    }
    report = client.post(f"{BASE}/validate", json=body).json()
    assert report["valid"] is True
    assert report["warnings"] == [{"field": "steps[1]", "message": "step 'b' is never reached"}]


def test_validate_stores_nothing(client: TestClient) -> None:
    client.post(f"{BASE}/validate", json=log_definition("m"))
    assert client.get(BASE).json()["workflows"] == []


# ---- saved runs ----------------------------------------------------------------------------


def test_saved_run_executes_the_latest_version(client: TestClient, container: Parts) -> None:
    wid = _create(client)["workflow_id"]
    client.post(f"{BASE}/{wid}/versions", json=log_definition("v2 {{ inputs.name }}"))

    response = client.post(f"{BASE}/{wid}/runs", json={"inputs": {"name": "Ada"}})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    drain(container)

    run = client.get(f"{BASE}/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["workflow_id"] == wid
    assert run["definition_version"] == 2
    assert run["outputs"]["message"] == "v2 Ada"


def test_saved_run_of_a_named_version(client: TestClient, container: Parts) -> None:
    wid = _create(client)["workflow_id"]
    client.post(f"{BASE}/{wid}/versions", json=log_definition("v2"))

    run_id = client.post(f"{BASE}/{wid}/runs", json={"inputs": {"name": "Bo"}, "version": 1}).json()["run_id"]
    drain(container)

    run = client.get(f"{BASE}/runs/{run_id}").json()
    assert run["definition_version"] == 1
    assert run["outputs"]["message"] == "Hello Bo"


def test_saved_run_of_a_missing_version_is_404(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    response = client.post(f"{BASE}/{wid}/runs", json={"version": 9})
    assert response.status_code == 404
    assert _error(response)["details"][0]["field"] == "version"


def test_saved_run_without_body_uses_empty_inputs(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    assert client.post(f"{BASE}/{wid}/runs").status_code == 202


def test_singular_run_aliases(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    assert client.post(f"{BASE}/{wid}/run", json={"inputs": {}}).status_code == 202
    assert client.post(f"{BASE}/run", json={"definition": log_definition("m")}).status_code == 202


def test_running_a_deleted_workflow_is_409(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    client.delete(f"{BASE}/{wid}")

    response = client.post(f"{BASE}/{wid}/runs", json={"inputs": {}})

    assert response.status_code == 409
    assert _error(response)["code"] == "workflow_deleted"


def test_running_an_unknown_workflow_is_404(client: TestClient) -> None:
    response = client.post(f"{BASE}/{uuid.uuid4()}/runs", json={"inputs": {}})
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
    "required": ["name"],
}


@pytest.mark.parametrize(
    ("inputs", "field"),
    [({}, "inputs.name"), ({"name": 3}, "inputs.name"), ({"name": "a", "count": 0}, "inputs.count")],
)
def test_saved_run_inputs_are_validated_against_the_schema(
    client: TestClient, inputs: dict[str, Any], field: str
) -> None:
    wid = _create(client, inputs_schema=SCHEMA)["workflow_id"]

    response = client.post(f"{BASE}/{wid}/runs", json={"inputs": inputs})

    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field


def test_adhoc_run_inputs_are_validated_against_the_schema(client: TestClient) -> None:
    body = {"definition": {**log_definition("m"), "inputs_schema": SCHEMA}, "inputs": {}}
    response = client.post(f"{BASE}/runs", json=body)
    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "inputs.name"


def test_saved_run_body_rejects_unknown_fields(client: TestClient) -> None:
    wid = _create(client)["workflow_id"]
    response = client.post(f"{BASE}/{wid}/runs", json={"inputz": {}})
    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "inputz"


def test_fixed_paths_are_not_taken_for_workflow_ids(client: TestClient) -> None:
    assert client.get(f"{BASE}/health").json()["status"] == "ok"
    assert client.get(f"{BASE}/runs").status_code == 200
    assert client.get(f"{BASE}/step-types").status_code == 200
    assert client.delete(f"{BASE}/runs").status_code == 405
