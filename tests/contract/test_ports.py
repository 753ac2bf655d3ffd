"""One contract per port, run against its AWS adapter (on moto) and its in-memory fake.

Engine and service tests run on the fakes; these tests are what makes that trustworthy: a rule
the fake does not keep, or the adapter breaks, fails here for one of the two.
"""

from __future__ import annotations

import base64
import inspect
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest

from tests.commits import transition
from tests.conftest import FakeClock, make_container, make_fake
from workflows.adapters import paging
from workflows.adapters.dlq import FORGET_MARGIN_SEC
from workflows.adapters.run_index import listing_shard
from workflows.domain import fanout
from workflows.domain.approvals import InboxFilter
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.dlq import DlqRow
from workflows.domain.messages import AdvanceMessage
from workflows.domain.outputs import is_ref
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.domain.schedules import Schedule
from workflows.domain.secret_refs import Secret, SecretInfo, SecretUnavailable
from workflows.errors import Conflict, InvalidCursor, NotFound, PayloadTooLarge, StaleWrite
from workflows.ports import RunIndex, RunLog, RunOutputStore
from workflows.roots.parts import Parts

T = "t1"
DEFINITION = WorkflowDefinition.model_validate(
    {"name": "hello", "steps": [{"id": "s1", "type": "log", "config": {"message": "hi"}}]}
)


@pytest.fixture(params=["fake", pytest.param("moto", marks=pytest.mark.moto)])
def parts(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Parts]:
    if request.param == "fake":
        yield make_fake(clock)
    else:
        env = request.getfixturevalue("aws_env")
        yield make_container(env, clock).give(s3=boto3.client("s3"), ssm=boto3.client("ssm"))


