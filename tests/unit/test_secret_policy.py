"""Secrets are used only as their owner meant (multi-user mode, quotas on).

- Only `workflows.secrets.use` submits ad hoc, or saves, a definition that references one;
- a secret with `allowed_hosts` goes to no other host, not even through a redirect;
- a value is escaped for where it lands, and refused where it would pick the destination or
  break a header;
- a receiver's altered echo of a value reaches no API answer, event, DLQ row or log line.
Receivers are real HTTP servers on 127.0.0.1; nothing is sent anywhere else.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, LOCAL_WEBHOOKS, FakeClock, drain, log_definition, make_fake
from tests.integration.test_dlq_worker import ONE_PASS_MS
from tests.receivers import Receiver, Reply
from tests.unit import test_webhook_delivery_live as live
from workflows.adapters.http.signing import verify
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
VALUE = 's3cr3t Value-7f1c9e "q" \\ end-of-the-value'
ROLES = {"viewer": ["viewer"], "operator": ["operator"], "admin": ["admin"]}


class Api:
    """One tenant's users, each with a key for their role."""

    def __init__(self, parts: Parts, client: TestClient) -> None:
        self.parts = parts
        self.client = client
        self.keys = {who: parts.api_keys.create("t1", who, roles)[0] for who, roles in ROLES.items()}

    def __call__(self, who: str, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, P + path, json=body, headers={"X-API-KEY": self.keys[who]})


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user", **LOCAL_WEBHOOKS)


@pytest.fixture
def api(parts: Parts) -> Iterator[Api]:
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield Api(parts, client)


def webhook(url: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "call",
        "steps": [
            {
                "id": "call",
                "type": "webhook",
                "config": {
                    "url": url,
                    "headers": {"X-Api-Key": "{{ secrets.API_TOKEN }}"},
                    "body": {"key": "{{ secrets.API_TOKEN }}", "note": "token={{ secrets.API_TOKEN }};"},
                    **config,
                },
            }
        ],
    }


def run_to_end(api: Api, definition: dict[str, Any], who: str = "operator") -> dict[str, Any]:
    submitted = api(who, "POST", "/runs", {"definition": definition})
    assert submitted.status_code == 202, submitted.text
    drain(api.parts)
    run: dict[str, Any] = api("admin", "GET", f"/runs/{submitted.json()['run_id']}").json()
    return run


# ---- who may use secrets --------------------------------------------------------------------


def test_a_viewers_ad_hoc_run_that_references_a_secret_is_refused_before_anything_happens(
    api: Api, receiver: Receiver
) -> None:
    # Given a tenant secret
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE})
    # When a viewer submits an ad hoc run whose webhook header uses it
    refused = api("viewer", "POST", "/runs", {"definition": webhook(receiver.url())})
    drain(api.parts)
    # Then it is refused naming the field, and nothing was stored, counted or sent
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "forbidden"
    assert "workflows.secrets.use" in error["message"]
    assert error["details"][0]["field"] == "definition.steps[0].config.headers.X-Api-Key"
    assert api("admin", "GET", "/runs").json()["runs"] == []
    assert not any("#viewer#" in counter for counter in api.parts.quotas.counters)  # type: ignore[attr-defined]
    assert receiver.requests == []


def test_an_operators_ad_hoc_run_may_use_a_secret(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE})
    run = run_to_end(api, webhook(receiver.url()))
    assert run["status"] == "succeeded", run
    assert receiver.requests[0].headers["x-api-key"] == VALUE


def test_a_viewer_may_not_save_a_definition_that_references_a_secret(api: Api) -> None:
    refused = api("viewer", "POST", "", webhook("http://127.0.0.1:9/hook"))
    assert refused.status_code == 403
    assert refused.json()["error"]["details"][0]["field"] == "steps[0].config.headers.X-Api-Key"
    assert api("admin", "GET", "").json()["workflows"] == []


def test_a_new_version_that_references_a_secret_needs_the_permission(api: Api) -> None:
    # Given a viewer's own workflow without secrets
    created = api("viewer", "POST", "", log_definition("hi", name="mine"))
    workflow_id = created.json()["workflow_id"]
    # When the viewer adds a version that uses one
    refused = api("viewer", "POST", f"/{workflow_id}/versions", webhook("http://127.0.0.1:9/hook"))
    # Then it is refused and the workflow keeps its one version
    assert refused.status_code == 403
    assert api("viewer", "GET", f"/{workflow_id}").json()["latest_version"] == 1


