"""docs/steps.md describes the step models GET /step-types serves: its reference part is what
`make docs` writes from them, every field has a meaning, and every example is a valid definition
(the local ones run on the fakes)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import Field, create_model

from docsgen import reference
from tests.conftest import FakeClock, drain
from workflows.domain.definition import RetryPolicy, StepSpec, WorkflowDefinition
from workflows.roots.parts import Parts
from workflows.steps.log import LogConfig
from workflows.steps.registry import parse_config

BASE = "/api/v1/workflows"
GUIDES = {guide.step.name: guide for guide in reference.GUIDES}


def test_the_reference_in_docs_is_what_the_models_generate() -> None:
    text = reference.DOCS.read_text()
    assert reference.current(text), "docs/steps.md has lost its generated reference markers"
    assert reference.current(text) == reference.generate(), "docs/steps.md is out of date: run `make docs`"


def test_every_field_of_every_step_model_has_a_meaning() -> None:
    models = [StepSpec, RetryPolicy, *(guide.step.config_model for guide in reference.GUIDES)]
    assert [name for model in models for name in reference.undescribed(model)] == []


def test_every_meaning_kept_beside_a_model_names_a_field_it_has() -> None:
    models = {guide.step.config_model.__name__: guide.step.config_model for guide in reference.GUIDES}
    for model_name, meanings in reference.MEANINGS.items():
        fields = models[model_name].model_fields
        assert set(meanings) <= set(fields), f"{model_name} has no field {set(meanings) - set(fields)}"
        described = {name for name in meanings if fields[name].description}
        assert described == set(), f"{model_name}.{described} has a description: drop it from MEANINGS"


def test_a_field_added_without_a_meaning_stops_the_reference() -> None:
    grown = create_model("LogConfig", __base__=LogConfig, colour=(str, "red"))
    with pytest.raises(reference.Undescribed, match=r"LogConfig\.colour"):
        reference.fields_table(grown)
    explained = create_model(
        "LogConfig", __base__=LogConfig, colour=(str, Field(default="red", description="Ink"))
    )
    assert '| `colour` | string | `"red"` | - | Ink |' in reference.fields_table(explained)


def test_a_field_added_to_a_step_model_changes_the_generated_text(monkeypatch: pytest.MonkeyPatch) -> None:
    before = reference.generate()
    grown = create_model(
        "LogConfig", __base__=LogConfig, colour=(str, Field(default="red", description="Ink"))
    )
    monkeypatch.setattr(reference.GUIDES[0].step, "config_model", grown)
    assert reference.generate() != before


def test_the_reference_covers_every_registered_type_with_the_model_it_serves(container: Parts) -> None:
    registry = container.registry
    assert sorted(GUIDES) == registry.names()
    for name, guide in GUIDES.items():
        served = registry.get(name)
        assert served is not None
        assert served.config_model is guide.step.config_model


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_each_example_is_a_valid_definition(name: str, client: TestClient) -> None:
    example = GUIDES[name].example
    assert set(example) == {"definition", "inputs"}
    assert name in {step["type"] for step in example["definition"]["steps"]}

    report = client.post(f"{BASE}/validate", json=example["definition"]).json()

    assert report["valid"] is True, report["errors"]
    assert report["errors"] == []


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_the_templated_fields_said_are_the_ones_the_step_checks(name: str, container: Parts) -> None:
    step_type = container.registry.get(name)
    assert step_type is not None
    for step in GUIDES[name].example["definition"]["steps"]:
        if step["type"] != name:
            continue
        config = parse_config(step_type, step["config"])
        for field in step_type.templates(config):
            top = field.path.split(".")[0].split("[")[0]
            assert f"`{top}`" in GUIDES[name].templates, f"{name}.{top} is a template"


def _run(client: TestClient, container: Parts, name: str) -> dict[str, Any]:
    response = client.post(f"{BASE}/runs", json=GUIDES[name].example)
    assert response.status_code == 202, response.text
    drain(container)
    run: dict[str, Any] = client.get(f"{BASE}/runs/{response.json()['run_id']}").json()
    return run


def test_the_log_example_runs(client: TestClient, container: Parts) -> None:
    run = _run(client, container, "log")
    assert run["status"] == "succeeded"
    assert run["outputs"] == {
        "message": 'the step before said {"message": "Hello Ada", "level": "info"}',
        "level": "debug",
    }


def test_the_branch_example_runs(client: TestClient, container: Parts) -> None:
    run = _run(client, container, "branch")
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "passed with 0.8"


def test_the_delay_example_runs(client: TestClient, container: Parts, clock: FakeClock) -> None:
    run = _run(client, container, "delay")
    assert run["status"] == "running"
    clock.advance(30)
    drain(container)
    run = client.get(f"{BASE}/runs/{run['run_id']}").json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"].startswith("waited until 2026-01-01T12:00:30")


def test_the_approval_example_runs(client: TestClient, container: Parts) -> None:
    run = _run(client, container, "approval")
    assert run["status"] == "waiting_approval"
    decided = client.post(f"{BASE}/runs/{run['run_id']}/steps/review/approve", json={"comment": "fine"})
    assert decided.status_code == 200, decided.text
    drain(container)
    run = client.get(f"{BASE}/runs/{run['run_id']}").json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "approved by admin: fine"


def test_the_wait_for_signal_example_runs_when_its_signal_is_sent(
    client: TestClient, container: Parts
) -> None:
    run = _run(client, container, "wait_for_signal")
    assert run["status"] == "running"
    signal = {"name": "payment.settled", "id": "pay-1001", "data": {"order_id": "A-1001", "amount": 42}}
    sent = client.post(f"{BASE}/signals", json=signal)
    assert sent.status_code == 202, sent.text
    drain(container)
    run = client.get(f"{BASE}/runs/{run['run_id']}").json()
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["message"] == "paid 42 for A-1001"


def test_the_wait_for_signal_example_takes_its_timeout_route(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    run = _run(client, container, "wait_for_signal")
    # A long wait's end is the kick of the sweep 10 to 15 minutes before it (docs/engine.md).
    clock.advance(86_400 - 600)
    assert container.sweeper.sweep().woken == 1
    clock.advance(600)
    drain(container)
    run = client.get(f"{BASE}/runs/{run['run_id']}").json()
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"] == {"message": "no payment for A-1001", "level": "warning"}


def test_the_rag_search_example_runs_once_its_setup_is_done(client: TestClient, container: Parts) -> None:
    setup = GUIDES["rag_search"].setup
    assert setup is not None
    _, path, body = setup
    added = client.post(f"{BASE}{path}", json=body)
    assert added.status_code in (200, 201), added.text

    run = _run(client, container, "rag_search")

    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["text"].startswith(f"Context: {body['content']}\n")


def test_the_setup_of_an_example_comes_before_it_in_the_docs() -> None:
    text = reference.DOCS.read_text()
    section = text[text.index("### `rag_search`") :]
    assert section.index('"$BASE/corpus/documents"') < section.index('"name": "rag-search-example"')


def test_the_parallel_example_runs_its_branches_side_by_side(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    run = _run(client, container, "parallel")
    assert run["status"] == "running"  # the slow branch's delay
    clock.advance(2)
    drain(container)
    run = client.get(f"{BASE}/runs/{run['run_id']}").json()
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["message"] == "hi Ada / slow done"


def test_the_map_example_runs_each_item(client: TestClient, container: Parts) -> None:
    run = _run(client, container, "map")
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["message"] == "3 orders"
    events = client.get(f"{BASE}/runs/{run['run_id']}/events").json()["events"]
    completed = next(e for e in events if e["event_type"] == "step_completed" and e["step_id"] == "each")
    assert [item["message"] for item in completed["payload"]["output"]] == [
        "order 0: A-1 x2",
        "order 1: A-2 x1",
        "order 2: A-3 x5",
    ]


def test_the_workflow_example_runs_once_its_setup_is_done(client: TestClient, container: Parts) -> None:
    setup = GUIDES["workflow"].setup
    assert setup is not None
    _, _path, body = setup
    container.definitions.create(
        "default", "admin", reference.CHILD_WORKFLOW_ID, WorkflowDefinition.model_validate(body)
    )

    run = _run(client, container, "workflow")

    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["message"] == "the child said Hello Ada"
