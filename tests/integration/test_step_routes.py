"""Where a step may send a run is known by its step type alone (`route_fields`, `rejectable`).

A type the registry, the services and the console have never heard of (`pick`, with two route
fields; `gate`, which a person may reject) gets its targets checked, its loops judged, its
reachable steps walked and its routes listed by `GET /step-types` without a change anywhere else.
On the in-memory fakes; the console's graph module runs under Node when it is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from tests.conftest import api_client
from workflows.api.routes import console
from workflows.domain.definition import StepRouting
from workflows.roots.parts import Parts
from workflows.steps.base import StepContext, StepResult, TemplateField
from workflows.steps.registry import StepRegistry, local_step_types

P = "/api/v1/workflows"


class PickConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    choice: bool
    yes: str
    no: str | None = None  # unset: the step after it


class PickStep:
    """Goes to `yes` or `no` as its config says: a type that chooses, like a branch."""

    name = "pick"
    description = "test step"
    config_model = PickConfig
    example = {"choice": True, "yes": "_end"}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields = ("yes", "no")
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, PickConfig)
        target = config.yes if config.choice else config.no
        return StepResult(output={"next": target}, next_step=target)


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GateStep:
    """A step a person may refuse, like an approval."""

    name = "gate"
    description = "test step"
    config_model = GateConfig
    example: dict[str, Any] = {}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()
    rejectable = True

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        return StepResult(output={})


@pytest.fixture
def client(container: Parts) -> Iterator[TestClient]:
    container.give(registry=StepRegistry([*local_step_types(), PickStep(), GateStep()]))
    with api_client(container) as test_client:
        yield test_client


def _log(step_id: str, **routes: str) -> dict[str, Any]:
    return {"id": step_id, "type": "log", "config": {"message": step_id}, **routes}


def _pick(step_id: str, yes: str, no: str | None = None, **routes: str) -> dict[str, Any]:
    config: dict[str, Any] = {"choice": True, "yes": yes} | ({} if no is None else {"no": no})
    return {"id": step_id, "type": "pick", "config": config, **routes}


def _validate(client: TestClient, *steps: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{P}/validate", json={"name": "routes", "steps": list(steps)})
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_the_registry_asks_the_step_type_where_it_routes(container: Parts) -> None:
    registry = StepRegistry([*local_step_types(), PickStep()])

    assert registry.routing("pick") == StepRouting(("yes", "no"), rejectable=False)
    assert registry.routing("branch") == StepRouting(("true_next", "false_next"), rejectable=False)
    assert registry.routing("wait_for_approval") == StepRouting((), rejectable=True)
    assert registry.routing("log") == StepRouting()
    assert registry.routing("no_such_type") == StepRouting()


def test_every_route_field_of_a_registered_type_is_a_field_of_its_config(container: Parts) -> None:
    for step_type in container.registry.all():
        fields = step_type.config_model.model_fields
        assert set(step_type.route_fields) <= set(fields), step_type.name


def test_a_route_field_naming_no_step_is_refused(client: TestClient) -> None:
    report = _validate(client, _pick("choose", yes="nowhere"), _log("after"))

    assert report["valid"] is False
    assert report["errors"] == [
        {"field": "steps[0].config.yes", "message": "step 'choose' routes to unknown step 'nowhere'"}
    ]


def test_route_fields_naming_steps_or_the_end_or_unset_are_accepted(client: TestClient) -> None:
    report = _validate(client, _pick("choose", yes="after", no="_end"), _pick("after", yes="_end"))

    assert (report["valid"], report["errors"], report["warnings"]) == (True, [], [])


def test_a_loop_whose_route_fields_all_stay_inside_is_refused(client: TestClient) -> None:
    # `pick` chooses among its route fields: its on_success (`_end`) is no way out
    definition = {
        "name": "spin",
        "steps": [_log("work"), _pick("again", yes="work", no="work", on_success="_end")],
    }

    response = client.post(P, json=definition)

    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "steps[0]"
    assert "steps work -> again -> work loop forever" in detail["message"]


def test_a_loop_with_one_route_field_leading_out_is_accepted(client: TestClient) -> None:
    definition = {"name": "retry", "steps": [_log("work"), _pick("again", yes="work", no="_end")]}

    assert client.post(P, json=definition).status_code == 201


def test_a_step_reached_only_through_a_route_field_is_reachable(client: TestClient) -> None:
    # `last` follows no step in the list and nothing routes to it but the pick's `yes`
    report = _validate(
        client,
        _pick("choose", yes="last", no="_end"),
        _log("middle", on_success="_end"),
        _log("last", on_success="_end"),
    )

    assert report["warnings"] == []
    assert report["valid"] is True


def test_a_step_a_person_may_reject_is_a_way_out_of_a_loop(client: TestClient) -> None:
    gate = {"id": "gate", "type": "gate", "config": {}, "on_success": "work"}
    assert client.post(P, json={"name": "ask", "steps": [_log("work"), gate]}).status_code == 201

    # unless its rejection is routed back into the loop
    gate["on_failure"] = "work"
    response = client.post(P, json={"name": "ask", "steps": [_log("work"), gate]})
    assert response.status_code == 422, response.text


def test_step_types_list_each_types_route_fields(client: TestClient) -> None:
    items = client.get(f"{P}/step-types").json()["step_types"]
    routes = {item["name"]: item["routes"] for item in items}

    assert routes["pick"] == ["yes", "no"]
    assert routes["branch"] == ["true_next", "false_next"]
    assert routes["gate"] == routes["approval"] == routes["log"] == []


# ---- the console's graph ---------------------------------------------------------------------

GRAPH = console.STATIC / "graph.js"
EDGES = """
import {{ routes }} from "./graph.js";
const definition = {definition};
const routeFields = new Map(Object.entries({route_fields}));
console.log(JSON.stringify(routes(definition, routeFields)));
"""


def test_the_graph_names_no_routing_step_type_nor_route_field() -> None:
    text = GRAPH.read_text()
    for name in ("branch", "true_next", "false_next"):
        assert f'"{name}"' not in text, name
        assert f".{name}" not in text, name


@pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed")
def test_the_graph_draws_the_route_fields_the_step_types_list(client: TestClient, tmp_path: Path) -> None:
    listing = client.get(f"{P}/step-types").json()["step_types"]
    route_fields = {item["name"]: item["routes"] for item in listing}
    definition = {
        "name": "graph",
        "steps": [
            _pick("choose", yes="last", no="_end", on_success="middle"),
            _log("middle"),
            _log("last"),
        ],
    }
    for path in console.STATIC.glob("*.js"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    script = tmp_path / "edges.js"
    script.write_text(EDGES.format(definition=json.dumps(definition), route_fields=json.dumps(route_fields)))

    done = subprocess.run(
        ["node", str(script)], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    edges = {(edge["from"], edge["to"], edge["kind"], edge["label"]) for edge in json.loads(done.stdout)}
    # the pick's two fields, labelled by name; its on_success is not drawn
    assert ("choose", "last", "route", "yes") in edges
    assert ("choose", "_end", "route", "no") in edges
    assert not {edge for edge in edges if edge[0] == "choose" and edge[1] == "middle"}
