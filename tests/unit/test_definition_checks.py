"""Definitions that could never work are refused where they enter: create, validate, both submits.

Endless loops of unconditional routing, templates that do not parse, and `secrets` where they
are not resolved each answer 422 naming the field (for validate: `valid: false` with the same
errors); nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import log_definition

P = "/api/v1/workflows"


def _loop() -> dict[str, Any]:
    return {
        "name": "ping-pong",
        "steps": [
            {"id": "ping", "type": "log", "config": {"message": "ping"}, "on_success": "pong"},
            {"id": "pong", "type": "log", "config": {"message": "pong"}, "on_success": "ping"},
        ],
    }


def _bad_syntax() -> dict[str, Any]:
    return {"name": "typo", "steps": [{"id": "s1", "type": "log", "config": {"message": "{{ inputs.x "}}]}


def _bad_condition() -> dict[str, Any]:
    branch = {"condition": "inputs.score >", "true_next": "_end", "false_next": "_end"}
    return {"name": "cond", "steps": [{"id": "b", "type": "branch", "config": branch}]}


def _bad_webhook_header() -> dict[str, Any]:
    config = {"url": "https://hooks.example.com/x", "headers": {"X-Sig": "{% if %}"}}
    return {"name": "hook", "steps": [{"id": "w", "type": "webhook", "config": config}]}


def _secret_in_a_log() -> dict[str, Any]:
    return log_definition("token is {{ secrets.TOKEN }}", name="leaky")


CASES: dict[str, tuple[Callable[[], dict[str, Any]], str, str]] = {
    "loop": (_loop, "steps[0]", "ping -> pong -> ping"),
    "syntax": (_bad_syntax, "steps[0].config.message", "template syntax error"),
    "condition": (_bad_condition, "steps[0].config.condition", "template syntax error"),
    "header": (_bad_webhook_header, "steps[0].config.headers.X-Sig", "template syntax error"),
    "secret outside a webhook": (_secret_in_a_log, "steps[0].config.message", "secrets may be used only"),
}


def _refused(response: Any, field: str, words: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field
    assert words in error["details"][0]["message"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_create_refuses(client: TestClient, case: str) -> None:
    make, field, words = CASES[case]
    _refused(client.post(P, json=make()), field, words)
    assert client.get(P).json()["workflows"] == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_reports(client: TestClient, case: str) -> None:
    make, field, words = CASES[case]
    report = client.post(f"{P}/validate", json=make()).json()
    assert report["valid"] is False
    assert report["errors"][0]["field"] == field
    assert words in report["errors"][0]["message"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_adhoc_submit_refuses(client: TestClient, case: str) -> None:
    make, field, words = CASES[case]
    _refused(client.post(f"{P}/runs", json={"definition": make()}), f"definition.{field}", words)
    assert client.get(f"{P}/runs").json()["runs"] == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_saved_submit_refuses_a_version_that_no_longer_passes(
    client: TestClient, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a workflow saved before the check existed (stored without it)
    make, field, words = CASES[case]
    from workflows.services import definitions as definitions_service

    monkeypatch.setattr(definitions_service, "validate_definition", lambda *args, **kwargs: None)
    created = client.post(P, json=make())
    assert created.status_code == 201, created.text
    monkeypatch.undo()
    # When it is run, the submit validates it again
    response = client.post(f"{P}/{created.json()['workflow_id']}/runs", json={"inputs": {}})
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"].endswith(field)
    assert words in detail["message"]
    assert client.get(f"{P}/runs").json()["runs"] == []


def test_a_loop_through_a_branch_is_allowed(client: TestClient) -> None:
    definition = {
        "name": "poll",
        "steps": [
            {"id": "check", "type": "log", "config": {"message": "checking"}},
            {
                "id": "done",
                "type": "branch",
                "config": {
                    "condition": "steps.check.output.level == 'info'",
                    "true_next": "_end",
                    "false_next": "check",
                },
            },
        ],
    }
    assert client.post(P, json=definition).status_code == 201


def test_a_loop_with_a_failure_exit_is_allowed(client: TestClient) -> None:
    definition = _loop()
    definition["steps"][1]["on_failure"] = "_end"
    assert client.post(P, json=definition).status_code == 201


def test_a_self_loop_names_the_step(client: TestClient) -> None:
    definition = {
        "name": "spin",
        "steps": [{"id": "a", "type": "log", "config": {"message": "x"}, "on_success": "a"}],
    }
    _refused(client.post(P, json=definition), "steps[0]", "steps a -> a loop forever")


def test_secrets_are_allowed_in_a_webhooks_url_headers_and_body(client: TestClient) -> None:
    config = {
        "url": "https://hooks.example.com/{{ secrets.PATH }}",
        "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
        "body": {"key": "{{ secrets.KEY }}"},
    }
    definition = {"name": "hook", "steps": [{"id": "w", "type": "webhook", "config": config}]}
    assert client.post(P, json=definition).status_code == 201
