"""A tenant's execution slots (engine.slots): counted and listed by the store, taken and given
back at a cost that does not depend on how many run, and put right by the holders' check when a
process died between two writes. On the in-memory store, with a fake clock."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import FakeClock
from tests.fakes import FakeQuotaStore
from workflows.engine.slots import TenantSlots

T = "t1"


def _slots(store: FakeQuotaStore, clock: FakeClock, limit: int, finished: set[str]) -> TenantSlots:
    return TenantSlots(store, limit, is_finished=lambda tenant, run: run in finished, clock=clock)


def test_a_run_that_ended_without_giving_back_its_slot_frees_it_at_the_next_check(clock: FakeClock) -> None:
    store, finished = FakeQuotaStore(), set[str]()
    slots = _slots(store, clock, 2, finished)
    assert slots.take(T, "a")
    assert slots.take(T, "b")
    finished.add("a")  # its process died after the run ended, before the give-back
    assert slots.take(T, "c")  # the refused start checks the holders: a's slot is free again
    assert store.slot_holders(T) == (2, {"b", "c"})


def test_a_take_cut_off_between_its_count_and_its_listing_is_counted_back_by_the_check(
    clock: FakeClock,
) -> None:
    store, finished = FakeQuotaStore(), set[str]()
    slots = _slots(store, clock, 2, finished)
    assert slots.take(T, "a")
    store.slot_counts[T] += 1  # a take that counted, then its process died before listing the run
    assert slots.take(T, "b")  # refused by the count, put right by the check, then taken
    assert store.slot_holders(T) == (2, {"a", "b"})
    assert not slots.take(T, "c")  # the limit holds


def test_the_holders_are_checked_at_most_once_a_minute_per_tenant(clock: FakeClock) -> None:
    store, finished = FakeQuotaStore(), set[str]()
    slots = _slots(store, clock, 1, finished)
    assert slots.take(T, "a")
    assert not slots.take(T, "b")  # checked: a still runs
    finished.add("a")
    assert not slots.take(T, "b")  # not checked again within the minute
    clock.advance(timedelta(seconds=61).total_seconds())
    assert slots.take(T, "b")
    assert slots.take("t2", "x")  # another tenant's slots are its own


def test_a_count_below_the_holders_is_raised_to_them_so_the_limit_holds_again(clock: FakeClock) -> None:
    store, finished = FakeQuotaStore(), set[str]()
    slots = _slots(store, clock, 2, finished)
    assert slots.take(T, "a")
    assert slots.take(T, "b")
    store.slot_counts[T] = 0  # a check that raced a take lowered it too far
    assert slots.take(T, "c")
    assert slots.take(T, "d")
    assert not slots.take(T, "e")  # refused at last: the check finds four holders
    assert store.slot_holders(T) == (4, {"a", "b", "c", "d"})
    for run in "abcd":
        slots.release(T, run)
    assert store.slot_holders(T) == (0, set())
