"""Every route x every kind of caller -> the status class it must answer (multi-user mode).

The table is checked against the app's own route list: a route added without a row here fails
`test_every_route_has_a_row`, and a row for a route that no longer exists fails it too.

Callers (tenant `t1` unless said otherwise):
- none: no credentials; bad: an unknown key
- other: an admin of tenant `t2`
- owner: the user who created the objects, with no role at all
- viewer, operator, admin: users of `t1` with that role
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from tests.conftest import APPS, FakeClock, log_definition, make_fake
from workflows.api.app import create_app
from workflows.api.routes import console, docs
from workflows.domain.dlq import DlqRow
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
OK = "ok"  # allowed: anything but 401, 403, 404 (and no server error)
CALLERS = ("none", "bad", "other", "owner", "viewer", "operator", "admin")

# Expected answers of (other, owner, viewer, operator, admin); none and bad always get 401.
ANY = (OK, OK, OK, OK, OK)
OWNED_READ = (404, OK, OK, OK, OK)
OWNED_CHANGE = (404, OK, 403, OK, OK)
CONTROL = (404, 403, 403, OK, OK)
TENANT_READ = (OK, 403, OK, OK, OK)
TENANT_READ_ONE = (404, 403, OK, OK, OK)
TENANT_CONTROL = (OK, 403, 403, OK, OK)
ADMIN = (OK, 403, 403, 403, OK)
ADMIN_ONE = (404, 403, 403, 403, OK)
PUBLIC = "public"

TABLE: dict[tuple[str, str], Any] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/me"): ANY,
    # the console's static files: no data in them, so no credentials
    ("GET", "/console"): PUBLIC,
    ("GET", "/console/"): PUBLIC,
    ("GET", "/console/assets/{version}/{file}"): PUBLIC,
    # the OpenAPI page's static files, the same
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/"): PUBLIC,
    ("GET", "/docs/assets/{version}/{file}"): PUBLIC,
    # runs
    ("POST", "/runs"): ANY,
    ("POST", "/run"): ANY,
    ("GET", "/runs"): ANY,  # without workflows.runs.read: the caller's own runs
    ("GET", "/runs/{run_id}"): OWNED_READ,
    ("GET", "/runs/{run_id}/events"): OWNED_READ,
    ("GET", "/runs/{run_id}/definition"): OWNED_READ,
    ("GET", "/runs/{run_id}/artifacts"): OWNED_READ,
    ("GET", "/runs/{run_id}/artifacts/{artifact_id}"): OWNED_READ,
    ("POST", "/runs/{run_id}/steps/{step_id}/approve"): CONTROL,
    ("POST", "/runs/{run_id}/steps/{step_id}/reject"): CONTROL,
    ("POST", "/runs/{run_id}/pause"): CONTROL,
    ("POST", "/runs/{run_id}/resume"): CONTROL,
    ("POST", "/runs/{run_id}/cancel"): CONTROL,
    ("POST", "/runs/{run_id}/retry"): CONTROL,
    ("GET", "/approvals"): ANY,  # filtered to what the caller may decide or read
    # signals: workflows.signals.send (operator, admin); to one run, a run the caller may read
    ("POST", "/signals"): TENANT_CONTROL,
    ("POST", "/runs/{run_id}/signals"): CONTROL,
    ("GET", "/step-types"): ANY,
    # webhooks (operators)
    ("GET", "/webhooks/dlq"): TENANT_CONTROL,
    ("GET", "/webhooks/dlq/{row_id}"): CONTROL,
    ("POST", "/webhooks/dlq/{row_id}/replay"): CONTROL,
    ("GET", "/runs/{run_id}/deliveries"): CONTROL,
    # the tenant's corpus
    ("POST", "/corpus/documents"): TENANT_CONTROL,
    ("GET", "/corpus/documents"): TENANT_READ,
    ("GET", "/corpus/documents/{doc_id}"): TENANT_READ_ONE,
    ("DELETE", "/corpus/documents/{doc_id}"): CONTROL,
    # schedules
    ("POST", "/schedules"): CONTROL,  # another tenant's admin cannot name t1's workflow
    ("GET", "/schedules"): TENANT_READ,
    ("GET", "/schedules/{schedule_id}"): TENANT_READ_ONE,
    ("PATCH", "/schedules/{schedule_id}"): CONTROL,
    ("DELETE", "/schedules/{schedule_id}"): CONTROL,
    # API keys
    ("POST", "/api-keys"): ADMIN,
    ("GET", "/api-keys"): ADMIN,
    ("GET", "/api-keys/{key_id}"): ADMIN_ONE,
    ("DELETE", "/api-keys/{key_id}"): ADMIN_ONE,
    # the tenant's secrets
    ("PUT", "/secrets/{name}"): ADMIN,
    ("GET", "/secrets"): ADMIN,
    ("DELETE", "/secrets/{name}"): ADMIN_ONE,
    # definitions
    ("POST", ""): ANY,
    ("GET", ""): ANY,  # without workflows.runs.read: the caller's own workflows
    ("POST", "/validate"): ANY,
    ("GET", "/{workflow_id:uuid}"): OWNED_READ,
    ("DELETE", "/{workflow_id:uuid}"): OWNED_CHANGE,
    ("POST", "/{workflow_id:uuid}/versions"): OWNED_CHANGE,
    ("GET", "/{workflow_id:uuid}/versions"): OWNED_READ,
    ("POST", "/{workflow_id:uuid}/runs"): OWNED_READ,
    ("POST", "/{workflow_id:uuid}/run"): OWNED_READ,
}


def app_routes() -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for context in iter_route_contexts(create_app().routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        path = str(context.path).removeprefix(P)
        for method in context.methods or ():
            if method != "HEAD":
                routes.add((method, path))
    return routes


def test_every_route_has_a_row() -> None:
    routes = app_routes()
    assert routes - TABLE.keys() == set(), "routes without a row in the auth table"
    assert TABLE.keys() - routes == set(), "rows for routes that no longer exist"


# ---- the world each request runs against ----------------------------------------------


@dataclass
class World:
    run_id: str
    workflow_id: str
    name: str
    artifact_id: str
    row_id: str
    doc_id: str
    schedule_id: str
    key_id: str


class Stack:
    def __init__(self, c: Parts, client: TestClient) -> None:
        self.c = c
        self.client = client
        self.keys: dict[str, str] = {}
        self.keys["owner"] = self._key("t1", "owen", [])
        self.keys["viewer"] = self._key("t1", "vera", ["viewer"])
        self.keys["operator"] = self._key("t1", "otto", ["operator"])
        self.keys["admin"] = self._key("t1", "ada", ["admin"])
        self.keys["other"] = self._key("t2", "zed", ["admin"])
        self.keys["bad"] = "wfk_not-a-key-anyone-was-given"
        self.count = 0

    def _key(self, tenant: str, user: str, roles: list[str]) -> str:
        key, _ = self.c.api_keys.create(tenant, user, roles)
        return key

    def call(self, who: str, method: str, path: str, body: Any = None) -> Any:
        headers = {} if who == "none" else {"X-API-KEY": self.keys[who]}
        return self.client.request(method, P + path, json=body, headers=headers)

    def world(self) -> World:
        """Fresh objects of t1's `owen` (and the tenant), so every caller meets the same state."""
        self.count += 1
        name = f"wf-{self.count}"
        definition = {
            "name": name,
            "steps": [
                {"id": "a1", "type": "approval", "config": {"assignees": ["alice"]}},
                {"id": "s2", "type": "log", "config": {"message": "done"}},
            ],
        }
        created = self.call("owner", "POST", "", definition)
        assert created.status_code == 201, created.text
        workflow_id = created.json()["workflow_id"]
        submitted = self.call("owner", "POST", f"/{workflow_id}/runs", {"inputs": {}})
        assert submitted.status_code == 202, submitted.text
        run_id = submitted.json()["run_id"]
        meta = self.c.artifacts.save(
            "t1", run_id, step_id="a1", name="a.txt", content=b"hello", mime_type="text/plain"
        )
        row = DlqRow.new(
            tenant_id="t1", run_id=run_id, url="http://127.0.0.1:9/hook", body_json="{}", now=self.c.clock()
        )
        self.c.dlq.add(row)
        doc_id = f"doc-{self.count}"
        self.c.corpus.add("t1", "hello world", {}, doc_id=doc_id)
        self.c.secrets.put("t1", "TOKEN", "s3cret")
        schedule = self.call(
            "admin", "POST", "/schedules", {"workflow_id": workflow_id, "expression": "rate(5 minutes)"}
        )
        assert schedule.status_code == 201, schedule.text
        _, key = self.c.api_keys.create("t1", f"temp-{self.count}", ["viewer"])
        return World(
            run_id=run_id,
            workflow_id=workflow_id,
            name=name,
            artifact_id=meta.artifact_id,
            row_id=row.id,
            doc_id=doc_id,
            schedule_id=schedule.json()["schedule_id"],
            key_id=key.key_id,
        )