def _run(run_id: str, clock: FakeClock, *, created: int = 0, **fields: object) -> Run:
    moment = (clock() + timedelta(seconds=created)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    values: dict[str, object] = {
        "run_id": run_id,
        "tenant_id": T,
        "owner_id": "u",
        "definition_version": 1,
        "definition_name": "hello",
        "status": RunStatus.QUEUED,
        "current_step_id": "s1",
        "created_at": moment,
        "updated_at": moment,
        **fields,
    }
    return Run.model_validate(values)


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


# ---- RunLog, RunOutputStore, RunIndex -------------------------------------------------------

# Each run port and the part of `Parts` that implements it; the tests below call every method.
RUN_PORTS = [(RunLog, "runs"), (RunOutputStore, "run_outputs"), (RunIndex, "run_index")]


@pytest.mark.parametrize(("port", "name"), RUN_PORTS, ids=[name for _, name in RUN_PORTS])
def test_runs_each_part_has_its_ports_methods_as_declared(parts: Parts, port: type, name: str) -> None:
    """Protocols are not checked at run time: the adapter and the fake each take every method of
    their port with the port's parameters (names, kinds, defaults)."""
    part = getattr(parts, name)
    methods = [m for m, value in vars(port).items() if inspect.isfunction(value) and not m.startswith("_")]
    assert methods
    for method in methods:
        declared = list(inspect.signature(getattr(port, method)).parameters.values())[1:]  # self
        found = list(inspect.signature(getattr(part, method)).parameters.values())
        shape = [(p.name, p.kind, p.default) for p in declared]
        assert [(p.name, p.kind, p.default) for p in found] == shape, f"{type(part).__name__}.{method}"


def test_runs_a_transition_on_a_stale_read_is_refused(parts: Parts, clock: FakeClock) -> None:
    runs = parts.runs
    runs.create(_run(_uuid(1), clock), DEFINITION)
    read = runs.get(T, _uuid(1))
    moved = transition(
        runs, read, {"status": RunStatus.RUNNING}, [NewEvent(event_type=EventType.RUN_STARTED)]
    )
    assert moved.version == read.version + 1
    with pytest.raises(StaleWrite):
        transition(runs, read, {"status": RunStatus.CANCELLED}, [])
    assert runs.get(T, _uuid(1)).status == RunStatus.RUNNING


def test_runs_a_commit_past_the_item_limit_is_refused_and_changes_nothing(
    parts: Parts, clock: FakeClock
) -> None:
    runs = parts.runs
    runs.create(_run(_uuid(9), clock), DEFINITION)
    read = runs.get(T, _uuid(9))
    output = base64.b64encode(os.urandom(450_000)).decode()  # incompressible
    with pytest.raises(PayloadTooLarge):
        transition(
            runs, read, {"step_outputs": {"s1": output}}, [NewEvent(event_type=EventType.STEP_COMPLETED)]
        )
    assert runs.get(T, _uuid(9)).version == read.version
    assert runs.list_events(T, _uuid(9), since=0, limit=10).events == []


def test_runs_the_active_index_holds_only_runs_owed_a_next_step(parts: Parts, clock: FakeClock) -> None:
    runs = parts.runs
    ids = [_uuid(20 + n) for n in range(4)]
    for run_id in ids:
        runs.create(_run(run_id, clock), DEFINITION)
    ended = runs.get(T, ids[1])
    transition(runs, ended, {"status": RunStatus.CANCELLED}, [])
    waiting = runs.get(T, ids[2])
    later = "2099-01-01T00:00:00.000Z"
    transition(runs, waiting, {"status": RunStatus.RUNNING, "wait_until": later}, [])
    paused = runs.get(T, ids[3])
    transition(runs, paused, {"status": RunStatus.PAUSED}, [])
    index = parts.run_index
    assert sorted(index.active("9999", 100)) == [(T, ids[0]), (T, ids[2])]
    # What waits for a deadline after the bound is not even read.
    assert index.active("2098", 100) == [(T, ids[0])]
    assert len(index.active("9999", 1)) == 1


def test_runs_the_approvals_index_holds_only_runs_waiting_for_a_decision(
    parts: Parts, clock: FakeClock
) -> None:
    runs = parts.runs

    def waiting(n: int, assignees: list[str], owner: str = "u", tenant: str = T) -> str:
        run_id = _uuid(40 + n)
        runs.create(_run(run_id, clock, tenant_id=tenant, owner_id=owner), DEFINITION)
        request = {
            "step_id": "s1",
            "instructions": f"check {n}",
            "assignees": assignees,
            "required_approvals": 1,
            "requested_at": f"2026-01-01T12:00:0{n}.000Z",
            "timeout_at": "2026-01-02T12:00:00.000Z",
        }
        run = runs.get(tenant, run_id)
        transition(runs, run, {"status": RunStatus.WAITING_APPROVAL, "approval": request}, [])
        return run_id

    # Requested in the order 3, 1, 2: listed oldest request first, whatever the run ids
    second, third, first = waiting(2, ["a", "b"]), waiting(3, [], owner="o"), waiting(1, ["b"])
    waiting(4, ["a"], tenant="t2")
    ended = waiting(5, ["a"])
    transition(runs, runs.get(T, ended), {"status": RunStatus.CANCELLED, "approval": None}, [])
    paused = waiting(6, ["a"])
    transition(runs, runs.get(T, paused), {"status": RunStatus.PAUSED}, [])
    everything, _ = parts.run_index.list_approvals(T, InboxFilter())
    assert [p.run_id for p in everything] == [first, second, third]
    assert (everything[1].instructions, everything[1].assignees) == ("check 2", ["a", "b"])
    assert everything[1].expires_at == "2026-01-02T12:00:00.000Z"

    def ids(keep: InboxFilter) -> list[str]:
        return [p.run_id for p in parts.run_index.list_approvals(T, keep)[0]]

    assert ids(InboxFilter(assignee="a")) == [second]
    assert ids(InboxFilter(assignee="a", unassigned=True)) == [second, third]
    assert ids(InboxFilter(assignee="b", owner_id="o")) == [first, second, third]
    assert ids(InboxFilter(assignee="nobody")) == []
    page, position = parts.run_index.list_approvals(T, InboxFilter(), limit=2)
    assert [p.run_id for p in page] == [first, second]
    assert position is not None
    assert [p.run_id for p in parts.run_index.list_approvals(T, InboxFilter(), start=position)[0]] == [third]
    with pytest.raises(InvalidCursor):
        parts.run_index.list_approvals("t2", InboxFilter(), start=position)
    # A decision takes the run out of the index
    transition(runs, runs.get(T, second), {"status": RunStatus.RUNNING, "approval": None}, [])
    assert ids(InboxFilter(assignee="a")) == []


def test_runs_outputs_kept_apart_are_read_back_and_found_by_step(parts: Parts, clock: FakeClock) -> None:
    runs, outputs = parts.runs, parts.run_outputs
    runs.create(_run(_uuid(30), clock), DEFINITION)
    big = {"text": "y" * 5000}
    reference = outputs.put_output(T, _uuid(30), big)
    assert is_ref(reference)
    assert outputs.read_outputs(T, _uuid(30), [reference, reference]) == [big, big]
    with pytest.raises(NotFound):
        outputs.read_outputs(T, _uuid(30), [{"$output": {"id": "0" * 16, "bytes": 1}}])
    with pytest.raises(NotFound):  # another tenant's run cannot name it
        outputs.read_outputs("t2", _uuid(30), [reference])
    run = runs.get(T, _uuid(30))
    for n, output in enumerate([{"n": 1}, reference, {"n": 3}]):
        completed = NewEvent(
            event_type=EventType.STEP_COMPLETED, step_id="a" if n != 2 else "b", payload={"output": output}
        )
        run = transition(runs, run, {}, [NewEvent(event_type=EventType.STEP_STARTED), completed])
    assert outputs.find_step_output(T, _uuid(30), "a") == (True, reference)  # the latest, as recorded
    assert outputs.find_step_output(T, _uuid(30), "b") == (True, {"n": 3})
    assert outputs.find_step_output(T, _uuid(30), "never") == (False, None)


def test_runs_an_output_past_the_s3_threshold_goes_to_s3_and_reads_back(
    parts: Parts, clock: FakeClock
) -> None:
    runs, outputs = parts.runs, parts.run_outputs
    runs.create(_run(_uuid(31), clock), DEFINITION)
    huge = {"text": base64.b64encode(os.urandom(120_000)).decode()}  # 160 KB that barely compresses
    reference = outputs.put_output(T, _uuid(31), huge)
    assert reference["$output"]["s3"] is True  # type: ignore[index]
    assert outputs.read_outputs(T, _uuid(31), [reference]) == [huge]


def test_runs_events_are_numbered_without_gaps_and_paged(parts: Parts, clock: FakeClock) -> None:
    runs = parts.runs
    runs.create(_run(_uuid(2), clock), DEFINITION)
    run = runs.get(T, _uuid(2))
    for _ in range(3):
        run = transition(runs, run, {}, [NewEvent(event_type=EventType.STEP_STARTED)] * 2)
    assert runs.append_events(T, _uuid(2), [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)]) == [7]
    first = runs.list_events(T, _uuid(2), since=0, limit=4)
    rest = runs.list_events(T, _uuid(2), since=first.next_since, limit=4)
    assert [e.event_seq for e in first.events] == [1, 2, 3, 4]
    assert first.has_more
    assert [e.event_seq for e in rest.events] == [5, 6, 7]
    assert not rest.has_more
    only = runs.list_events(T, _uuid(2), since=0, limit=10, types=["webhook_delivery"])
    assert [e.event_seq for e in only.events] == [7]


