"""The fair-share port (ports.ShareStore) against its DynamoDB adapter (moto) and its fake."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import FakeClock, make_container, make_fake
from workflows.ports import ShareStore

NOW = 1_800_000_000.0


@pytest.fixture(params=["fake", pytest.param("moto", marks=pytest.mark.moto)])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[ShareStore]:
    if request.param == "fake":
        yield make_fake(clock).share_store
    else:
        yield make_container(request.getfixturevalue("aws_env"), clock).share_store


def test_an_idle_clock_starts_work_now(store: ShareStore) -> None:
    assert store.reserve("acme", 0.5, NOW) == NOW


def test_a_busy_clock_reserves_after_the_work_before(store: ShareStore) -> None:
    store.reserve("acme", 0.5, NOW)
    store.reserve("acme", 0.5, NOW)
    assert store.reserve("acme", 0.5, NOW) == NOW + 1.0


def test_a_clock_left_behind_restarts_at_now(store: ShareStore) -> None:
    store.reserve("acme", 0.5, NOW)
    assert store.reserve("acme", 0.5, NOW + 60) == NOW + 60


def test_charged_work_moves_the_clock_on(store: ShareStore) -> None:
    store.reserve("acme", 0.5, NOW)
    store.charge("acme", 2.0, NOW)
    assert store.reserve("acme", 0.5, NOW) == NOW + 2.5


def test_clocks_are_per_key(store: ShareStore) -> None:
    store.reserve("acme", 10.0, NOW)
    assert store.reserve("globex", 0.5, NOW) == NOW


def test_concurrent_reservations_never_share_a_moment(store: ShareStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        starts = list(pool.map(lambda _: store.reserve("acme", 1.0, NOW), range(16)))
    assert sorted(starts) == [NOW + i for i in range(16)]


def test_permits_stop_at_the_limit(store: ShareStore) -> None:
    assert store.acquire("acme", "run-1", 2, NOW + 60, NOW)
    assert store.acquire("acme", "run-2", 2, NOW + 60, NOW)
    assert not store.acquire("acme", "run-3", 2, NOW + 60, NOW)


def test_a_holder_taking_its_permit_again_takes_no_second(store: ShareStore) -> None:
    assert store.acquire("acme", "run-1", 2, NOW + 60, NOW)
    assert store.acquire("acme", "run-1", 2, NOW + 60, NOW)
    assert store.acquire("acme", "run-2", 2, NOW + 60, NOW)


def test_a_released_permit_is_free_again(store: ShareStore) -> None:
    store.acquire("acme", "run-1", 1, NOW + 60, NOW)
    store.release("acme", "run-1")
    assert store.acquire("acme", "run-2", 1, NOW + 60, NOW)


def test_an_expired_lease_frees_its_permit(store: ShareStore) -> None:
    # Its holder died mid-call: nobody released it.
    store.acquire("acme", "run-1", 1, NOW + 60, NOW)
    assert not store.acquire("acme", "run-2", 1, NOW + 120, NOW + 59)
    assert store.acquire("acme", "run-2", 1, NOW + 120, NOW + 61)


def test_pools_are_apart(store: ShareStore) -> None:
    store.acquire("acme", "run-1", 1, NOW + 60, NOW)
    assert store.acquire("globex", "run-2", 1, NOW + 60, NOW)


def test_concurrent_takers_never_exceed_the_limit(store: ShareStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        taken = list(pool.map(lambda i: store.acquire("acme", f"run-{i}", 3, NOW + 60, NOW), range(12)))
    assert taken.count(True) == 3


def test_a_negative_charge_gives_reserved_time_back(store: ShareStore) -> None:
    store.reserve("acme", 3.0, NOW)
    store.charge("acme", -1.0, NOW)
    assert store.reserve("acme", 0.5, NOW) == NOW + 2.0
