"""The signal routes (docs/signals.md): `POST /signals` and `POST /runs/{run_id}/signals`, their
answers, their errors and the permission they need, on the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_KEY, APPS, FakeClock, drain, make_fake
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
WAITS = {
    "name": "waits",
    "steps": [
        {
            "id": "paid",
            "type": "wait_for_signal",
            "config": {
                "signals": [{"name": "payment.settled", "match": {"order_id": "{{ inputs.order_id }}"}}],
                "timeout_seconds": 3600,
            },
        },
        {
            "id": "ship",
            "type": "log",
            "config": {"message": "paid {{ last.signals['payment.settled'].data.amount }}"},
        },
    ],
}
WAITS_FOR_TWO = {
    "name": "waits-for-two",
    "steps": [
        {
            "id": "both",
            "type": "wait_for_signal",
            "config": {"signals": [{"name": "packed"}, {"name": "paid"}], "mode": "all"},
        }
    ],
}


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user", signal_quota_per_min=5)


@contextmanager
def _client(parts: Parts, tenant: str, user: str, roles: list[str]) -> Iterator[TestClient]:
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-KEY"] = parts.api_keys.create(tenant, user, roles)[0]
        yield client


@pytest.fixture
def api(parts: Parts) -> Iterator[TestClient]:
    with _client(parts, "t1", "otto", ["operator"]) as client:
        yield client


def _waiting_run(api: TestClient, parts: Parts, definition: dict[str, Any], **inputs: Any) -> str:
    submitted = api.post(f"{P}/runs", json={"definition": definition, "inputs": inputs})
    assert submitted.status_code == 202, submitted.text
    drain(parts)
    run_id = str(submitted.json()["run_id"])
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "running"
    return run_id


def _signal(name: str, signal_id: str, **data: Any) -> dict[str, Any]:
    return {"name": name, "id": signal_id, "data": data}


# ---- POST /signals ---------------------------------------------------------------------------


def test_a_signal_is_accepted_and_moves_the_run_waiting_for_it(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")

    sent = api.post(f"{P}/signals", json=_signal("payment.settled", "pay-1", order_id="A-1", amount=12))
    drain(parts)

    assert sent.status_code == 202, sent.text
    assert sent.json() == {
        "name": "payment.settled",
        "id": "pay-1",
        "sent_at": "2026-01-01T12:00:00.000Z",
        "run_id": None,
        "duplicate": False,
    }
    run = api.get(f"{P}/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "paid 12"


def test_data_defaults_to_an_empty_object(api: TestClient) -> None:
    sent = api.post(f"{P}/signals", json={"name": "ping", "id": "ping-1"})
    assert sent.status_code == 202, sent.text
    assert sent.json()["duplicate"] is False


def test_a_signal_that_does_not_match_leaves_the_run_waiting(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")

    sent = api.post(f"{P}/signals", json=_signal("payment.settled", "pay-2", order_id="B-2"))
    drain(parts)

    assert sent.status_code == 202, sent.text
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "running"


def test_the_same_id_again_answers_the_first_signal_as_a_duplicate(
    api: TestClient, parts: Parts, clock: FakeClock
) -> None:
    first = api.post(f"{P}/signals", json=_signal("order.packed", "pack-1", box=3))
    clock.advance(5)

    again = api.post(f"{P}/signals", json=_signal("order.packed", "pack-1", box=3))

    assert again.status_code == 202, again.text
    assert again.json() == {**first.json(), "duplicate": True}


def test_the_same_id_with_other_content_answers_409(api: TestClient) -> None:
    api.post(f"{P}/signals", json=_signal("order.packed", "pack-1", box=3))

    other = api.post(f"{P}/signals", json=_signal("order.packed", "pack-1", box=4))

    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "conflict"
    assert other.json()["error"]["details"][0]["field"] == "id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "has space", "id": "x"}, "name"),
        ({"name": "ok", "id": "#hash"}, "id"),
        ({"name": "ok", "id": "x" * 129}, "id"),
        ({"name": "ok"}, "id"),
        ({"id": "x"}, "name"),
        ({"name": "ok", "id": "x", "data": [1, 2]}, "data"),
        ({"name": "ok", "id": "x", "extra": 1}, "extra"),
    ],
)
def test_an_invalid_body_answers_422_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    refused = api.post(f"{P}/signals", json=body)

    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == field


def test_data_over_16_kib_answers_413_naming_data(api: TestClient) -> None:
    refused = api.post(f"{P}/signals", json=_signal("big", "big-1", blob="x" * 17_000))

    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "payload_too_large"
    assert refused.json()["error"]["details"][0]["field"] == "data"


def test_signals_carry_the_tenants_quota_and_answer_429_past_it(api: TestClient) -> None:
    answers = [api.post(f"{P}/signals", json=_signal("tick", f"tick-{n}")) for n in range(6)]

    assert [answer.status_code for answer in answers] == [202] * 5 + [429]
    assert answers[0].headers["RateLimit-Limit"] == "5"
    assert answers[0].headers["RateLimit-Remaining"] == "4"
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"


def test_the_quota_is_the_tenants_not_another_tenants(api: TestClient, parts: Parts) -> None:
    for n in range(5):
        assert api.post(f"{P}/signals", json=_signal("tick", f"tick-{n}")).status_code == 202
    with _client(parts, "t2", "zed", ["operator"]) as other:
        assert other.post(f"{P}/signals", json=_signal("tick", "tick-0")).status_code == 202


def test_one_tenants_flood_is_refused_with_429_while_another_tenants_signal_reaches_its_run(
    api: TestClient, parts: Parts
) -> None:
    # Given a run of tenant t2 waiting for its payment
    with _client(parts, "t2", "zed", ["operator"]) as other:
        run_id = _waiting_run(other, parts, WAITS, order_id="B-1")

        # When t1 sends four times its quota of signals a minute, and t2 sends one in the middle
        flood = [
            api.post(f"{P}/signals", json=_signal("payment.settled", f"flood-{n}", order_id="B-1", amount=0))
            for n in range(10)
        ]
        sent = other.post(
            f"{P}/signals", json=_signal("payment.settled", "pay-B-1", order_id="B-1", amount=7)
        )
        flood += [
            api.post(f"{P}/signals", json=_signal("payment.settled", f"flood-{n}", order_id="B-1", amount=0))
            for n in range(10, 20)
        ]
        drain(parts)

        # Then t1 has its 5, and every signal past them is refused with the same clear answer
        assert [answer.status_code for answer in flood] == [202] * 5 + [429] * 15
        for refused in flood[5:]:
            error = refused.json()["error"]
            assert error["code"] == "quota_exceeded"
            assert error["details"] == [{"field": "quota", "message": "signals per minute"}]
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.headers["RateLimit-Remaining"] == "0"
        assert parts.signals.get("t1", "flood-5") is None  # refused: nothing stored
        # and t2's signal was accepted, counted against t2's own quota, and taken by its run
        assert sent.status_code == 202, sent.text
        assert sent.headers["RateLimit-Remaining"] == "4"
        run = other.get(f"{P}/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "paid 7"


def test_another_tenants_signal_never_reaches_a_run(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")
    with _client(parts, "t2", "zed", ["admin"]) as other:
        sent = other.post(f"{P}/signals", json=_signal("payment.settled", "pay-1", order_id="A-1"))
    drain(parts)

    assert sent.status_code == 202, sent.text
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "running"


@pytest.mark.parametrize(
    ("roles", "status"), [([], 403), (["viewer"], 403), (["operator"], 202), (["admin"], 202)]
)
def test_sending_needs_workflows_signals_send(parts: Parts, roles: list[str], status: int) -> None:
    with _client(parts, "t1", "someone", roles) as client:
        answer = client.post(f"{P}/signals", json=_signal("tick", "tick-1"))

    assert answer.status_code == status, answer.text
    if status == 403:
        assert "workflows.signals.send" in answer.json()["error"]["message"]


def test_a_role_given_the_permission_alone_may_send(clock: FakeClock) -> None:
    parts = make_fake(
        clock, auth_mode="multi_user", role_permissions={"notifier": ["workflows.signals.send"]}
    )
    with _client(parts, "t1", "bot", ["notifier"]) as client:
        assert client.post(f"{P}/signals", json=_signal("tick", "tick-1")).status_code == 202


def test_the_single_user_key_may_send(clock: FakeClock) -> None:
    parts = make_fake(clock)
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-KEY"] = API_KEY
        assert client.post(f"{P}/signals", json=_signal("tick", "tick-1")).status_code == 202


# ---- POST /runs/{run_id}/signals ---------------------------------------------------------------


def test_a_signal_to_a_run_says_the_run_completed_its_step(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")

    sent = api.post(
        f"{P}/runs/{run_id}/signals", json=_signal("payment.settled", "pay-1", order_id="A-1", amount=7)
    )
    drain(parts)

    assert sent.status_code == 202, sent.text
    assert sent.json() == {
        "name": "payment.settled",
        "id": "pay-1",
        "sent_at": "2026-01-01T12:00:00.000Z",
        "run_id": run_id,
        "duplicate": False,
        "delivery": "completed",
    }
    assert sent.headers["RateLimit-Limit"] == "5"
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "succeeded"


def test_a_signal_to_a_run_waiting_for_more_is_received(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS_FOR_TWO)

    packed = api.post(f"{P}/runs/{run_id}/signals", json=_signal("packed", "packed-1"))
    paid = api.post(f"{P}/runs/{run_id}/signals", json=_signal("paid", "paid-1"))

    assert (packed.json()["delivery"], paid.json()["delivery"]) == ("received", "completed")


def test_a_signal_the_run_does_not_wait_for_is_ignored_or_not_waiting(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")

    other_order = api.post(f"{P}/runs/{run_id}/signals", json=_signal("payment.settled", "p-9", order_id="Z"))
    other_name = api.post(f"{P}/runs/{run_id}/signals", json=_signal("order.packed", "pack-9"))

    assert other_order.json()["delivery"] == "ignored"
    assert other_name.json()["delivery"] == "not_waiting"


def test_a_signal_to_another_tenants_run_answers_404(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")
    with _client(parts, "t2", "zed", ["admin"]) as other:
        refused = other.post(
            f"{P}/runs/{run_id}/signals", json=_signal("payment.settled", "p-1", order_id="A-1")
        )

    assert refused.status_code == 404, refused.text
    assert api.get(f"{P}/runs/{run_id}").json()["status"] == "running"


@pytest.mark.parametrize("run_id", ["not-a-uuid", "x" * 300, "00000000-0000-4000-8000-000000000000"])
def test_a_run_id_that_names_no_run_answers_404(api: TestClient, run_id: str) -> None:
    refused = api.post(f"{P}/runs/{run_id}/signals", json=_signal("tick", "tick-1"))

    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["code"] == "not_found"


def test_an_id_sent_to_every_run_cannot_be_sent_to_one_run(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")
    api.post(f"{P}/signals", json=_signal("payment.settled", "pay-1", order_id="B"))

    refused = api.post(f"{P}/runs/{run_id}/signals", json=_signal("payment.settled", "pay-1", order_id="B"))

    assert refused.status_code == 409, refused.text


def test_a_viewer_cannot_signal_a_run_it_may_read(api: TestClient, parts: Parts) -> None:
    run_id = _waiting_run(api, parts, WAITS, order_id="A-1")
    with _client(parts, "t1", "vera", ["viewer"]) as viewer:
        refused = viewer.post(
            f"{P}/runs/{run_id}/signals", json=_signal("payment.settled", "p-1", order_id="A-1")
        )

    assert refused.status_code == 403, refused.text