def test_runs_the_definition_is_read_back_with_the_run(parts: Parts, clock: FakeClock) -> None:
    runs = parts.runs
    runs.create(_run(_uuid(6), clock), DEFINITION)
    runs.create(_run(_uuid(7), clock), DEFINITION)  # the same content: the snapshot is shared
    for run_id in (_uuid(6), _uuid(7)):
        run, definition = runs.get_with_definition(T, run_id)
        assert (run.run_id, definition) == (run_id, DEFINITION)
    _, mine = runs.get_with_definition(T, _uuid(6))
    mine.steps.clear()  # a definition of its own: the next read is not changed
    assert runs.get_with_definition(T, _uuid(7))[1] == DEFINITION


def test_runs_many_are_read_at_once_missing_and_other_tenants_left_out(
    parts: Parts, clock: FakeClock
) -> None:
    runs = parts.runs
    record = fanout.mark_ended({**fanout.plan("s1", "map", 3, 500), "started": 40}, 7, "failed", "c7", None)
    child = {"round": 3, "index": 7}
    runs.create(
        _run(_uuid(20), clock, parent_run_id=_uuid(21), parent_step_id="s1", child=child, depth=1), DEFINITION
    )
    runs.create(_run(_uuid(21), clock, fanout=record, scope={"item": {"n": 1}, "index": 7}), DEFINITION)
    runs.create(_run(_uuid(22), clock, tenant_id="t2"), DEFINITION)

    found = runs.get_many(T, [_uuid(20), _uuid(21), _uuid(22), _uuid(23)])

    assert sorted(found) == [_uuid(20), _uuid(21)]
    assert (found[_uuid(20)].parent_run_id, found[_uuid(20)].child, found[_uuid(20)].depth) == (
        _uuid(21),
        child,
        1,
    )
    assert found[_uuid(21)].fanout == record
    assert found[_uuid(21)].scope == {"item": {"n": 1}, "index": 7}
    assert runs.get_many(T, []) == {}


