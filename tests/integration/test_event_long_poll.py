"""Waiting for a run's events: `GET /runs/{id}/events?since=N&wait=S` (docs/engine.md).

The waiting read's sleep is injected: it moves the fake clock instead of waiting, and records
each pause, so every assertion about time is about the fake clock and the number of checks.
Work that happens "while the request waits" runs in another thread during one of those pauses.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from tests.commits import transition
from tests.conftest import FakeClock, drain, log_definition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import EventType, NewEvent, RunStatus
from workflows.errors import Forbidden, NotFound
from workflows.roots.parts import Parts
from workflows.services.queries import MAX_WAIT_SECONDS, POLL_INTERVAL, RunQueries, poll_delays

RUNS = "/api/v1/workflows/runs"


class Sleeper:
    """Pauses that move the fake clock; `during[n]` runs in another thread during pause n."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pauses: list[float] = []
        self.during: dict[int, Callable[[], object]] = {}

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)
        action = self.during.get(len(self.pauses))
        if action is not None:
            await asyncio.to_thread(action)

    @property
    def waited(self) -> float:
        return sum(self.pauses)


@pytest.fixture
def sleeper(container: Parts, clock: FakeClock) -> Sleeper:
    sleep = Sleeper(clock)
    container.give(
        queries=RunQueries(
            container.runs,
            container.run_index,
            container.run_outputs,
            container.registry,
            clock=clock,
            sleep=sleep,
        )
    )
    return sleep


def queued_run(client: TestClient) -> str:
    """A run submitted but not yet dispatched: it has no events."""
    response = client.post(RUNS, json={"definition": log_definition("hello")})
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def in_another_thread(action: Callable[[], object]) -> Callable[[], None]:
    """`action` run by a thread of its own, as another process's commit would be."""

    def run() -> None:
        worker = threading.Thread(target=action)
        worker.start()
        worker.join()

    return run


# ---- the schedule ----------------------------------------------------------------------------


def test_checks_are_quick_in_the_first_second_then_one_a_second() -> None:
    delays = poll_delays(MAX_WAIT_SECONDS)
    assert sum(delays) == pytest.approx(MAX_WAIT_SECONDS)
    assert sum(delays[:4]) == pytest.approx(1.0)
    assert all(delay == POLL_INTERVAL for delay in delays[4:])
    # The bound on a wait's cost: 4 checks in its first second, then one a second.
    assert len(delays) == 4 + (MAX_WAIT_SECONDS - 1)
    assert poll_delays(0) == []
    assert sum(poll_delays(2.5)) == pytest.approx(2.5)


# ---- answers ---------------------------------------------------------------------------------


def test_an_event_committed_while_waiting_is_answered_long_before_the_wait_ends(
    client: TestClient, container: Parts, sleeper: Sleeper
) -> None:
    # Given a waiting read of a run with no events yet
    run_id = queued_run(client)
    # When another thread runs the run (its commits) during the read's third pause
    sleeper.during[3] = in_another_thread(lambda: drain(container))
    page = client.get(f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 20}).json()

    # Then the read answers with the events at its next check, 0.6 s into a 20 s wait
    assert [e["event_seq"] for e in page["events"]] == [1, 2, 3, 4]
    assert page["next_since"] == 4
    assert len(sleeper.pauses) == 3
    assert sleeper.waited == pytest.approx(0.6)


def test_a_wait_with_nothing_new_ends_with_an_empty_page_at_since(
    client: TestClient, sleeper: Sleeper
) -> None:
    run_id = queued_run(client)

    page = client.get(f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 20}).json()

    assert page == {"run_id": run_id, "events": [], "next_since": 0, "has_more": False}
    assert sleeper.waited == pytest.approx(20)
    assert len(sleeper.pauses) == len(poll_delays(20))


def test_events_that_exist_already_answer_at_once(
    client: TestClient, container: Parts, sleeper: Sleeper
) -> None:
    run_id = queued_run(client)
    drain(container)

    page = client.get(f"{RUNS}/{run_id}/events", params={"since": 1, "wait": 20}).json()

    assert [e["event_seq"] for e in page["events"]] == [2, 3, 4]
    assert sleeper.pauses == []


def test_an_ended_run_answers_at_once(client: TestClient, container: Parts, sleeper: Sleeper) -> None:
    run_id = queued_run(client)
    drain(container)  # succeeded, events 1..4

    page = client.get(f"{RUNS}/{run_id}/events", params={"since": 4, "wait": 20}).json()

    assert page == {"run_id": run_id, "events": [], "next_since": 4, "has_more": False}
    assert sleeper.pauses == []


def test_a_run_that_ends_while_waited_on_answers_at_the_next_check(
    client: TestClient, container: Parts, sleeper: Sleeper
) -> None:
    run_id = queued_run(client)

    def cancel_without_events() -> None:
        run = container.runs.get("default", run_id)
        transition(container.runs, run, {"status": RunStatus.CANCELLED}, [])

    sleeper.during[2] = in_another_thread(cancel_without_events)
    page = client.get(f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 20}).json()

    assert page == {"run_id": run_id, "events": [], "next_since": 0, "has_more": False}
    assert len(sleeper.pauses) == 2