def test_a_viewer_runs_a_saved_workflow_whose_saver_used_a_secret(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE})
    created = api("operator", "POST", "", webhook(receiver.url()))
    assert created.status_code == 201, created.text
    submitted = api("viewer", "POST", f"/{created.json()['workflow_id']}/runs", {"inputs": {}})
    assert submitted.status_code == 202, submitted.text
    drain(api.parts)
    assert receiver.requests[0].headers["x-api-key"] == VALUE


def test_validating_a_definition_that_references_a_secret_stays_open(api: Api) -> None:
    checked = api("viewer", "POST", "/validate", webhook("http://127.0.0.1:9/hook"))
    assert checked.status_code == 200
    assert checked.json()["valid"] is True


# ---- where a secret may go ------------------------------------------------------------------


def test_secrets_list_their_allowed_hosts_and_never_their_values(api: Api) -> None:
    put = api(
        "admin",
        "PUT",
        "/secrets/API_TOKEN",
        {"value": VALUE, "allowed_hosts": ["Hooks.Example.com", "*.example.org"]},
    )
    api("admin", "PUT", "/secrets/FREE", {"value": VALUE})
    assert put.status_code == 200, put.text
    assert put.json()["allowed_hosts"] == ["hooks.example.com", "*.example.org"]
    listed = api("admin", "GET", "/secrets")
    assert [(s["name"], s["allowed_hosts"]) for s in listed.json()["secrets"]] == [
        ("API_TOKEN", ["hooks.example.com", "*.example.org"]),
        ("FREE", None),
    ]
    assert VALUE not in listed.text


def test_an_invalid_allowed_host_is_refused_naming_the_entry(api: Api) -> None:
    refused = api(
        "admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE, "allowed_hosts": ["ok.example", "http://x/"]}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "allowed_hosts[1]"
    assert api("admin", "GET", "/secrets").json()["secrets"] == []


def test_a_webhook_to_a_host_the_secret_does_not_allow_is_refused_before_connecting(
    api: Api, receiver: Receiver
) -> None:
    # Given a secret that may go only to hooks.example.com
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE, "allowed_hosts": ["hooks.example.com"]})
    # When an operator's webhook sends it to the receiver at 127.0.0.1
    run = run_to_end(api, webhook(receiver.url()))
    # Then the step failed permanently with its own code, and the receiver saw nothing
    assert run["status"] == "failed"
    assert run["error"]["code"] == "secret_host_not_allowed"
    assert "may not be sent to 127.0.0.1" in run["error"]["message"]
    assert receiver.requests == []


def test_a_webhook_to_an_allowed_host_carries_the_secret(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE, "allowed_hosts": ["127.0.0.1"]})
    run = run_to_end(api, webhook(receiver.url()))
    assert run["status"] == "succeeded", run
    assert receiver.requests[0].headers["x-api-key"] == VALUE


def test_the_dlq_worker_gives_up_on_a_row_whose_secret_no_longer_allows_its_host(
    api: Api, receiver: Receiver, clock: FakeClock
) -> None:
    # Given a delivery parked in the DLQ while its secret allowed the host
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE, "allowed_hosts": ["127.0.0.1"]})
    receiver.replies.append(Reply(status=503))
    run_to_end(api, webhook(receiver.url(), on_delivery_failure="dlq"))
    # When the secret is narrowed to another host and the worker retries
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE, "allowed_hosts": ["hooks.example.com"]})
    clock.advance(3600)
    report = api.parts.dlq_worker.run(lambda: ONE_PASS_MS)
    # Then the row is exhausted at once, and the receiver got only the first attempt
    assert report.exhausted == 1
    (row,) = api("operator", "GET", "/webhooks/dlq").json()["rows"]
    assert row["status"] == "exhausted"
    assert "may not be sent to 127.0.0.1" in row["last_error"]
    assert len(receiver.requests) == 1


# ---- how a value is put in ------------------------------------------------------------------