def test_runs_another_tenant_finds_nothing(parts: Parts, clock: FakeClock) -> None:
    parts.runs.create(_run(_uuid(3), clock), DEFINITION)
    with pytest.raises(NotFound):
        parts.runs.get("t2", _uuid(3))
    with pytest.raises(NotFound):
        parts.runs.get_with_definition("t2", _uuid(3))
    assert parts.run_index.list_runs("t2")[0] == []


def test_runs_the_event_head_follows_commits_and_appends(parts: Parts, clock: FakeClock) -> None:
    runs = parts.runs
    runs.create(_run(_uuid(4), clock), DEFINITION)
    assert runs.event_head(T, _uuid(4)) == (0, RunStatus.QUEUED)
    run = transition(
        runs,
        runs.get(T, _uuid(4)),
        {"status": RunStatus.RUNNING},
        [NewEvent(event_type=EventType.RUN_STARTED)],
    )
    runs.append_events(T, _uuid(4), [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)] * 2)
    assert runs.event_head(T, _uuid(4)) == (3, RunStatus.RUNNING)
    transition(runs, runs.get(T, run.run_id), {"status": RunStatus.CANCELLED}, [])
    assert runs.event_head(T, _uuid(4)) == (3, RunStatus.CANCELLED)
    with pytest.raises(NotFound):
        runs.event_head("t2", _uuid(4))
    with pytest.raises(NotFound):
        runs.event_head(T, _uuid(5))


def test_runs_listing_is_newest_first_filtered_and_paged(parts: Parts, clock: FakeClock) -> None:
    runs, index = parts.runs, parts.run_index
    for n in range(5):
        runs.create(_run(_uuid(10 + n), clock, created=n, owner_id="me" if n % 2 else "you"), DEFINITION)
    page, position = index.list_runs(T, limit=2)
    assert [r.run_id for r in page] == [_uuid(14), _uuid(13)]
    assert position is not None
    rest, _ = index.list_runs(T, limit=10, start=position)
    assert [r.run_id for r in rest] == [_uuid(12), _uuid(11), _uuid(10)]
    mine, _ = index.list_runs(T, owner_id="me", limit=10)
    assert [r.run_id for r in mine] == [_uuid(13), _uuid(11)]
    with pytest.raises(InvalidCursor):
        index.list_runs("t2", limit=2, start=position)


WORKFLOW = _uuid(99)


def _sharded_runs(parts: Parts, clock: FakeClock) -> list[Run]:
    """16 runs, two created in each of 8 seconds (a tie is ordered by run id), of two owners, half
    of one workflow, a quarter running; written to several of the index's shards."""
    made = []
    for n in range(16):
        run = _run(
            _uuid(100 + n),
            clock,
            created=n // 2,
            owner_id="me" if n % 3 else "you",
            workflow_id=WORKFLOW if n % 2 else None,
        )
        parts.runs.create(run, DEFINITION)
        if n % 4 == 1:
            run = transition(parts.runs, parts.runs.get(T, run.run_id), {"status": RunStatus.RUNNING}, [])
        made.append(run)
    assert len({listing_shard(run.run_id) for run in made}) >= 4
    return sorted(made, key=lambda run: (run.created_at, run.run_id), reverse=True)


