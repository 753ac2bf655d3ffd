"""Hostile ids and bodies: refused with their 4xx before anything is read or written.

Every route with a path id, and every route that takes a body, comes from the app's own route
list, so a route added later is covered (or fails here until it is).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from devstack import keys as keys_cli
from tests.conftest import API_KEY, APPS, FakeClock, drain, log_definition, make_fake
from workflows.api import deps
from workflows.api.app import create_app
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
UUID = "0a1b2c3d-0000-4000-8000-00000000abcd"
# As sent on the wire: `%23` arrives as `#` (a literal `#` would start the URL's fragment).
HOSTILE_IDS = [
    f"sub%23{UUID}",
    f"sub%2523{UUID}",
    "%2E%2E",
    f"..%2F{UUID}",
    "é" * 10,
    "ü-" + UUID,
    "x" * 300,
    "x;y",
]


def _routes(methods: set[str]) -> list[tuple[str, str]]:
    found = []
    for context in iter_route_contexts(create_app().routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        for method in context.methods or ():
            if method in methods:
                found.append((method, str(context.path)))
    return sorted(found)


PATH_ID_ROUTES = [
    (method, path)
    for method, path in _routes({"GET", "POST", "PUT", "PATCH", "DELETE"})
    if re.search(r"\{(run_id|step_id|artifact_id|schedule_id|row_id|key_id|doc_id|name)\}", path)
]
BODY_ROUTES = _routes({"POST", "PUT", "PATCH"})


STORES = (
    "runs",
    "definitions",
    "idempotency",
    "schedules",
    "corpus",
    "api_keys",
    "dlq",
    "artifacts",
    "secrets",
)


class Counting:
    """A store, counting every call made through it."""

    def __init__(self, store: Any, calls: list[str], name: str) -> None:
        self.inner = store
        self._calls = calls
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self.inner, attribute)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._name}.{attribute}")
            return value(*args, **kwargs)

        return call


class Calls(list[str]):
    pass


@pytest.fixture
def counted(clock: FakeClock) -> Iterator[tuple[TestClient, Calls, Parts]]:
    c = make_fake(clock)
    calls = Calls()
    c.give(**{name: Counting(getattr(c, name), calls, name) for name in STORES})
    with APPS.lend(c) as app, TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update({"X-API-KEY": API_KEY})
        yield client, calls, c


def _concrete(path: str, hostile: str, parameter: str) -> str:
    values = {
        "{run_id}": UUID,
        "{step_id}": "s1",
        "{decision}": "approve",
        "{action}": "cancel",
        "{artifact_id}": UUID,
        "{schedule_id}": UUID,
        "{row_id}": "0" * 32,
        "{key_id}": "0" * 64,
        "{doc_id}": "doc-1",
        "{name}": "TOKEN",
        "{workflow_id:uuid}": UUID,
    }
    values[parameter] = hostile
    for name, value in values.items():
        path = path.replace(name, value)
    return path


# ---- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PATH_ID_ROUTES, ids=lambda v: v)
def test_a_hostile_path_id_is_not_found_before_any_read(
    counted: tuple[TestClient, Calls, Parts], method: str, path: str
) -> None:
    client, calls, _ = counted
    parameters = re.findall(r"\{(run_id|step_id|artifact_id|schedule_id|row_id|key_id|doc_id|name)\}", path)
    for parameter in parameters:
        for hostile in HOSTILE_IDS:
            calls.clear()
            url = _concrete(path, hostile, "{" + parameter + "}")
            body = {"value": "v"} if path.endswith("/secrets/{name}") and method == "PUT" else None
            response = client.request(method, url, json=body)
            # A `/` inside an id makes another path, which may match another route's template
            # with another method (405); either way nothing is found and nothing is read.
            allowed = {404, 405} if "/" in hostile or ".." in hostile else {404}
            assert response.status_code in allowed, (parameter, hostile, response.text)
            assert calls == [], (parameter, hostile, calls)


@pytest.mark.parametrize("run_id", [UUID.upper(), f"{UUID}%20", f"{{{UUID}}}", UUID.replace("-", "")])
def test_a_run_id_not_in_the_generated_form_is_not_found_before_any_read(
    counted: tuple[TestClient, Calls, Parts], run_id: str
) -> None:
    client, calls, _ = counted
    response = client.get(f"{P}/runs/{run_id}")
    assert response.status_code == 404
    assert calls == []


def test_another_tenants_run_is_not_reached_through_a_separator(clock: FakeClock) -> None:
    # Given a run of tenant `t1.sub` and a key of tenant `t1`
    c = make_fake(clock, auth_mode="multi_user")
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    theirs, _ = c.api_keys.create("t1.sub", "eve", ["admin"])
    mine, _ = c.api_keys.create("t1", "mallory", ["admin"])
    with TestClient(app, raise_server_exceptions=False) as client:
        submitted = client.post(
            f"{P}/runs", json={"definition": log_definition("secret")}, headers={"X-API-KEY": theirs}
        )
        run_id = submitted.json()["run_id"]
        drain(c)
        # When tenant t1 tries every way of spelling the other tenant's key
        for attempt in (f"sub%23{run_id}", f"sub#{run_id}", f".sub%23{run_id}", f"..%2Ft1.sub%23{run_id}"):
            read = client.get(f"{P}/runs/{attempt}", headers={"X-API-KEY": mine})
            cancel = client.post(f"{P}/runs/{attempt}/cancel", headers={"X-API-KEY": mine})
            # Then nothing is found and nothing changes
            assert read.status_code in (404, 405)
            assert cancel.status_code in (404, 405)
        assert client.get(f"{P}/runs/{run_id}", headers={"X-API-KEY": mine}).status_code == 404
        assert client.get(f"{P}/runs/{run_id}", headers={"X-API-KEY": theirs}).json()["status"] == "succeeded"


@pytest.mark.parametrize("tenant", ["t1#sub", "t1/sub", "", "-t1", "t" * 65, "tenant ü"])
def test_the_key_cli_refuses_a_tenant_id_outside_the_pattern(
    tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        keys_cli.main(["create", f"--tenant={tenant}", "--user", "alice", "--roles", "admin"])
    assert exit_.value.code == 2
    assert "tenant id must match" in capsys.readouterr().err


def test_the_key_cli_refuses_a_user_id_outside_the_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        keys_cli.main(["create", "--tenant", "t1", "--user", "a#b", "--roles", "admin"])
    assert "user id must match" in capsys.readouterr().err


def test_the_admin_api_refuses_a_user_id_outside_the_pattern(clock: FakeClock) -> None:
    c = make_fake(clock, auth_mode="multi_user")
    admin, _ = c.api_keys.create("t1", "ada", ["admin"])
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            f"{P}/api-keys", json={"user_id": "bob#x", "roles": ["viewer"]}, headers={"X-API-KEY": admin}
        )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "user_id"


# ---- bodies --------------------------------------------------------------------------------


def _deep(levels: int) -> bytes:
    return b'{"x": ' + b"[" * levels + b"1" + b"]" * levels + b"}"


HOSTILE_BODIES = {
    "depth 300": (_deep(300), 422, "too_deep"),
    "depth 10000": (_deep(10_000), 422, "too_deep"),
    "2 MB": (b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}', 413, "payload_too_large"),
    "NaN": (b'{"x": {"y": NaN}}', 422, "validation_error"),
    "Infinity": (b'{"x": [-Infinity]}', 422, "validation_error"),
    "1e400": (b'{"x": 1e400}', 422, "validation_error"),
    "huge integer": (b'{"x": ' + b"9" * 5000 + b"}", 422, "validation_error"),
}


def _item_counts(c: Parts) -> str:
    """Everything the stores hold, as text."""
    return repr([vars(getattr(c, name).inner) for name in STORES])


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=lambda v: v)
def test_a_hostile_body_is_refused_with_its_code_and_nothing_is_stored(
    counted: tuple[TestClient, Calls, Parts], method: str, path: str
) -> None:
    client, _, c = counted
    before = _item_counts(c)
    url = _concrete(path, UUID, "{run_id}")
    for name, (body, status, code) in HOSTILE_BODIES.items():
        response = client.request(method, url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (name, error)
        assert error["details"][0]["field"] in ("x", "x.y", "x[0]", "body"), (name, error)
    # Then nothing was stored, and listings still answer
    assert _item_counts(c) == before
    for listing in ("/runs", "", "/corpus/documents", "/schedules"):
        assert client.get(P + listing).status_code == 200


def test_deep_metadata_is_refused_and_the_corpus_stays_readable(
    counted: tuple[TestClient, Calls, Parts],
) -> None:
    client, _, _ = counted
    deep: Any = "leaf"
    for _ in range(300):
        deep = {"a": deep}
    body = json.dumps({"content": "hello", "metadata": deep})
    response = client.post(
        f"{P}/corpus/documents", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "too_deep",
        "message": "metadata: nested deeper than 64 levels",
        "details": [{"field": "metadata", "message": "nested deeper than 64 levels"}],
    }
    listing = client.get(f"{P}/corpus/documents")
    assert listing.status_code == 200
    assert listing.json()["documents"] == []


def test_inputs_too_large_to_store_answer_413_and_leave_nothing(
    counted: tuple[TestClient, Calls, Parts],
) -> None:
    client, _, c = counted
    before = _item_counts(c)
    response = client.post(
        f"{P}/runs", json={"definition": log_definition("hi"), "inputs": {"blob": "a" * 500_000}}
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"][0]["field"] == "inputs"
    assert "Retry-After" not in response.headers
    assert _item_counts(c) == before


def test_approval_fields_too_large_answer_413_and_the_run_keeps_waiting(
    counted: tuple[TestClient, Calls, Parts],
) -> None:
    client, _, c = counted
    definition = {"name": "gate", "steps": [{"id": "a1", "type": "approval", "config": {}}]}
    run_id = client.post(f"{P}/runs", json={"definition": definition}).json()["run_id"]
    drain(c)
    response = client.post(f"{P}/runs/{run_id}/steps/a1/approve", json={"fields": {"blob": "a" * 500_000}})
    assert response.status_code == 413
    assert response.json()["error"]["details"][0]["field"] == "fields"
    assert client.get(f"{P}/runs/{run_id}").json()["status"] == "waiting_approval"


# ---- authentication before the body ----------------------------------------------------------


def _asgi_post(app: Any, headers: list[tuple[bytes, bytes]], body_chunks: int) -> tuple[int, int]:
    """POST straight to the ASGI app; (status, how many body messages the app asked for)."""
    asked = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        more = asked < body_chunks
        return {"type": "http.request", "body": b"a" * 65536, "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{P}/runs",
        "raw_path": f"{P}/runs".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return status, asked


def test_an_unauthenticated_30_mb_post_is_refused_before_its_body_is_read(container: Parts) -> None:
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: container
    size = str(30 * 1024 * 1024).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", size)]
    status, asked = _asgi_post(app, headers, body_chunks=480)
    assert status == 401
    assert asked == 0


def test_an_authenticated_oversized_post_is_refused_before_its_body_is_read(container: Parts) -> None:
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: container
    size = str(30 * 1024 * 1024).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", size),
        (b"x-api-key", API_KEY.encode()),
    ]
    status, asked = _asgi_post(app, headers, body_chunks=480)
    assert status == 413
    assert asked == 0


def test_a_chunked_body_is_cut_off_at_the_limit(container: Parts) -> None:
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: container
    headers = [(b"content-type", b"application/json"), (b"x-api-key", API_KEY.encode())]
    status, asked = _asgi_post(app, headers, body_chunks=480)
    assert status == 413
    limit_chunks = container.settings.max_body_bytes // 65536
    assert asked <= limit_chunks + 1
