"""One Idempotency-Key, one run: whatever fails between the client, the API and the store.

Each test stops a keyed submission at one point, as a stalled store (the write took effect,
its answer was lost) or as a process that died there, and then retries it the way a client
does: the retry is answered with the one run the key stands for, at once, and that run ends.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FakeClock, api_client, drain, log_definition, make_fake
from tests.faults import Faulty, unwrapped
from workflows.api.schemas import AdhocRunRequest
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import RunStatus
from workflows.errors import DependencyUnavailable
from workflows.roots.parts import Parts

RUNS = "/api/v1/workflows/runs"
BODY = {"definition": log_definition("Hello {{ inputs.name }}"), "inputs": {"name": "Ada"}}
KEY = "order-17"


class Died(BaseException):
    """The process stopped here: nothing after this point of the request runs, not even its
    error handling (a BaseException, so no `except Exception` sees it)."""


# (point, store, method, whether the call took effect). The fake run store puts the snapshot
# and the run item in one call: a failure between the two puts leaves no run, as the call
# failing before it takes effect does (the snapshot left behind is content-addressed and
# harmless: docs/storage.md).
POINTS = [
    ("before the claim", "idempotency", "claim", False),
    ("after the claim", "idempotency", "claim", True),
    ("after the snapshot put", "runs", "create", False),
    ("after the run put", "runs", "create", True),
    ("after the kick", "queue", "send", True),
    ("after the claim's completion", "idempotency", "complete", True),
]
FAULTS = {
    "stall": lambda: DependencyUnavailable("the store did not answer in time"),
    "death": lambda: Died(),
}


def _caller(parts: Parts) -> Principal:
    """The principal the API key stands for, as the route sees it."""
    with api_client(parts) as client:
        me = client.get("/api/v1/workflows/me").json()
    return Principal(me["tenant_id"], me["user_id"], ALL_PERMISSIONS)


def _first_attempt(parts: Parts, principal: Principal) -> None:
    """The submission the route makes for BODY under KEY, which may fail or die midway."""
    service = parts.run_service
    body = AdhocRunRequest.model_validate(BODY)
    request = {"route": "runs", "body": body.model_dump(mode="json")}
    service.submit_once(
        principal, KEY, request, lambda: service.submit(principal, body.definition, body.inputs)
    )


def _faulty(
    clock: FakeClock, store: str, method: str, after: bool, fault: BaseException
) -> tuple[Parts, Faulty]:
    """Fake parts whose `store` fails once at `method`, before or after the call takes effect."""
    parts = make_fake(clock)
    faulty = Faulty(getattr(parts, store)).fail(method, fault, after=after)
    return parts.give(**{store: faulty}), faulty


def _runs(parts: Parts) -> list[Any]:
    return list(unwrapped(parts.runs).runs.values())


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize(("point", "store", "method", "after"), POINTS, ids=[p[0] for p in POINTS])
def test_a_retry_after_a_fault_is_answered_with_the_one_run(
    clock: FakeClock, point: str, store: str, method: str, after: bool, fault: str
) -> None:
    # Given a keyed submission that failed or died at this point
    parts, faulty = _faulty(clock, store, method, after, FAULTS[fault]())
    principal = _caller(parts)
    with pytest.raises((DependencyUnavailable, Died)):
        _first_attempt(parts, principal)
    assert faulty.faults[method] == 1
    stored_before = [run.run_id for run in _runs(parts)]

    # When the client retries with the same key and body (no time passes: no lease to wait on)
    with api_client(parts) as client:
        retry = client.post(RUNS, json=BODY, headers={"Idempotency-Key": KEY})
        again = client.post(RUNS, json=BODY, headers={"Idempotency-Key": KEY})

    # Then there is exactly one run, both answers name it, and it runs to its end
    runs = _runs(parts)
    assert len(runs) == 1
    assert retry.status_code == again.status_code == 202
    assert retry.json()["run_id"] == again.json()["run_id"] == runs[0].run_id
    assert stored_before in ([], [runs[0].run_id])
    drain(parts)
    assert parts.runs.get(principal.tenant_id, runs[0].run_id).status == RunStatus.SUCCEEDED


def test_a_run_stored_by_a_request_that_died_is_not_run_twice_a_minute_later(clock: FakeClock) -> None:
    # Given a request that died after its run was put, before it was kicked
    parts, _ = _faulty(clock, "runs", "create", True, Died())
    principal = _caller(parts)
    with pytest.raises(Died):
        _first_attempt(parts, principal)
    (stored,) = _runs(parts)

    # When the same key is resubmitted 61 s later
    clock.advance(61)
    with api_client(parts) as client:
        retry = client.post(RUNS, json=BODY, headers={"Idempotency-Key": KEY})

    # Then the answer is the stored run, which the retry kicked: it ends without the sweeper
    assert retry.status_code == 202
    assert retry.json()["run_id"] == stored.run_id
    assert retry.headers["idempotent-replayed"] == "true"
    assert [run.run_id for run in _runs(parts)] == [stored.run_id]
    drain(parts)
    assert parts.runs.get(principal.tenant_id, stored.run_id).status == RunStatus.SUCCEEDED


def test_a_fresh_key_whose_claim_answer_was_lost_is_not_in_progress_to_its_own_retry(
    clock: FakeClock,
) -> None:
    # Given a first request whose claim was stored but whose answer was lost
    parts, _ = _faulty(clock, "idempotency", "claim", True, DependencyUnavailable("timed out"))
    principal = _caller(parts)
    with pytest.raises(DependencyUnavailable):
        _first_attempt(parts, principal)

    # When it is retried at once
    with api_client(parts) as client:
        retry = client.post(RUNS, json=BODY, headers={"Idempotency-Key": KEY})

    # Then it gets its run, not 409 idempotency_in_progress
    assert retry.status_code == 202
    assert retry.json()["run_id"] == _runs(parts)[0].run_id


def test_a_kick_that_could_not_be_sent_leaves_the_keyed_run_queued_for_the_retry(clock: FakeClock) -> None:
    # Given a keyed submission whose kick could not be sent at all
    parts, _ = _faulty(clock, "queue", "send", False, DependencyUnavailable("queue unavailable"))
    principal = _caller(parts)
    with pytest.raises(DependencyUnavailable):
        _first_attempt(parts, principal)
    (stored,) = _runs(parts)
    assert stored.status == RunStatus.QUEUED

    # When the client retries, the retry kicks that run and it ends
    with api_client(parts) as client:
        retry = client.post(RUNS, json=BODY, headers={"Idempotency-Key": KEY})
    assert retry.json()["run_id"] == stored.run_id
    drain(parts)
    assert parts.runs.get(principal.tenant_id, stored.run_id).status == RunStatus.SUCCEEDED


def test_a_retry_with_another_body_after_an_ambiguous_answer_is_still_refused(clock: FakeClock) -> None:
    parts, _ = _faulty(clock, "runs", "create", True, DependencyUnavailable("timed out"))
    principal = _caller(parts)
    with pytest.raises(DependencyUnavailable):
        _first_attempt(parts, principal)

    with api_client(parts) as client:
        other = client.post(RUNS, json={**BODY, "inputs": {"name": "Bo"}}, headers={"Idempotency-Key": KEY})

    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(_runs(parts)) == 1


def test_on_dynamodb_a_retry_after_a_death_before_the_kick_finds_the_one_run(moto_container: Parts) -> None:
    # Given, on the emulated tables, a request that died after its run was put (the run item's
    # conditional put is what makes the claim's named run one run)
    parts = moto_container
    parts.give(queue=Faulty(parts.queue).fail("send", Died()))
    principal = _caller(parts)
    with pytest.raises(Died):
        _first_attempt(parts, principal)

    # When the client retries
    with api_client(parts) as client:
        retry = client.post(RUNS, json=BODY, headers={"Idempotency-Key": KEY})

    # Then the answer names the one stored run, which the retry kicked and which ends
    items = parts.dynamodb.scan(TableName=parts.settings.runs_table)["Items"]
    run_ids = [item["pk"]["S"].rpartition("#")[2] for item in items if item["sk"]["S"] == "RUN"]
    assert retry.status_code == 202
    assert run_ids == [retry.json()["run_id"]]
    drain(parts)
    assert parts.runs.get(principal.tenant_id, run_ids[0]).status == RunStatus.SUCCEEDED
