"""The API keeps its own OpenAPI document: property-based requests from the document, in-process.

Every operation is called with generated valid and invalid requests (on moto). No answer may be
a 5xx, use a status code the document does not list for that operation, or have a body or
Content-Type the document does not describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import API_KEY, FakeClock, drain, log_definition, moto_account, moto_parts
from workflows.api import deps
from workflows.api.app import create_app
from workflows.api.schemas import PREFIX
from workflows.roots.parts import Parts

# The module's tests share one account and one app, so they share one worker.
pytestmark = pytest.mark.xdist_group("openapi-contract")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
_METHODS = ("get", "put", "post", "patch", "delete")
# Building the document needs no AWS: it is generated from the routes.
OPERATIONS = [
    (method, path)
    for path, item in create_app().openapi()["paths"].items()
    for method in item
    if method in _METHODS
]


def _strategy(
    schema: Any, method: str, path: str, known: dict[str, str]
) -> st.SearchStrategy[schemathesis.Case]:
    """Generated requests, and valid ones aimed at existing objects so they get past the 404s."""
    operation = schema[path][method]
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = [name for name in known if "{" + name + "}" in path]
    if names:
        fixed = {name: known[name] for name in names}
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
    return st.one_of(strategies)


def _seed(client: TestClient, container: Parts) -> dict[str, str]:
    """A saved workflow, a finished run of it and an artifact of that run."""
    created = client.post(PREFIX, json=log_definition("one", "two", name="contract"))
    workflow_id = created.json()["workflow_id"]
    run_id = client.post(f"{PREFIX}/{workflow_id}/runs", json={}).json()["run_id"]
    drain(container)
    artifact = container.artifacts.save(
        "default", run_id, step_id="s1", name="out.txt", content=b"out", mime_type="text/plain"
    )
    return {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "artifact_id": artifact.artifact_id,
        "step_id": "s1",
    }


def test_every_route_is_in_the_document() -> None:
    assert len(OPERATIONS) >= 20


@dataclass
class ContractApp:
    schema: Any
    known: dict[str, str]
    client: TestClient


@pytest.fixture(scope="module")
def contract_app(stateful_template: dict[str, Any]) -> Iterator[ContractApp]:
    """One moto account for the whole module (like the `container` fixture, built once: the
    operations only read or change the objects seeded here), the app and its document."""
    with moto_account(stateful_template) as env:
        container = moto_parts(env, FakeClock())
        app = create_app()
        app.dependency_overrides[deps.services] = lambda: container
        with TestClient(app) as client:
            client.headers.update({"X-API-KEY": API_KEY})
            known = _seed(client, container)
            schema = schemathesis.openapi.from_asgi(f"{PREFIX}/openapi.json", app)
            yield ContractApp(schema=schema, known=known, client=client)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_operation_keeps_its_documented_contract(contract_app: ContractApp, method: str, path: str) -> None:
    # Given: the app on moto, with a workflow, a run and an artifact
    # When / Then: valid and invalid requests, each answer checked against the document
    @given(case=_strategy(contract_app.schema, method, path, contract_app.known))
    @settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-KEY": API_KEY}, checks=CHECKS)

    call()


@pytest.mark.parametrize(
    "query",
    [
        {"created_after": "0001-01-01T00:00:00+14:00"},
        {"created_before": "9999-12-31T23:59:59-14:00"},
    ],
)
def test_times_outside_the_utc_range_answer_422(contract_app: ContractApp, query: dict[str, str]) -> None:
    response = contract_app.client.get(f"{PREFIX}/runs", params=query)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == next(iter(query))


def test_ids_too_long_for_a_key_answer_404(contract_app: ContractApp) -> None:
    client = contract_app.client
    long_id = "x" * 3000
    assert client.get(f"{PREFIX}/runs/{long_id}").status_code == 404
    assert client.post(f"{PREFIX}/runs/{long_id}/pause").status_code == 404
    assert client.get(f"{PREFIX}/runs/{long_id}/artifacts").status_code == 404
    signal = {"name": "order.paid", "id": "pay-1"}
    assert client.post(f"{PREFIX}/runs/{long_id}/signals", json=signal).status_code == 404
