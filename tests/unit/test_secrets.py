"""`{{ secrets.NAME }}`: resolved only for the request a webhook sends, visible nowhere else.

A real receiver on 127.0.0.1 sees the value; no API response, event, output, DLQ row or log line
holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_KEY, APPS, LOCAL_WEBHOOKS, FakeClock, drain, make_fake
from tests.faults import Faulty
from tests.integration.test_dlq_worker import ONE_PASS_MS
from tests.receivers import Receiver, Reply
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
VALUE = "s3cr3t-Value-7f1c9e"
PATH_VALUE = "p4th-Part-31d8"


@pytest.fixture
def hooks(clock: FakeClock) -> Parts:
    return make_fake(clock, **LOCAL_WEBHOOKS)


@pytest.fixture
def api(hooks: Parts) -> Iterator[TestClient]:
    with APPS.lend(hooks) as app, TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update({"X-API-KEY": API_KEY})
        yield client


def _webhook(url: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "signed-call",
        "steps": [
            {
                "id": "call",
                "type": "webhook",
                "config": {
                    "url": url + "/{{ secrets.HOOK_PATH }}?token={{ secrets.API_TOKEN }}",
                    "headers": {"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
                    "body": {"key": "{{ secrets.API_TOKEN }}", "run": "{{ run.id }}"},
                    **config,
                },
            }
        ],
    }


def _everything_the_api_shows(api: TestClient, run_id: str) -> str:
    views = [
        api.get(f"{P}/runs/{run_id}"),
        api.get(f"{P}/runs/{run_id}/events", params={"limit": 1000}),
        api.get(f"{P}/runs/{run_id}/definition"),
        api.get(f"{P}/runs/{run_id}/deliveries"),
        api.get(f"{P}/runs"),
        api.get(f"{P}/webhooks/dlq"),
        api.get(f"{P}/secrets"),
    ]
    for row in api.get(f"{P}/webhooks/dlq").json()["rows"]:
        views.append(api.get(f"{P}/webhooks/dlq/{row['id']}"))
    assert all(view.status_code == 200 for view in views), [v.text for v in views if v.status_code != 200]
    return "\n".join(view.text for view in views)


def _stored(c: Parts) -> str:
    """Everything the runs and the DLQ table hold (runs, their events, rows), as text."""
    return repr([vars(c.runs), vars(c.dlq)])


def test_a_secret_reaches_the_receiver_and_nothing_else(
    api: TestClient, hooks: Parts, receiver: Receiver, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given two secrets of the tenant, put through the API
    for name, value in (("API_TOKEN", VALUE), ("HOOK_PATH", PATH_VALUE)):
        put = api.put(f"{P}/secrets/{name}", json={"value": value})
        assert put.status_code == 200, put.text
        assert put.json()["reference"] == f"{{{{ secrets.{name} }}}}"
        assert VALUE not in put.text
    # When a run calls a webhook that references them
    submitted = api.post(f"{P}/runs", json={"definition": _webhook(receiver.url())})
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["run_id"]
    drain(hooks)

    # Then the receiver got the values, in the URL, a header and the body
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "succeeded"
    (request,) = receiver.requests
    assert request.path.endswith(f"/{PATH_VALUE}?token={VALUE}")
    assert request.headers["authorization"] == f"Bearer {VALUE}"
    assert json.loads(request.body) == {"key": VALUE, "run": run_id}
    # And no API view, stored item or log line holds them
    shown = _everything_the_api_shows(api, run_id)
    assert "API_TOKEN" in shown  # the names are there: the secrets listing, the definition
    logs = capfd.readouterr()
    for text in (shown, _stored(hooks), logs.out, logs.err):
        assert VALUE not in text
        assert PATH_VALUE not in text


def test_a_dlq_retry_resolves_the_secret_again_and_stores_only_placeholders(
    api: TestClient, hooks: Parts, receiver: Receiver, capfd: pytest.CaptureFixture[str], clock: FakeClock
) -> None:
    api.put(f"{P}/secrets/API_TOKEN", json={"value": VALUE})
    api.put(f"{P}/secrets/HOOK_PATH", json={"value": PATH_VALUE})
    receiver.replies.append(Reply(status=503, body=b"try later"))
    definition = _webhook(receiver.url(), on_delivery_failure="dlq")
    run_id = api.post(f"{P}/runs", json={"definition": definition}).json()["run_id"]
    drain(hooks)
    (row,) = api.get(f"{P}/webhooks/dlq").json()["rows"]

    # When the DLQ worker retries the row
    clock.advance(3600)
    report = hooks.dlq_worker.run(lambda: ONE_PASS_MS)

    # Then the retry carried the values again, while the row never held them
    assert report.delivered == 1
    retried = receiver.requests[-1]
    assert retried.headers["authorization"] == f"Bearer {VALUE}"
    assert json.loads(retried.body)["key"] == VALUE
    assert api.get(f"{P}/webhooks/dlq/{row['id']}").json()["status"] == "delivered"
    logs = capfd.readouterr()
    for text in (_everything_the_api_shows(api, run_id), _stored(hooks), logs.out, logs.err):
        assert VALUE not in text
        assert PATH_VALUE not in text


def test_a_missing_secret_fails_the_step_naming_it(api: TestClient, hooks: Parts, receiver: Receiver) -> None:
    run_id = api.post(f"{P}/runs", json={"definition": _webhook(receiver.url())}).json()["run_id"]
    drain(hooks)
    run = api.get(f"{P}/runs/{run_id}").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "secret_not_found"
    assert receiver.requests == []


def test_placeholders_in_inputs_are_not_resolved(api: TestClient, hooks: Parts, receiver: Receiver) -> None:
    # Given a secret, and inputs that try to spell its placeholder
    api.put(f"{P}/secrets/API_TOKEN", json={"value": VALUE})
    definition = {
        "name": "echo",
        "steps": [
            {
                "id": "call",
                "type": "webhook",
                "config": {"url": receiver.url(), "body": {"echo": "{{ inputs.text }}"}},
            }
        ],
    }
    forged = "[[secret:0123456789abcdef:API_TOKEN]]"
    api.post(f"{P}/runs", json={"definition": definition, "inputs": {"text": forged}})
    drain(hooks)
    (request,) = receiver.requests
    assert json.loads(request.body) == {"echo": forged}


def test_secret_management_shows_names_only_and_deletes(api: TestClient) -> None:
    api.put(f"{P}/secrets/B_TOKEN", json={"value": VALUE})
    api.put(f"{P}/secrets/A_TOKEN", json={"value": VALUE})
    listed = api.get(f"{P}/secrets")
    assert [s["name"] for s in listed.json()["secrets"]] == ["A_TOKEN", "B_TOKEN"]
    assert VALUE not in listed.text
    assert api.delete(f"{P}/secrets/A_TOKEN").status_code == 204
    assert api.delete(f"{P}/secrets/A_TOKEN").status_code == 404
    assert api.put(f"{P}/secrets/bad-name", json={"value": "x"}).status_code == 404
    assert api.put(f"{P}/secrets/OK", json={"value": ""}).status_code == 422


def test_inline_credentials_are_redacted_in_every_view_of_a_definition(api: TestClient) -> None:
    config = {
        "url": "https://user:hunter2@hooks.example.com/x?token=abc123&page={{ inputs.page }}",
        "headers": {"Authorization": "Bearer abc123", "X-Api-Key": "{{ secrets.KEY }}", "Accept": "json"},
    }
    definition = {
        "name": "inline",
        "on_completion_webhook": "https://hooks.example.com/done?sig=abc123",
        "steps": [{"id": "w", "type": "webhook", "config": config}],
    }
    created = api.post(P, json=definition)
    workflow_id = created.json()["workflow_id"]
    run_id = api.post(f"{P}/{workflow_id}/runs", json={"inputs": {}}).json()["run_id"]
    for view in (created, api.get(f"{P}/{workflow_id}"), api.get(f"{P}/runs/{run_id}/definition")):
        text = view.text
        assert "hunter2" not in text
        assert "abc123" not in text
        shown = view.json().get("definition", view.json())
        step = shown["steps"][0]["config"]
        assert step["url"] == "https://***@hooks.example.com/x?token=***&page={{ inputs.page }}"
        assert step["headers"] == {"Authorization": "***", "X-Api-Key": "{{ secrets.KEY }}", "Accept": "json"}
        assert shown["on_completion_webhook"] == "https://hooks.example.com/done?sig=***"


def test_an_ssm_failure_other_than_not_found_is_transient() -> None:
    # Given SSM answering a throttling error, then "no such parameter" (Stubber: nothing is sent)
    from botocore.config import Config
    from botocore.stub import Stubber

    from workflows.adapters.secrets import SecretStore
    from workflows.domain.secret_refs import SecretUnavailable

    client = boto3.client("ssm", region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    store = SecretStore(client, "/workflows/secrets")
    with Stubber(client) as stub:
        stub.add_client_error("get_parameter", service_error_code="ThrottlingException")
        stub.add_client_error("get_parameter", service_error_code="ParameterNotFound")
        with pytest.raises(SecretUnavailable) as throttled:
            store.get("t1", "TOKEN")
        with pytest.raises(SecretUnavailable) as missing:
            store.get("t1", "OTHER")
    # Then only the missing one is final
    assert throttled.value.transient is True
    assert missing.value.transient is False


def test_a_transient_secret_failure_retries_the_step(
    api: TestClient, hooks: Parts, receiver: Receiver
) -> None:
    from workflows.domain.secret_refs import Secret, SecretUnavailable

    def unreadable(tenant_id: str, name: str) -> Secret:
        raise SecretUnavailable(name, transient=True)

    # The secret store does not answer (throttled) on any read
    hooks.give(secrets=Faulty(hooks.secrets).hook("get", unreadable, times=None))
    definition = _webhook(receiver.url())
    definition["steps"][0]["retry"] = {"max_attempts": 2, "initial_interval_seconds": 0, "jitter": "none"}
    run_id = api.post(f"{P}/runs", json={"definition": definition}).json()["run_id"]
    drain(hooks)
    events = api.get(f"{P}/runs/{run_id}/events").json()["events"]
    assert [e["event_type"] for e in events if e["event_type"].startswith("step_")] == [
        "step_started",
        "step_retrying",
        "step_started",
        "step_failed",
    ]
    run = api.get(f"{P}/runs/{run_id}").json()
    assert run["error"]["code"] == "secret_unavailable"
    assert receiver.requests == []