def concrete(path: str, w: World) -> str:
    if path.startswith("/docs/assets/"):
        path = path.replace("{version}", docs.bundle().version).replace("{file}", "start.js")
    values = {
        "{run_id}": w.run_id,
        "{workflow_id:uuid}": w.workflow_id,
        "{step_id}": "a1",
        "{artifact_id}": w.artifact_id,
        "{row_id}": w.row_id,
        "{doc_id}": w.doc_id,
        "{schedule_id}": w.schedule_id,
        "{key_id}": w.key_id,
        "{name}": "TOKEN",
        "{version}": console.bundle().version,
        "{file}": "app.js",
    }
    for name, value in values.items():
        path = path.replace(name, value)
    assert "{" not in path, f"no value for a parameter of {path}"
    return path


BODIES: dict[tuple[str, str], Callable[[World], Any]] = {
    ("POST", "/runs"): lambda w: {"definition": log_definition("hi"), "inputs": {}},
    ("POST", "/run"): lambda w: {"definition": log_definition("hi"), "inputs": {}},
    ("POST", ""): lambda w: log_definition("hi", name=f"{w.name}-new"),
    ("POST", "/validate"): lambda w: log_definition("hi"),
    ("POST", "/{workflow_id:uuid}/versions"): lambda w: log_definition("v2", name=w.name),
    ("POST", "/{workflow_id:uuid}/runs"): lambda w: {"inputs": {}},
    ("POST", "/{workflow_id:uuid}/run"): lambda w: {"inputs": {}},
    ("POST", "/corpus/documents"): lambda w: {"content": "more"},
    ("POST", "/schedules"): lambda w: {"workflow_id": w.workflow_id, "expression": "rate(1 hour)"},
    ("PATCH", "/schedules/{schedule_id}"): lambda w: {"enabled": False},
    ("POST", "/api-keys"): lambda w: {"user_id": "newbie", "roles": ["viewer"]},
    ("PUT", "/secrets/{name}"): lambda w: {"value": "rotated"},
    ("POST", "/signals"): lambda w: {"name": "order.paid", "id": f"{w.name}-all", "data": {"n": 1}},
    ("POST", "/runs/{run_id}/signals"): lambda w: {"name": "order.paid", "id": f"{w.name}-one"},
}


