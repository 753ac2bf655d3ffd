"""Operator routes for webhook deliveries: DLQ listing, one row, replay, a run's deliveries."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import API_KEY, APPS, FakeClock, make_fake
from tests.receivers import Receiver, Reply, trickler
from workflows.adapters.http.signing import verify
from workflows.api import auth, deps
from workflows.api.app import create_app
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.dlq import DlqRow
from workflows.domain.principal import RUNS_READ, Principal
from workflows.domain.run import Run, RunStatus
from workflows.roots.parts import Parts

BASE = "/api/v1/workflows"
DLQ = f"{BASE}/webhooks/dlq"
TENANT = "default"  # the single-user API key's tenant
SECRET = "whsec_b3BlcmF0b3Itc2VjcmV0LW9wZXJhdG9y"


@pytest.fixture
def local(clock: FakeClock) -> Parts:
    return make_fake(
        clock, webhook_allowlist="127.0.0.1", webhook_allowed_ports="*", webhook_secret=SecretStr(SECRET)
    )


@pytest.fixture
def api(local: Parts) -> Iterator[TestClient]:
    with APPS.lend(local) as app, TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers.update({"X-API-KEY": API_KEY})
        yield test_client


def as_principal(api: TestClient, principal: Principal) -> None:
    app: Any = api.app
    app.dependency_overrides[auth.authenticate] = lambda: principal


RUN_1 = "11111111-1111-4111-8111-111111111111"
RUN_2 = "22222222-2222-4222-8222-222222222222"
THEIRS = "33333333-3333-4333-8333-333333333333"
MISSING = "44444444-4444-4444-8444-444444444444"


def new_run(c: Parts, run_id: str = RUN_1, tenant_id: str = TENANT) -> Run:
    definition = WorkflowDefinition.model_validate(
        {"name": "d", "steps": [{"id": "a", "type": "log", "config": {"message": "x"}}]}
    )
    run = Run(
        run_id=run_id,
        tenant_id=tenant_id,
        owner_id="u",
        definition_version=1,
        definition_name="d",
        status=RunStatus.SUCCEEDED,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
        ended_at="2026-01-01T00:00:00.000Z",
    )
    c.runs.create(run, definition)
    return run


def add_row(
    c: Parts, clock: FakeClock, url: str, *, tenant_id: str = TENANT, run_id: str = RUN_1, **fields: Any
) -> DlqRow:
    row = DlqRow.new(
        tenant_id=tenant_id,
        run_id=run_id,
        url=url,
        body_json=json.dumps({"type": "run.completed", "run_id": run_id}),
        now=clock(),
        last_error="HTTP 502",
        attempts=1,
        **fields,
    )
    c.dlq.add(row)
    clock.advance(1)  # distinct created_at: newest first is well defined
    return row


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


# ---- GET /webhooks/dlq ---------------------------------------------------------------------


def test_list_is_newest_first_and_hides_secrets(api: TestClient, local: Parts, clock: FakeClock) -> None:
    first = add_row(
        local, clock, "https://user:pw@hooks.example.com/a?token=s3cr3t", headers={"Authorization": "x"}
    )
    second = add_row(local, clock, "https://hooks.example.com/b")

    response = api.get(DLQ)

    assert response.status_code == 200
    body = response.json()
    assert [r["id"] for r in body["rows"]] == [second.id, first.id]
    assert body["next_cursor"] is None
    listed = body["rows"][1]
    assert listed["destination"] == "https://hooks.example.com/a"
    assert listed["host"] == "hooks.example.com"
    assert listed["status"] == "pending"
    for leaked in ("s3cr3t", "pw@", "Authorization"):
        assert leaked not in response.text


def test_list_filters_by_status_and_run(api: TestClient, local: Parts, clock: FakeClock) -> None:
    wanted = add_row(local, clock, "https://hooks.example.com/a", run_id=RUN_2)
    add_row(local, clock, "https://hooks.example.com/b", run_id=RUN_1)

    by_run = api.get(DLQ, params={"run_id": RUN_2}).json()["rows"]
    by_status = api.get(DLQ, params={"status": "exhausted"}).json()["rows"]

    assert [r["id"] for r in by_run] == [wanted.id]
    assert by_status == []


def test_list_pages_with_a_cursor(api: TestClient, local: Parts, clock: FakeClock) -> None:
    rows = [add_row(local, clock, f"https://hooks.example.com/{i}") for i in range(3)]

    page1 = api.get(DLQ, params={"limit": 2}).json()
    page2 = api.get(DLQ, params={"limit": 2, "cursor": page1["next_cursor"]}).json()

    assert [r["id"] for r in page1["rows"] + page2["rows"]] == [r.id for r in reversed(rows)]
    assert page2["next_cursor"] is None


def test_tampered_cursor_is_400(api: TestClient, local: Parts, clock: FakeClock) -> None:
    for i in range(2):
        add_row(local, clock, f"https://hooks.example.com/{i}")
    cursor = api.get(DLQ, params={"limit": 1}).json()["next_cursor"]
    document = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    document["k"]["tenant_id"] = "other"
    forged = base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    for bad in ("not-a-cursor", forged):
        response = api.get(DLQ, params={"limit": 1, "cursor": bad})
        assert response.status_code == 400
        assert error_code(response) == "invalid_cursor"


def test_cursor_from_other_filters_is_400(api: TestClient, local: Parts, clock: FakeClock) -> None:
    for i in range(2):
        add_row(local, clock, f"https://hooks.example.com/{i}")
    cursor = api.get(DLQ, params={"limit": 1}).json()["next_cursor"]

    response = api.get(DLQ, params={"limit": 1, "cursor": cursor, "status": "pending"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_cursor"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"status": "lost"}, {"run_id": ""}])
def test_bad_list_parameters_are_422(api: TestClient, params: dict[str, Any]) -> None:
    response = api.get(DLQ, params=params)

    assert response.status_code == 422
    assert error_code(response) == "validation_error"


def test_list_shows_only_the_callers_tenant(api: TestClient, local: Parts, clock: FakeClock) -> None:
    add_row(local, clock, "https://hooks.example.com/a", tenant_id="other")

    assert api.get(DLQ).json()["rows"] == []


# ---- GET /webhooks/dlq/{id} ----------------------------------------------------------------


def test_get_shows_the_body_and_header_names_only(api: TestClient, local: Parts, clock: FakeClock) -> None:
    row = add_row(local, clock, "https://hooks.example.com/a?sig=abc", headers={"X-Token": "t0ken"})

    response = api.get(f"{DLQ}/{row.id}")

    assert response.status_code == 200
    view = response.json()
    assert view["body"] == {"type": "run.completed", "run_id": RUN_1}
    assert view["header_names"] == ["X-Token"]
    assert view["webhook_id"] == row.webhook_id
    assert "t0ken" not in response.text
    assert "sig=abc" not in response.text


def test_get_another_tenants_row_is_404(api: TestClient, local: Parts, clock: FakeClock) -> None:
    row = add_row(local, clock, "https://hooks.example.com/a", tenant_id="other")

    for response in (api.get(f"{DLQ}/{row.id}"), api.get(f"{DLQ}/missing")):
        assert response.status_code == 404
        assert error_code(response) == "not_found"


def test_get_malformed_id_is_404_without_a_read(api: TestClient) -> None:
    assert api.get(f"{DLQ}/bad id!").status_code == 404


# ---- POST /webhooks/dlq/{id}/replay --------------------------------------------------------


def test_replay_delivers_now_with_the_same_webhook_id(
    api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    # Given a pending row that is not due for an hour, of an existing run
    new_run(local)
    row = add_row(local, clock, receiver.url(), next_attempt_at=clock().timestamp() + 3600)

    # When an operator replays it
    response = api.post(f"{DLQ}/{row.id}/replay")

    # Then it was delivered now, signed, with its webhook-id, and the answer is the row afterwards
    assert response.status_code == 200
    view = response.json()
    assert (view["status"], view["attempts"]) == ("delivered", 2)
    assert view["attempt"] == {"outcome": "delivered", "status_code": 200, "error": None}
    [request] = receiver.requests
    assert request.headers["webhook-id"] == row.webhook_id
    verify([SECRET], request.headers, request.body, now=clock())
    # And the run tells the attempt
    events = api.get(f"{BASE}/runs/{RUN_1}/deliveries").json()["deliveries"]
    assert [(e["payload"]["source"], e["payload"]["outcome"]) for e in events] == [("replay", "delivered")]


def test_an_exhausted_row_can_be_replayed(
    api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.reply(Reply(410, body=b""))
    row = add_row(local, clock, receiver.url())
    local.dlq_worker.run(lambda: 20_000)
    assert local.dlq.get(TENANT, row.id).status == "exhausted"

    response = api.post(f"{DLQ}/{row.id}/replay")

    assert response.json()["status"] == "delivered"
    assert [r.headers["webhook-id"] for r in receiver.requests] == [row.webhook_id] * 2


def test_a_delivered_row_can_be_replayed_again(
    api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    row = add_row(local, clock, receiver.url())

    api.post(f"{DLQ}/{row.id}/replay")
    response = api.post(f"{DLQ}/{row.id}/replay")

    assert (response.json()["status"], response.json()["attempts"]) == ("delivered", 3)
    assert len(receiver.requests) == 2


def test_replay_that_fails_transiently_leaves_the_row_pending(
    api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.reply(Reply(503, body=b"busy"))
    row = add_row(local, clock, receiver.url())

    response = api.post(f"{DLQ}/{row.id}/replay")

    view = response.json()
    assert response.status_code == 200
    assert view["status"] == "pending"
    assert view["attempt"] == {"outcome": "transient", "status_code": 503, "error": "HTTP 503: busy"}
    assert view["next_attempt_at"] is not None


def test_replay_against_a_trickling_receiver_answers_within_its_deadline(clock: FakeClock) -> None:
    # Given a 1 s delivery deadline and a row whose receiver sends one byte every 0.5 s
    quick = make_fake(
        clock,
        webhook_allowlist="127.0.0.1",
        webhook_allowed_ports="*",
        webhook_secret=SecretStr(SECRET),
        webhook_dlq_timeout_sec=1,
    )
    trickling = Receiver(default=trickler(0.5))
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: quick
    try:
        row = add_row(quick, clock, trickling.url())
        with TestClient(app, raise_server_exceptions=False) as client:
            client.headers.update({"X-API-KEY": API_KEY})

            # When an operator replays it
            started = time.monotonic()
            response = client.post(f"{DLQ}/{row.id}/replay")
            elapsed = time.monotonic() - started
    finally:
        trickling.close()

    # Then the answer comes at the deadline, as usual: a transient timeout, the row pending
    assert response.status_code == 200
    assert elapsed < 8, f"took {elapsed:.1f} s for a 1 s deadline"
    view = response.json()
    assert view["status"] == "pending"
    assert view["attempt"] == {"outcome": "transient", "status_code": None, "error": "timeout: ReadTimeout"}
    assert len(trickling.requests) == 1


def test_replay_while_a_worker_holds_the_row_is_409(
    api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    row = add_row(local, clock, receiver.url())
    assert local.dlq.claim(row, lease_seconds=60) is not None

    response = api.post(f"{DLQ}/{row.id}/replay")

    assert response.status_code == 409
    assert error_code(response) == "conflict"
    assert receiver.requests == []


def test_replay_of_another_tenants_row_is_404_and_sends_nothing(
    api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver
) -> None:
    row = add_row(local, clock, receiver.url(), tenant_id="other")

    for path in (f"{DLQ}/{row.id}/replay", f"{DLQ}/missing/replay"):
        response = api.post(path)
        assert response.status_code == 404
    assert receiver.requests == []
    assert local.dlq.get("other", row.id) == row


# ---- GET /runs/{run_id}/deliveries ---------------------------------------------------------


def test_deliveries_of_a_run(api: TestClient, local: Parts, clock: FakeClock, receiver: Receiver) -> None:
    run = new_run(local)
    receiver.reply(Reply(500, body=b""))
    local.notifier.notify(run, receiver.url("/done?key=k3y"))
    local.dlq_worker.run(lambda: 20_000)

    response = api.get(f"{BASE}/runs/{RUN_1}/deliveries")

    assert response.status_code == 200
    page = response.json()
    assert [e["event_type"] for e in page["deliveries"]] == ["webhook_delivery"] * 2
    assert [e["payload"]["outcome"] for e in page["deliveries"]] == ["transient", "delivered"]
    assert page["has_more"] is False
    assert "k3y" not in response.text


def test_deliveries_page_with_since(api: TestClient, local: Parts, receiver: Receiver) -> None:
    run = new_run(local)
    local.notifier.notify(run, receiver.url())
    first = api.get(f"{BASE}/runs/{RUN_1}/deliveries").json()

    after = api.get(f"{BASE}/runs/{RUN_1}/deliveries", params={"since": first["next_since"]}).json()

    assert len(first["deliveries"]) == 1
    assert after["deliveries"] == []


def test_deliveries_of_an_unknown_or_foreign_run_is_404(api: TestClient, local: Parts) -> None:
    new_run(local, run_id=THEIRS, tenant_id="other")

    for run_id in (MISSING, THEIRS):
        response = api.get(f"{BASE}/runs/{run_id}/deliveries")
        assert response.status_code == 404
        assert error_code(response) == "not_found"


def test_deliveries_bad_parameters_are_422(api: TestClient, local: Parts) -> None:
    new_run(local)

    for params in ({"since": -1}, {"limit": 0}, {"limit": 1001}):
        assert api.get(f"{BASE}/runs/{RUN_1}/deliveries", params=params).status_code == 422


# ---- permissions -----------------------------------------------------------------------------


def test_routes_need_an_api_key(api: TestClient) -> None:
    response = api.get(DLQ, headers={"X-API-KEY": ""})

    assert response.status_code == 401


def test_routes_need_the_control_permission(api: TestClient, local: Parts, clock: FakeClock) -> None:
    row = add_row(local, clock, "https://hooks.example.com/a")
    new_run(local)
    as_principal(api, Principal(tenant_id=TENANT, user_id="reader", permissions=frozenset({RUNS_READ})))

    for response in (
        api.get(DLQ),
        api.get(f"{DLQ}/{row.id}"),
        api.post(f"{DLQ}/{row.id}/replay"),
        api.get(f"{BASE}/runs/{RUN_1}/deliveries"),
    ):
        assert response.status_code == 403
        assert error_code(response) == "forbidden"


def test_another_tenants_operator_sees_nothing_of_ours(
    api: TestClient, local: Parts, clock: FakeClock
) -> None:
    row = add_row(local, clock, "https://hooks.example.com/a")
    new_run(local)
    as_principal(
        api, Principal(tenant_id="other", user_id="op", permissions=frozenset({"workflows.runs.control"}))
    )

    assert api.get(DLQ).json()["rows"] == []
    assert api.get(f"{DLQ}/{row.id}").status_code == 404
    assert api.post(f"{DLQ}/{row.id}/replay").status_code == 404
    assert api.get(f"{BASE}/runs/{RUN_1}/deliveries").status_code == 404


def test_routes_are_documented_with_their_errors(api: TestClient) -> None:
    paths = api.get(f"{BASE}/openapi.json").json()["paths"]

    assert {"400", "422"} <= set(paths[DLQ]["get"]["responses"])
    assert {"404", "409"} <= set(paths[f"{DLQ}/{{row_id}}/replay"]["post"]["responses"])
    assert "404" in paths[f"{BASE}/runs/{{run_id}}/deliveries"]["get"]["responses"]
