"""The signal port (ports.SignalStore) against its DynamoDB adapter (moto) and its fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import FakeClock, make_container, make_fake
from workflows.domain.signals import Signal
from workflows.errors import Conflict
from workflows.ports import SignalStore

EXPIRES = 1_900_000_000


def _signal(signal_id: str, sent_at: str, name: str = "paid", **fields: object) -> Signal:
    return Signal(name=name, signal_id=signal_id, data={"n": 1}, sent_at=sent_at, **fields)  # type: ignore[arg-type]


@pytest.fixture(params=["fake", pytest.param("moto", marks=pytest.mark.moto)])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[SignalStore]:
    if request.param == "fake":
        yield make_fake(clock).signals
    else:
        yield make_container(request.getfixturevalue("aws_env"), clock).signals


def test_a_signal_is_stored_once_by_its_id(store: SignalStore) -> None:
    first = _signal("s1", "2026-01-01T12:00:00.000Z")
    assert store.put("t1", first, expires_at=EXPIRES) == (first, True)
    again = _signal("s1", "2026-01-01T12:00:05.000Z")  # a retry: same content, a later moment
    assert store.put("t1", again, expires_at=EXPIRES) == (first, False)
    assert store.get("t1", "s1") == first
    with pytest.raises(Conflict):
        store.put("t1", Signal(name="paid", signal_id="s1", data={"n": 2}, sent_at="x"), expires_at=EXPIRES)
    assert store.get("t2", "s1") is None  # tenants do not see each other's


def test_recent_signals_of_a_name_from_a_moment_on_oldest_first(store: SignalStore) -> None:
    for n, moment in enumerate(["12:00:01", "12:00:03", "12:00:02"]):
        store.put("t1", _signal(f"s{n}", f"2026-01-01T{moment}.000Z"), expires_at=EXPIRES)
    store.put("t1", _signal("other", "2026-01-01T12:00:02.000Z", name="other"), expires_at=EXPIRES)
    store.put("t1", _signal("to-run", "2026-01-01T12:00:04.000Z", run_id="r9"), expires_at=EXPIRES)
    found = store.recent("t1", "paid", "2026-01-01T12:00:02.000Z", 10)
    assert [s.signal_id for s in found] == ["s2", "s1", "to-run"]
    assert found[-1].run_id == "r9"
    assert [s.signal_id for s in store.recent("t1", "paid", "2026-01-01T12:00:00.000Z", 2)] == ["s0", "s2"]
    assert store.recent("t2", "paid", "2026-01-01T12:00:00.000Z", 10) == []


def test_waiters_are_read_a_page_at_a_time_and_removed(store: SignalStore) -> None:
    for run_id in ["r3", "r1", "r2"]:
        store.add_waiter("t1", "paid", run_id, expires_at=EXPIRES)
    store.add_waiter("t1", "other", "r4", expires_at=EXPIRES)
    store.add_waiter("t1", "paid", "r1", expires_at=EXPIRES)  # again: still one
    page, after = store.waiters("t1", "paid", after=None, limit=2)
    assert (page, after) == (["r1", "r2"], "r2")
    assert store.waiters("t1", "paid", after=after, limit=2) == (["r3"], None)
    store.remove_waiter("t1", "paid", "r2")
    store.remove_waiter("t1", "paid", "r404")  # gone already: nothing
    assert store.waiters("t1", "paid", after=None, limit=10) == (["r1", "r3"], None)
    assert store.waiters("t2", "paid", after=None, limit=10) == ([], None)