def _pages(index: RunIndex, limit: int, **filters: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    position = None
    for _ in range(40):
        page, position = index.list_runs(T, limit=limit, start=position, **filters)
        pages.append([run.run_id for run in page])
        if position is None:
            return pages
    raise AssertionError("the listing did not end")


def _moment(clock: FakeClock, seconds: int) -> str:
    return (clock() + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_runs_listing_across_shards_gives_the_pages_of_one_ordered_listing(
    parts: Parts, clock: FakeClock
) -> None:
    """Each run's listing entries go to one of several partitions (a hash of its id); a listing
    reads them all and merges: every page newest first (a tie by run id), full until the last,
    the same pages one partition would give, whatever the filters."""
    newest_first = _sharded_runs(parts, clock)
    cases: list[tuple[int, dict[str, Any]]] = [
        (3, {}),
        (2, {"statuses": ["running"]}),
        (3, {"statuses": ["queued"], "owner_id": "me"}),
        (2, {"workflow_id": WORKFLOW}),
        (2, {"created_after": _moment(clock, 1), "created_before": _moment(clock, 6)}),
    ]
    for limit, filters in cases:
        expected = [
            run.run_id
            for run in newest_first
            if run.status.value in filters.get("statuses", [run.status.value])
            and filters.get("owner_id", run.owner_id) == run.owner_id
            and filters.get("workflow_id", run.workflow_id) == run.workflow_id
            and str(filters.get("created_after", "")) < run.created_at
            and run.created_at < str(filters.get("created_before", "~"))
        ]
        chunks = [expected[i : i + limit] for i in range(0, len(expected), limit)]
        assert _pages(parts.run_index, limit, **filters) == chunks, filters


def test_runs_listing_positions_stay_inside_the_listing(parts: Parts, clock: FakeClock) -> None:
    _sharded_runs(parts, clock)
    index = parts.run_index
    _, position = index.list_runs(T, limit=3)
    assert position is not None
    with pytest.raises(InvalidCursor):  # another tenant's listing
        index.list_runs("t2", limit=3, start=position)
    with pytest.raises(InvalidCursor):  # a time range the position lies outside of
        index.list_runs(T, limit=3, start=position, created_before=_moment(clock, 2))
    with pytest.raises(InvalidCursor):  # another workflow's listing
        index.list_runs(T, limit=3, start=position, workflow_id=WORKFLOW)


def test_runs_a_sparse_filter_under_a_small_request_budget_still_lists_each_match_once(
    parts: Parts, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page stops after its rounds of requests, maybe short or empty with a position: paging on
    gives every match once, in order."""
    newest_first = _sharded_runs(parts, clock)
    monkeypatch.setattr(paging, "MAX_REQUESTS_PER_PAGE", 1)
    pages = _pages(parts.run_index, 2, statuses=["running"], owner_id="me")
    expected = [r.run_id for r in newest_first if r.status == RunStatus.RUNNING and r.owner_id == "me"]
    assert [run_id for page in pages for run_id in page] == expected
    assert all(len(page) <= 2 for page in pages)


def test_runs_the_approvals_inbox_across_shards_is_oldest_first_and_paged(
    parts: Parts, clock: FakeClock
) -> None:
    runs = parts.runs
    waiting: list[tuple[str, str]] = []
    for_a: set[str] = set()
    for n in range(8):
        run_id = _uuid(60 + n)
        runs.create(_run(run_id, clock), DEFINITION)
        requested = f"2026-01-01T12:00:{7 - n // 2:02d}.000Z"  # pairs requested at once, newest first
        request = {
            "step_id": "s1",
            "instructions": "check",
            "assignees": ["a"] if n % 3 else ["b"],
            "required_approvals": 1,
            "requested_at": requested,
            "timeout_at": "2026-01-02T12:00:00.000Z",
        }
        run = runs.get(T, run_id)
        transition(runs, run, {"status": RunStatus.WAITING_APPROVAL, "approval": request}, [])
        waiting.append((f"{requested}#{run_id}", run_id))
        if n % 3:
            for_a.add(run_id)
    assert len({listing_shard(run_id) for _, run_id in waiting}) >= 3
    oldest_first = [run_id for _, run_id in sorted(waiting)]
    for keep, expected in (
        (InboxFilter(), oldest_first),
        (InboxFilter(assignee="a"), [run_id for run_id in oldest_first if run_id in for_a]),
    ):
        seen: list[list[str]] = []
        position = None
        for _ in range(10):
            page, position = parts.run_index.list_approvals(T, keep, limit=3, start=position)
            seen.append([p.run_id for p in page])
            if position is None:
                break
        assert seen == [expected[i : i + 3] for i in range(0, len(expected), 3)]


# ---- DispatchQueue, IdempotencyStore, QuotaStore --------------------------------------------


def test_queue_accepts_kicks_with_a_delay(parts: Parts) -> None:
    parts.queue.send(AdvanceMessage(tenant_id=T, run_id=_uuid(1), version=1), delay_seconds=5000)


def test_idempotency_one_claim_wins_until_released_or_expired(parts: Parts, clock: FakeClock) -> None:
    store = parts.idempotency
    won = store.claim(T, "u", "k#1", "h1", "run-1")
    lost = store.claim(T, "u", "k#1", "h1", "run-2")
    other_user = store.claim(T, "v", "k#1", "h1", "run-3")
    assert won.won
    assert not lost.won
    assert other_user.won
    assert lost.existing is not None
    assert lost.existing.body_hash == "h1"
    assert lost.run_id == won.run_id == "run-1"  # the key stands for the run its claim named
    store.complete(T, "u", "k#1", "h1", "run-1")
    record = store.get(T, "u", "k#1")
    assert record is not None
    assert (record.run_id, record.status) == ("run-1", "completed")
    store.release(T, "v", "k#1", "run-3")
    assert store.get(T, "v", "k#1") is None
    clock.advance(25 * 3600)
    assert store.get(T, "u", "k#1") is None
    assert store.claim(T, "u", "k#1", "h2", "run-4").won


def test_quotas_count_to_the_limit_and_give_back(parts: Parts, clock: FakeClock) -> None:
    quotas = parts.quotas
    assert [quotas.count(T, "u", "min", 2, clock()).allowed for _ in range(3)] == [True, True, False]
    quotas.uncount(T, "u", "min", clock())
    assert quotas.count(T, "u", "min", 2, clock()).allowed
    assert quotas.count_fire(T, 1, clock()).allowed
    assert not quotas.count_fire(T, 1, clock()).allowed


def test_quotas_slots_are_idempotent_per_run(parts: Parts) -> None:
    quotas = parts.quotas
    assert quotas.take_slot(T, "a", 1)
    assert quotas.take_slot(T, "a", 1)  # a holder is told so, also at the limit
    assert not quotas.take_slot(T, "b", 1)
    assert quotas.slot_holders(T) == (1, {"a"})
    quotas.release_slot(T, "a")
    quotas.release_slot(T, "a")  # given back twice: once
    quotas.release_slot(T, "never")  # never taken: nothing
    assert quotas.slot_holders(T) == (0, set())
    assert quotas.take_slot(T, "b", 1)
    assert quotas.slot_holders(T) == (1, {"b"})
    assert quotas.take_slot(T, "c", 2)
    assert quotas.take_slot(T, "d", 3)
    assert quotas.slot_holders(T) == (3, {"b", "c", "d"})
    assert quotas.mark_healed(T, None, 100)
    assert not quotas.mark_healed(T, None, 101)
    assert quotas.healed_at(T) == 100


def test_quotas_slot_count_is_set_only_if_nothing_moved_since_it_was_read(parts: Parts) -> None:
    quotas = parts.quotas
    assert quotas.take_slot(T, "a", 5)
    assert quotas.take_slot(T, "b", 5)
    assert not quotas.recount_slots(T, 3, 1)  # read as 3: it is 2
    assert quotas.slot_holders(T)[0] == 2
    assert quotas.recount_slots(T, 2, 1)
    assert quotas.slot_holders(T) == (1, {"a", "b"})
    assert quotas.recount_slots(T, 1, 2)
    assert quotas.slot_holders(T)[0] == 2


# ---- DefinitionStore ------------------------------------------------------------------------


def test_definitions_versions_and_the_name_guard(parts: Parts) -> None:
    store = parts.definitions
    head = store.create(T, "u", _uuid(1), DEFINITION)
    second = store.add_version(head, "u", DEFINITION.model_copy(update={"version": 2}))
    with pytest.raises(StaleWrite):
        store.add_version(head, "u", DEFINITION.model_copy(update={"version": 2, "name": "other"}))
    with pytest.raises(Conflict):
        store.create(T, "u", _uuid(2), DEFINITION)
    assert store.get_head(T, _uuid(1)).latest_version == second.latest_version == 2
    definition = store.get_version(T, _uuid(1), 1).definition
    assert definition is not None
    assert definition.name == "hello"
    versions, _ = store.list_versions(T, _uuid(1), limit=10, start=None)
    assert [v.version for v in versions] == [2, 1]
    deleted = store.mark_deleted(T, _uuid(1))
    assert deleted.status == "deleted"
    assert store.mark_deleted(T, _uuid(1)).deleted_at == deleted.deleted_at
    assert store.list_heads(T, include_deleted=False, limit=10, start=None)[0] == []
    with pytest.raises(NotFound):
        store.get_head("t2", _uuid(1))


# ---- schedules, artifacts, corpus, keys, secrets, DLQ ----------------------------------------


def test_schedules_update_needs_the_revision_read_and_fires_only_move_forward(parts: Parts) -> None:
    store = parts.schedules
    schedule = Schedule(
        schedule_id=_uuid(1),
        tenant_id=T,
        workflow_id=_uuid(2),
        expression="rate(5 minutes)",
        timezone="UTC",
        anchor_at="2026-01-01T00:00:00.000Z",
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
        created_by="u",
    )
    assert store.create(schedule, limit=1)
    store.update(schedule, schedule.model_copy(update={"enabled": False, "revision": 2}))
    with pytest.raises(StaleWrite):
        store.update(schedule, schedule.model_copy(update={"enabled": True, "revision": 2}))
    assert store.get(T, _uuid(1)).enabled is False
    assert store.record_fire(T, _uuid(1), "2026-01-01T00:10:00Z", {"result": "started"})
    assert not store.record_fire(T, _uuid(1), "2026-01-01T00:05:00Z", {"result": "started"})
    assert store.get(T, _uuid(1)).last_fire == {"result": "started"}
    with pytest.raises(NotFound):
        store.get("t2", _uuid(1))


def test_schedules_stop_at_the_tenants_cap_and_a_delete_gives_a_place_back(parts: Parts) -> None:
    store = parts.schedules
    first, second, elsewhere = (
        Schedule(
            schedule_id=_uuid(n),
            tenant_id=tenant,
            workflow_id=_uuid(9),
            expression="rate(5 minutes)",
            timezone="UTC",
            anchor_at="2026-01-01T00:00:00.000Z",
            created_at="2026-01-01T00:00:00.000Z",
            updated_at="2026-01-01T00:00:00.000Z",
            created_by="u",
        )
        for n, tenant in ((1, T), (2, T), (3, "t2"))
    )
    assert store.create(first, limit=1)
    assert not store.create(second, limit=1)
    assert store.create(elsewhere, limit=1)  # each tenant has its own cap
    store.delete(T, first.schedule_id)
    store.delete(T, first.schedule_id)  # gone already: gives nothing back twice
    assert store.create(second, limit=1)
    assert not store.create(first, limit=1)


def test_artifacts_keep_bytes_and_metadata_per_tenant(parts: Parts) -> None:
    meta = parts.artifacts.save(
        T, _uuid(1), step_id="s1", name="a.txt", content=b"hello", mime_type="text/plain"
    )
    assert parts.artifacts.read(meta) == b"hello"
    assert [m.artifact_id for m in parts.artifacts.list(T, _uuid(1))] == [meta.artifact_id]
    assert meta.size_bytes == 5
    with pytest.raises(NotFound):
        parts.artifacts.get("t2", _uuid(1), meta.artifact_id)


def test_corpus_pages_in_id_order(parts: Parts) -> None:
    for doc_id in ("b", "a", "c"):
        parts.corpus.add(T, f"text {doc_id}", {"k": doc_id}, doc_id=doc_id)
    first, after = parts.corpus.page(T, limit=2)
    assert [d.doc_id for d in first] == ["a", "b"]
    rest, end = parts.corpus.page(T, limit=2, after=after)
    assert [d.doc_id for d in rest] == ["c"]
    assert end is None
    parts.corpus.delete(T, "a")
    with pytest.raises(NotFound):
        parts.corpus.delete(T, "a")
    assert parts.corpus.get(T, "b").metadata == {"k": "b"}


def test_api_keys_are_found_by_the_key_and_revoked_once(parts: Parts) -> None:
    key, record = parts.api_keys.create(T, "alice", ["viewer"])
    assert parts.api_keys.lookup(key) == record
    assert parts.api_keys.lookup(key + "x") is None
    revoked = parts.api_keys.revoke(T, record.key_id, "admin")
    assert revoked.revoked_at is not None
    assert parts.api_keys.revoke(T, record.key_id, "other").revoked_by == "admin"
    with pytest.raises(NotFound):
        parts.api_keys.get("t2", record.key_id)


def test_secrets_give_values_only_to_their_tenant(parts: Parts) -> None:
    parts.secrets.put(T, "TOKEN", "s3cret")
    parts.secrets.put(T, "A_KEY", "k", ("hooks.example.com", "*.example.org"))
    assert parts.secrets.get(T, "TOKEN") == Secret("s3cret")
    assert parts.secrets.get(T, "A_KEY") == Secret("k", ("hooks.example.com", "*.example.org"))
    assert parts.secrets.listing(T) == [
        SecretInfo("A_KEY", ("hooks.example.com", "*.example.org")),
        SecretInfo("TOKEN", None),
    ]
    with pytest.raises(SecretUnavailable):
        parts.secrets.get("t2", "TOKEN")
    parts.secrets.delete(T, "A_KEY")
    with pytest.raises(NotFound):
        parts.secrets.delete(T, "A_KEY")


def test_dlq_rows_are_leased_once_and_recorded_under_the_lease(parts: Parts, clock: FakeClock) -> None:
    dlq = parts.dlq
    row = DlqRow.new(tenant_id=T, run_id=_uuid(1), url="http://127.0.0.1:9/h", body_json="{}", now=clock())
    dlq.add(row)
    with pytest.raises(Conflict):
        dlq.add(row)
    assert dlq.pending_tenants() == [T]
    (due,) = dlq.due(T, 10)
    claimed = dlq.claim(due, 60)
    assert claimed is not None
    assert dlq.claim(due, 60) is None
    with pytest.raises(Conflict):
        dlq.claim_for_replay(T, row.id, 60)
    rescheduled = dlq.reschedule(claimed, clock().timestamp() + 30, "HTTP 503")
    assert (rescheduled.status, rescheduled.attempts, rescheduled.last_error) == ("pending", 1, "HTTP 503")
    assert dlq.due(T, 10) == []
    rows, _ = dlq.list_for_tenant(T, statuses=["pending"])
    assert [r.id for r in rows] == [row.id]
    with pytest.raises(NotFound):
        dlq.get("t2", row.id)


def _dlq_row(clock: FakeClock, tenant_id: str = T, *, after: float = 0) -> DlqRow:
    row = DlqRow.new(
        tenant_id=tenant_id,
        run_id=_uuid(1),
        url="http://127.0.0.1:9/h",
        body_json="{}",
        now=clock(),
        next_attempt_at=clock().timestamp() + after,
    )
    clock.advance(1)  # distinct next_attempt_at: the due order is well defined
    return row


def test_dlq_due_rows_are_read_per_tenant_oldest_first(parts: Parts, clock: FakeClock) -> None:
    dlq = parts.dlq
    first, second, other = _dlq_row(clock), _dlq_row(clock), _dlq_row(clock, "t2")
    for row in (second, other, first):
        dlq.add(row)

    assert dlq.pending_tenants() == [T, "t2"]
    assert [r.id for r in dlq.due(T, 10)] == [first.id, second.id]
    assert [r.id for r in dlq.due(T, 1)] == [first.id]
    assert [r.id for r in dlq.due("t2", 10)] == [other.id]


def test_dlq_tenant_is_unlisted_once_empty_and_untouched_for_the_margin(
    parts: Parts, clock: FakeClock
) -> None:
    # Given a tenant whose only row was delivered
    dlq = parts.dlq
    dlq.add(row := _dlq_row(clock))
    claimed = dlq.claim(row, 60)
    assert claimed is not None
    dlq.mark_delivered(claimed)

    # Then it stays listed while a row may still be on its way, and is unlisted after that
    assert dlq.forget_if_empty(T) is False
    clock.advance(FORGET_MARGIN_SEC + 1)
    assert dlq.forget_if_empty(T) is True
    assert dlq.pending_tenants() == []


def test_dlq_tenant_with_a_row_not_yet_due_stays_listed(parts: Parts, clock: FakeClock) -> None:
    dlq = parts.dlq
    dlq.add(_dlq_row(clock, after=10 * FORGET_MARGIN_SEC))
    clock.advance(FORGET_MARGIN_SEC + 1)

    assert dlq.forget_if_empty(T) is False
    assert dlq.pending_tenants() == [T]


def test_dlq_replay_lists_the_tenant_again(parts: Parts, clock: FakeClock) -> None:
    # Given an exhausted row whose tenant was unlisted
    dlq = parts.dlq
    dlq.add(row := _dlq_row(clock))
    claimed = dlq.claim(row, 60)
    assert claimed is not None
    dlq.mark_exhausted(claimed, "HTTP 410")
    clock.advance(FORGET_MARGIN_SEC + 1)
    assert dlq.forget_if_empty(T) is True

    # When an operator replays it, it is pending again and its tenant listed
    replayed = dlq.claim_for_replay(T, row.id, 60)

    assert replayed.status == "pending"
    assert dlq.pending_tenants() == [T]
    assert [r.id for r in dlq.due(T, 10)] == [row.id]
