"""GET /step-types: every registered step type with its config schema and a valid example."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from workflows.api.auth import authenticate
from workflows.domain.principal import Principal
from workflows.roots.parts import Parts
from workflows.settings import Settings
from workflows.steps.registry import parse_config

REGISTRY = Parts(Settings()).registry
NAMES = REGISTRY.names()

STEP_TYPES = "/api/v1/workflows/step-types"


def test_lists_every_registered_step_type(client: TestClient) -> None:
    response = client.get(STEP_TYPES)

    assert response.status_code == 200
    items = response.json()["step_types"]
    assert {item["name"] for item in items} == set(NAMES)
    for item in items:
        assert set(item) == {"name", "description", "schema", "example", "min_engine_version", "routes"}
        assert item["description"]
        assert item["schema"]["type"] == "object"
        assert item["min_engine_version"]
        # the config fields naming the next step, as the type says: each a field of its schema
        assert set(item["routes"]) <= set(item["schema"]["properties"])
    routes = {item["name"]: item["routes"] for item in items}
    assert routes["branch"] == ["true_next", "false_next"]
    assert {name for name, fields in routes.items() if fields} == {"branch"}


@pytest.mark.parametrize("name", NAMES)
def test_each_example_validates_against_its_own_schema(client: TestClient, name: str) -> None:
    items = {item["name"]: item for item in client.get(STEP_TYPES).json()["step_types"]}
    step_type = REGISTRY.get(name)
    assert step_type is not None

    parse_config(step_type, items[name]["example"])  # raises if the example is not a valid config
    assert items[name]["schema"] == step_type.config_model.model_json_schema()


def test_any_caller_may_read_the_step_types(client: TestClient) -> None:
    # The service's catalog, no tenant's data: a caller with no permission may submit runs, so
    # it may read what their steps may be.
    app: Any = client.app
    app.dependency_overrides[authenticate] = lambda: Principal("default", "u", frozenset())
    response = client.get(STEP_TYPES)
    assert response.status_code == 200
    assert "wait_for_signal" in [step["name"] for step in response.json()["step_types"]]


def test_step_types_need_an_api_key(client: TestClient) -> None:
    response = client.get(STEP_TYPES, headers={"X-API-KEY": ""})
    assert response.status_code == 401