def test_a_filtered_wait_goes_on_past_the_events_it_leaves_out(
    client: TestClient, container: Parts, sleeper: Sleeper
) -> None:
    run_id = queued_run(client)
    delivery = [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)]
    sleeper.during[1] = in_another_thread(lambda: container.runs.append_events("default", run_id, delivery))
    sleeper.during[5] = in_another_thread(lambda: drain(container))

    page = client.get(
        f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 20, "types": "run_completed"}
    ).json()

    # The delivery (event 1) did not end the wait; the run's completion (event 5) did.
    assert [(e["event_seq"], e["event_type"]) for e in page["events"]] == [(5, "run_completed")]
    assert page["next_since"] == 5
    assert len(sleeper.pauses) == 5


def test_a_filtered_wait_that_ends_empty_answers_where_its_reading_stopped(
    client: TestClient, container: Parts, sleeper: Sleeper
) -> None:
    run_id = queued_run(client)
    delivery = [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)]
    sleeper.during[1] = in_another_thread(lambda: container.runs.append_events("default", run_id, delivery))

    page = client.get(
        f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 3, "types": "run_completed"}
    ).json()

    assert page == {"run_id": run_id, "events": [], "next_since": 1, "has_more": False}
    assert sleeper.waited == pytest.approx(3)


def test_the_clock_bounds_a_wait_whose_checks_are_slow(
    client: TestClient, clock: FakeClock, sleeper: Sleeper
) -> None:
    run_id = queued_run(client)
    sleeper.during[1] = lambda: clock.advance(30)  # e.g. a throttled read retried for 30 s

    page = client.get(f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 20}).json()

    assert page["events"] == []
    assert len(sleeper.pauses) == 1


def test_another_request_is_served_while_one_waits(client: TestClient, sleeper: Sleeper) -> None:
    # Given a waiting read (the test client serves every request on one event loop, as uvicorn does)
    run_id = queued_run(client)
    asleep, served = threading.Event(), threading.Event()
    held: list[bool] = []

    def hold_until_served() -> None:
        asleep.set()
        # A bound against hanging, not a timing: it expires only if the loop was held.
        held.append(served.wait(timeout=10))

    sleeper.during[1] = hold_until_served
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.get, f"{RUNS}/{run_id}/events", params={"wait": 20})
        assert asleep.wait(timeout=10)
        # When another request arrives while it sleeps
        other = client.get(f"{RUNS}/{run_id}")
        served.set()
        # Then it is answered meanwhile
        assert other.status_code == 200
        assert waiting.result().status_code == 200
    assert held == [True]


# ---- who may wait ----------------------------------------------------------------------------


def test_a_waiting_read_checks_tenant_and_permission_as_the_plain_read(
    client: TestClient, container: Parts, clock: FakeClock
) -> None:
    run_id = queued_run(client)
    sleep = Sleeper(clock)
    queries = RunQueries(
        container.runs,
        container.run_index,
        container.run_outputs,
        container.registry,
        clock=clock,
        sleep=sleep,
    )

    def wait_as(principal: Principal) -> object:
        return asyncio.run(queries.wait_for_events(principal, run_id, since=0, limit=10, types=[], wait=20))

    with pytest.raises(NotFound):
        wait_as(Principal(tenant_id="other", user_id="admin", permissions=ALL_PERMISSIONS))
    with pytest.raises(Forbidden):
        wait_as(Principal(tenant_id="default", user_id="someone-else", permissions=frozenset()))
    assert sleep.pauses == []


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["-1", "26", "abc", "nan", "inf"])
def test_a_wait_outside_0_to_25_seconds_is_422_naming_wait(client: TestClient, wait: str) -> None:
    run_id = queued_run(client)

    response = client.get(f"{RUNS}/{run_id}/events", params={"wait": wait})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert [d["field"] for d in response.json()["error"]["details"]] == ["wait"]


@pytest.mark.parametrize("types", [["bogus"], ["step_completed,bogus"], ["step_completed", "bogus"]])
def test_an_unknown_event_type_is_422_naming_types_and_the_valid_ones(
    client: TestClient, types: list[str]
) -> None:
    run_id = queued_run(client)

    response = client.get(f"{RUNS}/{run_id}/events", params=[("types", t) for t in types])

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["types"]
    assert "'bogus'" in error["message"]
    assert all(kind.value in error["message"] for kind in EventType)


# ---- on moto: the route and the run repository ---------------------------------------------


@pytest.fixture
def moto_sleeper(moto_container: Parts, clock: FakeClock) -> Sleeper:
    sleep = Sleeper(clock)
    moto_container.give(
        queries=RunQueries(
            moto_container.runs,
            moto_container.run_index,
            moto_container.run_outputs,
            moto_container.registry,
            clock=clock,
            sleep=sleep,
        )
    )
    return sleep


def test_on_dynamodb_a_commit_while_waiting_is_answered_at_the_next_check(
    moto_client: TestClient, moto_container: Parts, moto_sleeper: Sleeper
) -> None:
    run_id = queued_run(moto_client)
    moto_sleeper.during[2] = in_another_thread(lambda: drain(moto_container))

    waited = moto_client.get(f"{RUNS}/{run_id}/events", params={"since": 0, "wait": 20}).json()
    ended = moto_client.get(f"{RUNS}/{run_id}/events", params={"since": 4, "wait": 20}).json()

    assert [e["event_type"] for e in waited["events"]] == [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert len(moto_sleeper.pauses) == 2  # the second read answered at once: the run has ended
    assert ended == {"run_id": run_id, "events": [], "next_since": 4, "has_more": False}
    assert moto_container.runs.event_head("default", run_id) == (4, RunStatus.SUCCEEDED)