@pytest.fixture
def stack() -> Iterator[Stack]:
    from datetime import UTC, datetime

    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    c = make_fake(clock, auth_mode="multi_user")
    with APPS.lend(c) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield Stack(c, client)


def expected(row: Any, who: str) -> Any:
    if row == PUBLIC:
        return OK
    if who in ("none", "bad"):
        return 401
    return row[CALLERS.index(who) - 2]


@pytest.mark.parametrize(("method", "path"), sorted(TABLE), ids=lambda v: v or "(root)")
def test_route_answers_each_caller_as_the_table_says(stack: Stack, method: str, path: str) -> None:
    got: dict[str, Any] = {}
    want: dict[str, Any] = {}
    # A read changes nothing: every caller reads the same objects. A change gets fresh ones each.
    shared = stack.world() if method == "GET" else None
    for who in CALLERS:
        w = shared or stack.world()
        body = BODIES[(method, path)](w) if (method, path) in BODIES else None
        response = stack.call(who, method, concrete(path, w), body)
        status = response.status_code
        assert status < 500, f"{who}: {response.text}"
        got[who] = status if status in (401, 403, 404) else OK
        want[who] = expected(TABLE[(method, path)], who)
        if status == 401:
            assert response.headers.get("WWW-Authenticate"), "401 without WWW-Authenticate"
    assert got == want


# ---- definitions that reference a secret ---------------------------------------------------

# On top of what the route needs, `workflows.secrets.use` (operator, admin); running a saved
# workflow that references one needs nothing more than running does.
SECRET_USE = (OK, 403, 403, OK, OK)
SECRET_TABLE: dict[tuple[str, str], Any] = {
    ("POST", "/runs"): SECRET_USE,
    ("POST", "/run"): SECRET_USE,
    ("POST", ""): SECRET_USE,
    ("POST", "/{workflow_id:uuid}/versions"): (404, 403, 403, OK, OK),
    ("POST", "/validate"): ANY,  # stores nothing
}


def secret_definition(name: str) -> dict[str, Any]:
    config = {"url": "http://127.0.0.1:9/hook", "headers": {"X-Api-Key": "{{ secrets.TOKEN }}"}}
    return {"name": name, "steps": [{"id": "call", "type": "webhook", "config": config}]}


SECRET_BODIES: dict[tuple[str, str], Callable[[World], Any]] = {
    ("POST", "/runs"): lambda w: {"definition": secret_definition("adhoc"), "inputs": {}},
    ("POST", "/run"): lambda w: {"definition": secret_definition("adhoc"), "inputs": {}},
    ("POST", ""): lambda w: secret_definition(f"{w.name}-new"),
    ("POST", "/validate"): lambda w: secret_definition("check"),
    ("POST", "/{workflow_id:uuid}/versions"): lambda w: secret_definition(w.name),
}


@pytest.mark.parametrize(("method", "path"), sorted(SECRET_TABLE), ids=lambda v: v or "(root)")
def test_a_definition_that_references_a_secret_answers_each_caller_as_the_table_says(
    stack: Stack, method: str, path: str
) -> None:
    got: dict[str, Any] = {}
    want: dict[str, Any] = {}
    for who in CALLERS:
        w = stack.world()
        response = stack.call(who, method, concrete(path, w), SECRET_BODIES[(method, path)](w))
        assert response.status_code < 500, f"{who}: {response.text}"
        got[who] = response.status_code if response.status_code in (401, 403, 404) else OK
        want[who] = expected(SECRET_TABLE[(method, path)], who)
    assert got == want
