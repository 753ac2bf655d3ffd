"""Multi-user mode: API keys (hash-only, revocation, expiry), JWT claims, ownership, assignees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, FakeClock, drain, log_definition, make_container
from workflows.adapters.api_keys import hash_key
from workflows.api import deps
from workflows.api.app import create_app
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
EVENTS = Path(__file__).resolve().parents[2] / "events"


class Api:
    def __init__(self, c: Parts, client: TestClient) -> None:
        self.c = c
        self.client = client

    def key(self, tenant: str, user: str, *roles: str, expires_at: int | None = None) -> str:
        key, _ = self.c.api_keys.create(tenant, user, list(roles), expires_at=expires_at)
        return key

    def call(self, key: str | None, method: str, path: str, body: Any = None) -> Any:
        headers = {} if key is None else {"X-API-KEY": key}
        return self.client.request(method, P + path, json=body, headers=headers)


@pytest.fixture
def multi(aws_env: dict[str, str], clock: FakeClock) -> Parts:
    return make_container(aws_env, clock, auth_mode="multi_user")


@pytest.fixture
def api(multi: Parts) -> Iterator[Api]:
    with APPS.lend(multi) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield Api(multi, client)


# ---- keys ------------------------------------------------------------------------------


def test_an_admin_creates_a_key_that_is_shown_once_and_works(api: Api) -> None:
    admin = api.key("t1", "ada", "admin")
    # When
    created = api.call(admin, "POST", "/api-keys", {"user_id": "vera", "roles": ["viewer"], "name": "ci"})
    # Then
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["api_key"].startswith("wfk_")
    assert body["key_id"] == hash_key(body["api_key"])
    assert body["tenant_id"] == "t1"
    assert body["roles"] == ["viewer"]
    assert body["status"] == "active"
    listed = api.call(admin, "GET", "/api-keys").json()["keys"]
    assert {k["user_id"] for k in listed} == {"ada", "vera"}
    assert all("api_key" not in k for k in listed)
    assert api.call(body["api_key"], "GET", "/runs").status_code == 200


def test_only_hashes_are_stored(api: Api) -> None:
    key = api.key("t1", "ada", "admin")
    # Scanning is fine in a test: it proves the key appears nowhere in the table.
    items = boto3.client("dynamodb").scan(TableName=api.c.settings.api_keys_table)["Items"]
    assert key not in json.dumps(items)
    assert {item["pk"]["S"] for item in items} == {hash_key(key)}


def test_a_revoked_key_is_refused_at_once(api: Api) -> None:
    admin = api.key("t1", "ada", "admin")
    created = api.call(admin, "POST", "/api-keys", {"user_id": "otto", "roles": ["operator"]}).json()
    assert api.call(created["api_key"], "GET", "/runs").status_code == 200
    # When
    revoked = api.call(admin, "DELETE", f"/api-keys/{created['key_id']}")
    # Then
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    refused = api.call(created["api_key"], "GET", "/runs")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "API key revoked"
    assert refused.headers["WWW-Authenticate"].startswith("ApiKey")
    again = api.call(admin, "DELETE", f"/api-keys/{created['key_id']}")
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_an_expired_key_is_refused_at_once(api: Api, clock: FakeClock) -> None:
    admin = api.key("t1", "ada", "admin")
    created = api.call(
        admin, "POST", "/api-keys", {"user_id": "vera", "roles": ["viewer"], "expires_in_days": 1}
    )
    key = created.json()["api_key"]
    assert api.call(key, "GET", "/runs").status_code == 200
    # When a day passes
    clock.advance(86_400)
    # Then
    refused = api.call(key, "GET", "/runs")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "API key expired"
    assert api.call(admin, "GET", f"/api-keys/{created.json()['key_id']}").json()["status"] == "expired"


def test_unknown_roles_are_refused_naming_the_field(api: Api) -> None:
    admin = api.key("t1", "ada", "admin")
    response = api.call(admin, "POST", "/api-keys", {"user_id": "x", "roles": ["superuser"]})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "roles"


def test_roles_come_from_configuration(aws_env: dict[str, str], clock: FakeClock) -> None:
    c = make_container(
        aws_env, clock, auth_mode="multi_user", role_permissions='{"auditor": ["workflows.runs.read"]}'
    )
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(c, client)
        auditor = api.key("t1", "aud", "auditor")
        assert api.call(auditor, "GET", "/webhooks/dlq").status_code == 403
        assert api.call(auditor, "GET", "/corpus/documents").status_code == 200


def test_another_tenants_key_cannot_be_seen_or_revoked(api: Api) -> None:
    mine = api.key("t1", "ada", "admin")
    theirs, record = api.c.api_keys.create("t2", "zed", ["admin"])
    assert api.call(mine, "GET", f"/api-keys/{record.key_id}").status_code == 404
    assert api.call(mine, "DELETE", f"/api-keys/{record.key_id}").status_code == 404
    assert api.call(theirs, "GET", "/api-keys").status_code == 200


def test_missing_and_unknown_keys_answer_401_with_www_authenticate(api: Api) -> None:
    for key in (None, "wfk_unknown"):
        response = api.call(key, "GET", "/runs")
        assert response.status_code == 401
        assert 'realm="workflows"' in response.headers["WWW-Authenticate"]


# ---- ownership ---------------------------------------------------------------------------


def test_a_user_without_permissions_reads_only_their_own_runs(api: Api) -> None:
    owen = api.key("t1", "owen")
    mia = api.key("t1", "mia")
    viewer = api.key("t1", "vera", "viewer")
    own = api.call(owen, "POST", "/runs", {"definition": log_definition("hi"), "inputs": {}}).json()["run_id"]
    other = api.call(mia, "POST", "/runs", {"definition": log_definition("hi"), "inputs": {}}).json()[
        "run_id"
    ]
    # Then owen reads his run, not mia's, and lists only his
    assert api.call(owen, "GET", f"/runs/{own}").status_code == 200
    assert api.call(owen, "GET", f"/runs/{other}").status_code == 403
    assert [r["run_id"] for r in api.call(owen, "GET", "/runs").json()["runs"]] == [own]
    # And a viewer reads and lists both
    assert api.call(viewer, "GET", f"/runs/{other}").status_code == 200
    assert {r["run_id"] for r in api.call(viewer, "GET", "/runs").json()["runs"]} == {own, other}
    # And another tenant finds neither
    stranger = api.key("t2", "zed", "admin")
    assert api.call(stranger, "GET", f"/runs/{own}").status_code == 404
    assert api.call(stranger, "GET", "/runs").json()["runs"] == []


def test_a_user_without_permissions_lists_only_their_own_workflows(api: Api) -> None:
    owen = api.key("t1", "owen")
    mia = api.key("t1", "mia")
    mine = api.call(owen, "POST", "", log_definition("a", name="mine")).json()["workflow_id"]
    api.call(mia, "POST", "", log_definition("b", name="hers"))
    assert [w["workflow_id"] for w in api.call(owen, "GET", "").json()["workflows"]] == [mine]


def test_a_named_assignee_may_approve_without_the_control_permission(api: Api) -> None:
    owen = api.key("t1", "owen")
    alice = api.key("t1", "alice")
    bob = api.key("t1", "bob")
    definition = {
        "name": "needs-ok",
        "steps": [
            {"id": "ok", "type": "approval", "config": {"assignees": ["alice"]}},
            {"id": "log", "type": "log", "config": {"message": "approved"}},
        ],
    }
    run_id = api.call(owen, "POST", "/runs", {"definition": definition, "inputs": {}}).json()["run_id"]
    drain(api.c)
    assert api.call(bob, "POST", f"/runs/{run_id}/steps/ok/approve").status_code == 403
    assert api.call(owen, "POST", f"/runs/{run_id}/cancel").status_code == 403
    # When the assignee approves
    approved = api.call(alice, "POST", f"/runs/{run_id}/steps/ok/approve", {"comment": "fine"})
    # Then
    assert approved.status_code == 200
    assert approved.json()["result"] == "applied"
    events = api.call(owen, "GET", f"/runs/{run_id}/events?types=approval_granted").json()["events"]
    assert events[0]["payload"]["approver"] == "alice"


def test_control_events_record_the_actor_and_no_credential(api: Api) -> None:
    otto = api.key("t1", "otto", "operator")
    run_id = api.call(otto, "POST", "/runs", {"definition": log_definition("hi"), "inputs": {}}).json()[
        "run_id"
    ]
    api.call(otto, "POST", f"/runs/{run_id}/cancel")
    events = api.call(otto, "GET", f"/runs/{run_id}/events").json()["events"]
    cancelled = [e for e in events if e["event_type"] == "run_cancelled"]
    assert cancelled[0]["payload"]["actor"] == "otto"
    assert otto not in json.dumps(events)


def test_single_user_mode_ignores_keys_of_the_table(client: TestClient, container: Parts) -> None:
    key, _ = container.api_keys.create("t1", "ada", ["admin"])
    assert client.get(f"{P}/runs").status_code == 200
    assert client.get(f"{P}/runs", headers={"X-API-KEY": key}).status_code == 401


def test_keys_never_reach_the_logs(
    api: Api, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    key = api.key("t1", "ada", "admin")
    # When requests succeed, fail authentication, and fail inside
    api.call(key, "POST", "/runs", {"definition": log_definition("hi"), "inputs": {}})
    api.call(key + "x", "GET", "/runs")
    api.call(key, "POST", "/api-keys", {"user_id": "bob", "roles": ["viewer"]})
    # Then no key appears in anything written
    captured = capsys.readouterr()
    assert key not in captured.out + captured.err + caplog.text
    assert "wfk_" not in captured.out + captured.err + caplog.text
