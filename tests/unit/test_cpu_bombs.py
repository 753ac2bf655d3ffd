"""CPU bombs a tenant can send: each ends with its limit's code, and another tenant is answered
while it runs.

The three classes: a nested-quantifier pattern in inputs_schema with a long input (on
submission, and when a schedule fires), a template that builds shared nested structure and
compares or serialises it, and an OpenID issuer that sends its documents a byte at a time.

The pattern and template bombs are cheap now, so one of them would be over before another
request could be sent beside it: `while_bombing` sends them back to back until the other tenant
has been answered, and checks that it was (before the fix, the first bomb held the process for
seconds to hours, and the other tenant waited all that time).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, drain, log_definition, make_fake
from workflows.api import deps
from workflows.api.app import create_app
from workflows.domain.failures import StepFailed
from workflows.domain.messages import StartScheduledRun
from workflows.roots.parts import Parts
from workflows.templating import LIMIT_CODE, render

P = "/api/v1/workflows"
BOMB_PATTERN = "^(a+)+$"
BOMB_INPUT = "a" * 20_000 + "!"  # Python's re would take longer than the universe has left
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "pattern": BOMB_PATTERN}}}
# Two lists each reached 2**40 ways through shared parts, then compared and serialised.
SHARED = (
    "{% set ns = namespace(a=[[]], b=[[]]) %}"
    "{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}"
)
TEMPLATE_BOMBS = [
    SHARED + "{{ ns.a == ns.b }}",
    SHARED + "{{ ns.a|tojson }}",
    SHARED + "{{ ns.a|string }}",
]


def client_for(parts: Parts, key: str) -> TestClient:
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: parts
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["X-API-KEY"] = key
    return client


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    # Quotas off: the bombs are sent until the other tenant is answered, however many that is.
    return make_fake(clock, auth_mode="multi_user", disable_quotas=True)


def while_bombing(bomb: Callable[[], None], other: Callable[[], None], rounds: int = 10_000) -> list[str]:
    """Runs `bomb` back to back on a thread; once the first has started, runs `other` here.

    Returns what happened in order; `bomb` raises if one did not end with its limit's code.
    """
    order: list[str] = []
    started = threading.Event()
    answered = threading.Event()
    failure: list[BaseException] = []

    def bombs() -> None:
        try:
            for _ in range(rounds):
                started.set()
                bomb()
                if answered.is_set():
                    order.append("bombs still running when the other was answered")
                    return
            order.append("bombs all done before the other was answered")
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=bombs)
    thread.start()
    assert started.wait(30)
    other()
    order.append("other answered")
    answered.set()
    thread.join(60)
    assert not thread.is_alive()
    if failure:
        raise failure[0]
    return order


# ---- patterns in inputs_schema -----------------------------------------------------------


def test_a_nested_quantifier_pattern_on_a_long_input_is_refused_while_another_tenant_is_answered(
    parts: Parts,
) -> None:
    bomber = client_for(parts, parts.api_keys.create("t1", "mallory", [])[0])
    other = client_for(parts, parts.api_keys.create("t2", "ada", [])[0])
    body = {"definition": {**log_definition("hi"), "inputs_schema": SCHEMA}, "inputs": {"name": BOMB_INPUT}}
    answers: list[dict[str, Any]] = []

    def bomb() -> None:
        response = bomber.post(f"{P}/runs", json=body)
        assert response.status_code == 422, response.text
        answers.append(response.json()["error"])

    def me() -> None:
        assert other.get(f"{P}/me").status_code == 200

    order = while_bombing(bomb, me)

    assert order == ["other answered", "bombs still running when the other was answered"]
    assert answers[0]["code"] == "validation_error"
    assert answers[0]["details"] == [
        {"field": "inputs.name", "message": f"does not match the pattern {BOMB_PATTERN!r}"}
    ]


def test_a_pattern_re2_cannot_run_is_refused_when_the_definition_is_saved(parts: Parts) -> None:
    client = client_for(parts, parts.api_keys.create("t1", "mallory", ["admin"])[0])
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": r"^(a+)\1$"}}}

    response = client.post(P, json={**log_definition("hi"), "inputs_schema": schema})

    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "inputs_schema.properties.name.pattern"
    assert "RE2" in detail["message"]


def test_a_schedule_fire_checks_its_inputs_with_the_same_bounded_patterns(
    parts: Parts, clock: FakeClock
) -> None:
    # A schedule made while the workflow took any name; a later version adds the pattern.
    bomber = client_for(parts, parts.api_keys.create("t1", "mallory", ["admin"])[0])
    other = client_for(parts, parts.api_keys.create("t2", "ada", [])[0])
    workflow = bomber.post(P, json=log_definition("hi")).json()
    schedule = bomber.post(
        f"{P}/schedules",
        json={
            "workflow_id": workflow["workflow_id"],
            "expression": "rate(1 minute)",
            "inputs": {"name": BOMB_INPUT},
        },
    )
    assert schedule.status_code == 201, schedule.text
    changed = bomber.post(
        f"{P}/{workflow['workflow_id']}/versions", json={**log_definition("hi"), "inputs_schema": SCHEMA}
    )
    assert changed.status_code == 201, changed.text
    fired: list[str] = []

    def fire() -> None:
        # Each fire its own scheduled minute, so none is a duplicate of another.
        scheduled = (clock.now - timedelta(seconds=len(fired))).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = StartScheduledRun(
            tenant_id="t1", schedule_id=schedule.json()["schedule_id"], scheduled_time=scheduled
        )
        result = parts.schedule_service.fire(message)
        assert (result.result, result.reason) == ("skipped", "invalid_inputs")
        fired.append(scheduled)

    def me() -> None:
        assert other.get(f"{P}/me").status_code == 200

    order = while_bombing(fire, me)

    assert order == ["other answered", "bombs still running when the other was answered"]
    last = bomber.get(f"{P}/schedules/{schedule.json()['schedule_id']}").json()["last_fire"]
    assert "does not match the pattern" in last["message"]


# ---- templates ---------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATE_BOMBS, ids=["compared", "tojson", "string"])
def test_a_template_of_shared_nested_lists_fails_its_limit_while_another_tenant_is_answered(
    parts: Parts, template: str
) -> None:
    other = client_for(parts, parts.api_keys.create("t2", "ada", [])[0])

    def bomb() -> None:
        with pytest.raises(StepFailed) as failed:
            render(template, {})
        assert failed.value.code == LIMIT_CODE

    def me() -> None:
        assert other.get(f"{P}/me").status_code == 200

    assert while_bombing(bomb, me) == ["other answered", "bombs still running when the other was answered"]


def test_a_run_whose_template_builds_shared_nested_lists_fails_with_the_template_limit(parts: Parts) -> None:
    client = client_for(parts, parts.api_keys.create("t1", "mallory", [])[0])
    definition = {
        "name": "bomb",
        "steps": [{"id": "s1", "type": "log", "config": {"message": TEMPLATE_BOMBS[0]}}],
    }
    accepted = client.post(f"{P}/runs", json={"definition": definition, "inputs": {}})
    assert accepted.status_code == 202, accepted.text

    drain(parts)

    run = client.get(f"{P}/runs/{accepted.json()['run_id']}").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == LIMIT_CODE


# ---- a trickling OpenID issuer -----------------------------------------------------------


class TricklingIssuer:
    """An OpenID issuer on 127.0.0.1 whose discovery document comes one byte at a time, for
    as long as anyone reads it (about a minute), and stops at `release`."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.cut_off = threading.Event()  # the client went away before the document ended
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.asked.set()
                body = json.dumps({"jwks_uri": f"{issuer.url}/jwks.json", "pad": " " * 600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for byte in body:
                        if issuer.release.wait(0.1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:
                    issuer.cut_off.set()

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def unsigned_token() -> str:
    """A bearer token's shape: enough to ask for the issuer's keys (it is never verified)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part({'sub': 'x'})}.c2ln"


@pytest.fixture
def trickling() -> Iterator[TricklingIssuer]:
    issuer = TricklingIssuer()
    yield issuer
    issuer.close()


def test_a_trickling_issuer_costs_only_the_request_that_fetches_and_only_until_the_deadline(
    trickling: TricklingIssuer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.adapters import jwks

    monkeypatch.setattr(jwks, "FETCH_TIMEOUT_SEC", 2.0)  # how long the test waits, not a threshold
    parts = make_fake(clock, auth_mode="multi_user", jwt_issuer=trickling.url)
    keyed = client_for(parts, parts.api_keys.create("t2", "ada", [])[0])
    fetcher, waiter = client_for(parts, ""), client_for(parts, "")
    for client in (keyed, fetcher, waiter):  # each app built before the race starts
        client.get(f"{P}/me")
    bearer = {"Authorization": f"Bearer {unsigned_token()}"}
    order: list[str] = []
    first: list[Any] = []

    def fetching() -> None:
        first.append(fetcher.get(f"{P}/me", headers=bearer))
        order.append("the fetching request answered")

    thread = threading.Thread(target=fetching)
    thread.start()
    assert trickling.asked.wait(30)  # the fetch is in flight

    second = waiter.get(f"{P}/me", headers=bearer)
    order.append("another bearer request answered")
    with_key = keyed.get(f"{P}/me")
    order.append("an API-key request answered")
    thread.join(30)

    assert order == [
        "another bearer request answered",
        "an API-key request answered",
        "the fetching request answered",
    ]
    assert with_key.status_code == 200
    # No key was ever read: both bearer requests answer 503, neither waiting on the other.
    for response in (second, first[0]):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "dependency_unavailable"
        assert response.headers["Retry-After"]
    # The deadline ended the fetch, not the issuer: it was still sending when the client left.
    assert trickling.cut_off.wait(30)