def test_a_value_with_quotes_and_backslashes_arrives_as_valid_json(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE})
    run_to_end(api, webhook(receiver.url()))
    assert json.loads(receiver.requests[0].body) == {"key": VALUE, "note": f"token={VALUE};"}


def test_a_value_in_the_query_arrives_percent_encoded(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": "a&b=c d/e"})
    run_to_end(api, webhook(receiver.url() + "?token={{ secrets.API_TOKEN }}&x=1"))
    assert receiver.requests[0].path == "/hook?token=a%26b%3Dc%20d%2Fe&x=1"


def test_a_value_in_the_host_fails_the_step_with_a_clear_code(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/HOST", {"value": "127.0.0.1"})
    run = run_to_end(
        api, webhook(f"http://{{{{ secrets.HOST }}}}:{receiver.port}/hook", headers={}, body=None)
    )
    assert run["status"] == "failed"
    assert run["error"]["code"] == "secret_not_allowed_here"
    assert receiver.requests == []


def test_a_value_with_a_line_break_is_refused_in_a_header(api: Api, receiver: Receiver) -> None:
    api("admin", "PUT", "/secrets/API_TOKEN", {"value": "ok\r\nX-Injected: 1"})
    run = run_to_end(api, webhook(receiver.url()))
    assert run["error"]["code"] == "secret_not_allowed_here"
    assert "X-Api-Key" in run["error"]["message"]
    assert receiver.requests == []


# ---- header names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad Header", "x\nfoo", "a:b", "", "caf\u00e9"])
def test_an_illegal_header_name_is_refused_when_the_definition_is_saved(api: Api, name: str) -> None:
    definition = webhook("http://127.0.0.1:9/hook", headers={name: "v"})
    refused = api("operator", "POST", "", definition)
    assert refused.status_code == 422, refused.text
    field = refused.json()["error"]["details"][0]["field"]
    assert field.startswith(f"steps[0].config.headers.{name}")


def test_a_header_value_template_with_a_line_break_is_refused(api: Api) -> None:
    refused = api(
        "operator",
        "POST",
        "/runs",
        {"definition": webhook("http://127.0.0.1:9/h", headers={"X-A": "a\r\nb"})},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "definition.steps[0].config.headers.X-A"


# ---- redirects ------------------------------------------------------------------------------


@pytest.fixture
def second() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_redirect_to_another_origin_carries_no_header_and_no_body_of_the_request(
    receiver: Receiver, second: Receiver
) -> None:
    # Given a receiver that redirects to another origin (hooks.test is 127.0.0.1 in the test zone)
    receiver.replies.append(Reply(307, {"Location": second.url("/next", host="hooks.test")}))
    delivery = live.deliverer(
        live.LoopbackOnlyConnector(), allowlist="127.0.0.1,hooks.test", follow_redirects=True
    )
    body = json.dumps({"key": VALUE}).encode()
    # When a request carrying a secret in a header and the body is delivered
    result = delivery.deliver(receiver.url(), body, "msg_1", {"X-Api-Key": VALUE, "X-Trace": "t-1"})
    # Then the second origin got neither the header nor the body, only an empty signed request
    assert result.outcome == "delivered"
    (moved,) = second.requests
    assert "x-api-key" not in moved.headers
    assert "x-trace" not in moved.headers
    assert moved.body == b""
    verify([live.SECRET], moved.headers, b"", now=live.NOW)
    assert receiver.requests[0].headers["x-api-key"] == VALUE


def test_a_redirect_to_a_host_a_carried_secret_does_not_allow_is_not_followed(
    receiver: Receiver, second: Receiver
) -> None:
    receiver.replies.append(Reply(302, {"Location": second.url("/next", host="hooks.test")}))
    connector = live.LoopbackOnlyConnector()
    delivery = live.deliverer(connector, allowlist="127.0.0.1,hooks.test", follow_redirects=True)

    result = delivery.deliver(
        receiver.url(), b"{}", "msg_1", {"X-Api-Key": VALUE}, secret_hosts={"API_TOKEN": ("127.0.0.1",)}
    )

    assert (result.outcome, result.code) == ("permanent", "secret_host_not_allowed")
    assert "may not be sent to hooks.test" in (result.error or "")
    assert second.requests == []
    assert connector.connected == ["127.0.0.1"]


def test_a_same_origin_redirect_keeps_the_request(receiver: Receiver) -> None:
    receiver.replies.append(Reply(308, {"Location": "/moved"}))
    delivery = live.deliverer(live.LoopbackOnlyConnector(), follow_redirects=True)
    result = delivery.deliver(
        receiver.url(), b'{"a":1}', "m", {"X-Api-Key": VALUE}, secret_hosts={"T": ("127.0.0.1",)}
    )
    assert result.outcome == "delivered"
    assert receiver.requests[1].headers["x-api-key"] == VALUE
    assert receiver.requests[1].body == b'{"a":1}'


# ---- echoes ---------------------------------------------------------------------------------

ECHOES = {
    "as sent": lambda v: v,
    "whitespace collapsed": lambda v: " ".join(v.split()),
    "truncated": lambda v: v[:14],
    "json-escaped": lambda v: json.dumps({"received": v}),
    "url-encoded": lambda v: quote(v, safe=""),
    "form-encoded": quote_plus,
    "upper-cased": str.upper,
}


class EchoReceiver:
    """A receiver on 127.0.0.1 that answers every POST with `status` and an altered copy of the
    X-Api-Key header it got."""

    def __init__(self, status: int, alter: Any) -> None:
        self.requests = 0
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                echo.requests += 1
                reply = f"invalid key <{alter(self.headers.get('X-Api-Key', ''))}> refused".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        # A short poll: shutdown waits for the loop to notice.
        serve = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        serve.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def everything_shown(api: Api, run_id: str) -> str:
    views = [
        api("admin", "GET", f"/runs/{run_id}"),
        api("admin", "GET", f"/runs/{run_id}/events?limit=1000"),
        api("admin", "GET", f"/runs/{run_id}/deliveries"),
        api("admin", "GET", "/webhooks/dlq"),
    ]
    views += [api("admin", "GET", f"/webhooks/dlq/{row['id']}") for row in views[-1].json()["rows"]]
    assert all(view.status_code == 200 for view in views), [view.text for view in views]
    return "\n".join(view.text for view in views)


def leaks(text: str) -> list[str]:
    """Pieces of the value (8 characters or more, whatever the case) found in `text`."""
    folded = "".join(text.casefold().split())
    compact = "".join(VALUE.split()).casefold()
    return [compact[i : i + 8] for i in range(len(compact) - 7) if compact[i : i + 8] in folded]


@pytest.mark.parametrize("alter", ECHOES.values(), ids=ECHOES.keys())
def test_an_altered_echo_of_a_secret_is_in_no_answer_event_dlq_row_or_log_line(
    api: Api, clock: FakeClock, capfd: pytest.CaptureFixture[str], alter: Any
) -> None:
    # Given a receiver that echoes the secret header, altered, in a 503 answer
    echo = EchoReceiver(503, alter)
    try:
        api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE})
        # When the webhook fails into the DLQ and the worker retries it
        run = run_to_end(api, webhook(echo.url(), on_delivery_failure="dlq"))
        clock.advance(3600)
        api.parts.dlq_worker.run(lambda: ONE_PASS_MS)
    finally:
        echo.close()
    # Then the echo was there to be seen, scrubbed, everywhere
    assert echo.requests == 2
    shown = everything_shown(api, run["run_id"])
    assert "invalid key <" in shown
    assert "***" in shown
    logs = capfd.readouterr()
    stored = repr([vars(api.parts.runs), vars(api.parts.dlq)])
    for text in (shown, stored, logs.out, logs.err):
        assert leaks(text) == []


def test_an_echo_in_a_refusal_is_not_in_the_runs_error(api: Api) -> None:
    echo = EchoReceiver(400, ECHOES["json-escaped"])
    try:
        api("admin", "PUT", "/secrets/API_TOKEN", {"value": VALUE})
        run = run_to_end(api, webhook(echo.url()))
    finally:
        echo.close()
    assert run["error"]["code"] == "webhook_rejected"
    assert "invalid key <" in run["error"]["message"]
    assert leaks(json.dumps(run)) == []
