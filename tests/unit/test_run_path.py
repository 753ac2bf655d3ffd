"""The thin end-to-end path in-process: API -> table + queue -> engine -> API reads."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import drain, log_definition
from workflows.roots.parts import Parts


def test_adhoc_log_run_succeeds_with_its_events(client: TestClient, container: Parts) -> None:
    # Given an ad-hoc one-step log workflow
    response = client.post(
        "/api/v1/workflows/runs",
        json={"definition": log_definition("Hello {{ inputs.name }}"), "inputs": {"name": "Ada"}},
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.json()["status"] == "queued"
    assert response.headers["location"] == f"/api/v1/workflows/runs/{run_id}"

    # When the dispatcher consumes the queue
    drain(container)

    # Then the run succeeded with the rendered output and the four events in order
    run = client.get(f"/api/v1/workflows/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["outputs"] == {"message": "Hello Ada", "level": "info"}
    assert run["usage"]["steps_executed"] == 1
    events = client.get(f"/api/v1/workflows/runs/{run_id}/events").json()
    assert [e["event_type"] for e in events["events"]] == [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert [e["event_seq"] for e in events["events"]] == [1, 2, 3, 4]
    assert events["next_since"] == 4


def test_events_page_from_since_with_type_filter(client: TestClient, container: Parts) -> None:
    run_id = client.post("/api/v1/workflows/runs", json={"definition": log_definition("a", "b", "c")}).json()[
        "run_id"
    ]
    drain(container)

    page = client.get(f"/api/v1/workflows/runs/{run_id}/events", params={"since": 2, "limit": 3}).json()
    assert [e["event_seq"] for e in page["events"]] == [3, 4, 5]
    assert page["next_since"] == 5

    completed = client.get(
        f"/api/v1/workflows/runs/{run_id}/events", params=[("types", "step_completed,run_completed")]
    ).json()
    assert [e["event_type"] for e in completed["events"]] == ["step_completed"] * 3 + ["run_completed"]


def test_steps_see_earlier_outputs(client: TestClient, container: Parts) -> None:
    definition = {
        "name": "chain",
        "steps": [
            {"id": "first", "type": "log", "config": {"message": "one"}},
            {
                "id": "second",
                "type": "log",
                "config": {"message": "{{ steps.first.output.message }}+{{ last.message }}"},
            },
        ],
    }
    run_id = client.post("/api/v1/workflows/runs", json={"definition": definition}).json()["run_id"]
    drain(container)
    run = client.get(f"/api/v1/workflows/runs/{run_id}").json()
    assert run["outputs"]["message"] == "one+one"


def test_unknown_run_is_404(client: TestClient) -> None:
    response = client.get("/api/v1/workflows/runs/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_run_pins_its_definition(client: TestClient) -> None:
    definition = log_definition("Hello {{ inputs.name }}", name="pinned")
    accepted = client.post("/api/v1/workflows/runs", json={"definition": definition}).json()
    response = client.get(accepted["links"]["definition"])
    assert response.status_code == 200
    pinned = response.json()
    assert pinned["name"] == "pinned"
    assert pinned["steps"][0]["config"] == {"message": "Hello {{ inputs.name }}"}
    assert client.get("/api/v1/workflows/runs/nope/definition").status_code == 404
