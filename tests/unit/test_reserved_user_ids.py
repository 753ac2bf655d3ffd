"""The service's own names (`schedule:<id>` owns a schedule's runs, `system:timeout` decides a
timed-out approval) are no caller's: every way a user id enters refuses them, in any case, and
a user id an approval step names must be one a caller can have."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from devstack import keys as keys_cli
from tests.conftest import APPS, FakeClock, make_fake
from tests.unit.test_bearer_tokens import AUDIENCE, Issuer
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
SCHEDULE = "schedule:0a1b2c3d-0000-4000-8000-00000000abcd"
RESERVED = [SCHEDULE, "system:timeout", "System:Timeout", "SCHEDULE:x"]


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.close()


@pytest.fixture
def parts(issuer: Issuer, clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user", jwt_issuer=issuer.url, jwt_audience=AUDIENCE)


@pytest.fixture
def api(parts: Parts) -> Iterator[TestClient]:
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("user_id", RESERVED)
def test_the_admin_api_refuses_a_reserved_user_id_naming_the_field(
    api: TestClient, parts: Parts, user_id: str
) -> None:
    admin, _ = parts.api_keys.create("t1", "ada", ["admin"])
    response = api.post(
        f"{P}/api-keys", json={"user_id": user_id, "roles": ["viewer"]}, headers={"X-API-KEY": admin}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "user_id"
    assert "reserved" in detail["message"]
    assert [r.user_id for r in parts.api_keys.records.values()] == ["ada"]


@pytest.mark.parametrize("user_id", RESERVED)
def test_the_key_cli_refuses_a_reserved_user_id(user_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        keys_cli.main(["create", "--tenant", "t1", "--user", user_id, "--roles", "admin"])
    assert exit_.value.code == 2
    assert "is reserved" in capsys.readouterr().err


@pytest.mark.parametrize("user_id", RESERVED)
def test_a_token_whose_user_claim_is_reserved_is_refused(
    issuer: Issuer, api: TestClient, user_id: str
) -> None:
    token = issuer.token({"sub": user_id, "roles": ["viewer"]})
    response = api.get(f"{P}/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "names the service itself" in response.json()["error"]["message"]


def test_a_key_stored_for_a_reserved_user_id_is_refused(api: TestClient, parts: Parts) -> None:
    # Given a key issued to `schedule:<id>` before those names were reserved
    key, record = parts.api_keys.create("t1", "carol", ["viewer"])
    parts.api_keys.records[record.key_id] = dataclasses.replace(record, user_id=SCHEDULE)
    # Then it no longer authenticates
    response = api.get(f"{P}/runs", headers={"X-API-KEY": key})
    assert response.status_code == 401
    assert "names the service itself" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("assignees", "field"),
    [
        (["alice", "bob "], "definition.steps[0].config.assignees[1]"),
        (["system:timeout"], "definition.steps[0].config.assignees[0]"),
        ([SCHEDULE, "alice"], "definition.steps[0].config.assignees[0]"),
        (["a#b"], "definition.steps[0].config.assignees[0]"),
    ],
)
def test_an_approval_step_names_only_assignees_a_caller_can_be(
    api: TestClient, parts: Parts, assignees: list[str], field: str
) -> None:
    owner, _ = parts.api_keys.create("t1", "owen", ["operator"])
    definition = {"name": "x", "steps": [{"id": "a", "type": "approval", "config": {"assignees": assignees}}]}
    response = api.post(f"{P}/runs", json={"definition": definition}, headers={"X-API-KEY": owner})
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


@pytest.mark.parametrize("days", ["-1", "0", "3651", "ten"])
def test_the_key_cli_refuses_an_expiry_outside_one_day_to_ten_years(
    days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        keys_cli.main(
            ["create", "--tenant", "t1", "--user", "alice", "--roles", "admin", f"--expires-days={days}"]
        )
    assert exit_.value.code == 2
    assert "--expires-days" in capsys.readouterr().err
