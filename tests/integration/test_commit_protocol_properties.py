"""The run commit protocol, as a state machine: several processes commit to one run, and any of
them may fail or be killed at any point of a commit; readers page through the events meanwhile.

A commit is one conditional PutItem of the run item carrying the events not yet in the events
table: the commit's own after those earlier commits left there, while the item stays within the
repository's carry size (drawn here: 0 copies the earlier ones at every commit, 1 KB lets them
ride); past it the writer first copies the earlier ones to the events table as one item. After
every step a reader (in turn each writer's repository, then a fresh one) pages through exactly
the committed events, numbered 1..N, with random page sizes; the run item holds the state,
`last_event_seq` and a run of the latest events; every event is in the events table or in that
run, and every stored item holds whole commits exactly as committed."""

from __future__ import annotations

import itertools
import json
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tests.commits import transition
from tests.conftest import FakeClock, make_container
from workflows.adapters.runs import RunRepository, run_pk
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.errors import StaleWrite, Throttled

pytestmark = pytest.mark.moto

TENANT = "t1"


class ProcessKilled(BaseException):
    """The process stops here (a Lambda timeout or crash): no handler of the code under test runs."""


class Kind(Enum):
    THROTTLED = "throttled"  # the request fails with a ClientError
    KILLED = "killed"  # the process dies at that point


class Point(Enum):
    """Where a commit fails, in the order a commit reaches them."""

    STORE_PUT = "PutItem storing the events the run item carried, not applied"
    STORE_PUT_APPLIED = "PutItem storing the events the run item carried applied, its answer lost"
    RUN_PUT = "PutItem of the run item, not applied"
    RUN_PUT_APPLIED = "PutItem of the run item applied, its answer lost"


BEFORE_COMMIT = frozenset({Point.STORE_PUT, Point.STORE_PUT_APPLIED, Point.RUN_PUT})
Fault = tuple[Point, Kind]


@dataclass(frozen=True)
class Tables:
    client: Any
    runs: str
    events: str


def throttled() -> ClientError:
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem"
    )


class Faulty:
    """The DynamoDB client of one process: fails (once) at the armed point of a commit, and runs
    `race` (another process's commit) just before its first PutItem of the run item."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._fault: Fault | None = None
        self._race: Callable[[], None] | None = None
        self.fired: Point | None = None
        self.raced = False

    def arm(self, fault: Fault | None, race: Callable[[], None] | None = None) -> None:
        self._fault, self._race = fault, race
        self.fired, self.raced = None, False

    def disarm(self) -> Point | None:
        self._fault, self._race = None, None
        return self.fired

    def _fail(self, point: Point) -> None:
        if self._fault is None or self._fault[0] != point or self.fired is not None:
            return
        self.fired = point
        if self._fault[1] is Kind.KILLED:
            raise ProcessKilled(point.value)
        raise throttled()

    def put_item(self, **kwargs: Any) -> Any:
        client = self._tables.client
        if kwargs["TableName"] == self._tables.runs:
            if self._race is not None:
                race, self._race = self._race, None
                self.raced = True
                race()
            self._fail(Point.RUN_PUT)
            response = client.put_item(**kwargs)
            self._fail(Point.RUN_PUT_APPLIED)
            return response
        self._fail(Point.STORE_PUT)
        response = client.put_item(**kwargs)
        self._fail(Point.STORE_PUT_APPLIED)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tables.client, name)


@dataclass
class Writer:
    """One process: its repository (and so its memory of stored commits) and the run as it last
    read it."""

    repo: RunRepository
    client: Faulty
    view: Run | None = None


@dataclass
class Model:
    """What the successful commits did."""

    events: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, type, tag)
    commits: list[tuple[int, int]] = field(default_factory=list)  # (first, last) of each commit
    version: int = 1
    sweeps: int = 0
    attempt: int = 1

    @property
    def last(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class Commit:
    """One commit a process attempts. `events` are (type, tag); `changes` None for an append."""

    events: tuple[tuple[EventType, str], ...]
    changes: dict[str, int] | None


faults = st.one_of(st.none(), st.tuples(st.sampled_from(Point), st.sampled_from(Kind)))
storing_failures = st.tuples(
    st.sampled_from([Point.STORE_PUT, Point.STORE_PUT_APPLIED]), st.sampled_from(Kind)
)
race_faults = st.one_of(
    st.none(), storing_failures, st.tuples(st.just(Point.RUN_PUT_APPLIED), st.sampled_from(Kind))
)
state_changes = st.sampled_from(["none", "sweeps", "attempt"])


def create_run(repo: RunRepository, run_id: str) -> None:
    definition = WorkflowDefinition.model_validate(
        {"name": "d", "steps": [{"id": "a", "type": "log", "config": {"message": "x"}}]}
    )
    run = Run(
        run_id=run_id,
        tenant_id=TENANT,
        owner_id="u",
        definition_version=1,
        definition_name="d",
        status=RunStatus.RUNNING,
        current_step_id="a",
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )
    repo.create(run, definition)


class CommitProtocol(RuleBasedStateMachine):
    def __init__(self, tables: Tables, clock: FakeClock, run_ids: Iterator[int]) -> None:
        super().__init__()
        self.tables = tables
        self.clock = clock
        self.run_id = f"run-{next(run_ids)}"
        self.model = Model()
        self.writers: list[Writer] = []
        self.tags = itertools.count(1)
        self.rng = random.Random(0)
        self.checks = 0
        self.carry = 1024

    # ---- set up ---------------------------------------------------------------------

    def repository(self, client: Any) -> RunRepository:
        return RunRepository(
            client, self.tables.runs, self.tables.events, clock=self.clock, carry_item_bytes=self.carry
        )

    def process(self) -> Writer:
        client = Faulty(self.tables)
        return Writer(self.repository(client), client)

    @initialize(
        count=st.integers(2, 3), seed=st.integers(0, 2**32 - 1), carry=st.sampled_from([0, 700, 1024])
    )
    def create_run(self, count: int, seed: int, carry: int) -> None:
        self.rng = random.Random(seed)
        self.carry = carry
        self.writers = [self.process() for _ in range(count)]
        create_run(self.writers[0].repo, self.run_id)

    def writer(self, index: int) -> Writer:
        return self.writers[index % len(self.writers)]

    def new_events(self, count: int, event_type: EventType) -> tuple[tuple[EventType, str], ...]:
        return tuple((event_type, f"e{next(self.tags)}") for _ in range(count))

    def changes(self, view: Run, change: str) -> dict[str, int]:
        if change == "sweeps":
            return {"sweeps": view.sweeps + 1}
        if change == "attempt":
            return {"attempt": view.attempt + 1}
        return {}

    # ---- one commit, with its fault ---------------------------------------------------

    def attempt(
        self, writer: Writer, commit: Commit, fault: Fault | None, race: Callable[[], None] | None = None
    ) -> None:
        """Run one commit on `writer` with `fault` armed, check what it answered against the
        model, and record in the model what it committed."""
        view = writer.view
        events = [NewEvent(event_type=kind, payload={"tag": tag}) for kind, tag in commit.events]
        writer.client.arm(fault, race)
        outcome: BaseException | None = None
        result: Run | list[int] | None = None
        try:
            if commit.changes is None:
                result = writer.repo.append_events(TENANT, self.run_id, events)
            else:
                assert view is not None
                result = transition(writer.repo, view, commit.changes, events)
        except (ProcessKilled, Throttled, StaleWrite) as exc:
            outcome = exc
        fired = writer.client.disarm()
        kind = fault[1] if fault is not None else None
        event(f"{'append' if commit.changes is None else 'transition'}: {type(outcome).__name__}")
        if fired is not None:
            event(f"fault at {fired.name}: {kind.name if kind else ''}")
        if writer.client.raced:
            event("raced by another commit")
        # The model as the commit found it (after any commit that raced it).
        first = self.model.last + 1
        stale = commit.changes is not None and view is not None and view.version != self.model.version

        if fired in BEFORE_COMMIT:
            # Failed before its run item was written: it raised and appended nothing.
            self.expect_fault(outcome, kind)
            committed = False
        elif fired is not None:
            # The run item was written: the commit stands whatever the process saw afterwards.
            if fired is Point.RUN_PUT_APPLIED or kind is Kind.KILLED:
                self.expect_fault(outcome, kind)
            else:
                assert outcome is None, f"a commit that went through raised {outcome!r}"
            committed = True
        elif stale:
            assert isinstance(outcome, StaleWrite), f"a commit from a stale read answered {outcome!r}"
            committed = False
        else:
            assert outcome is None, f"an undisturbed commit raised {outcome!r}"
            committed = True

        if committed:
            assert not stale, f"a commit from a stale read went through ({fired})"
            seqs = list(range(first, first + len(commit.events)))
            if outcome is None and commit.changes is None:
                assert result == seqs
            if outcome is None and commit.changes is not None:
                assert isinstance(result, Run)
                assert result.version == self.model.version + 1
                assert result.last_event_seq == first - 1 + len(commit.events)
                carried = [e.event_seq for e in result.latest_events]
                assert carried == list(range(carried[0], first + len(commit.events))) if carried else not seqs
                assert carried[len(carried) - len(seqs) :] == seqs
                writer.view = result
            self.record(commit, first)
        if isinstance(outcome, ProcessKilled):
            # The process is gone, and its memory with it: a new one takes its place.
            fresh = self.process()
            writer.repo, writer.client, writer.view = fresh.repo, fresh.client, None

    @staticmethod
    def expect_fault(outcome: BaseException | None, kind: Kind | None) -> None:
        if kind is Kind.KILLED:
            assert isinstance(outcome, ProcessKilled), f"expected the process to die, got {outcome!r}"
        else:
            assert isinstance(outcome, Throttled), f"expected Throttled, got {outcome!r}"

    def record(self, commit: Commit, first: int) -> None:
        model = self.model
        for offset, (kind, tag) in enumerate(commit.events):
            model.events.append((first + offset, kind.value, tag))
        if commit.events:
            model.commits.append((first, first + len(commit.events) - 1))
        if commit.changes is not None:
            model.version += 1
            model.sweeps = commit.changes.get("sweeps", model.sweeps)
            model.attempt = commit.changes.get("attempt", model.attempt)

    # ---- rules ----------------------------------------------------------------------

    @rule(index=st.integers(0, 2))
    def read_run(self, index: int) -> None:
        writer = self.writer(index)
        writer.view = writer.repo.get(TENANT, self.run_id)

    @rule(index=st.integers(0, 2))
    def restart(self, index: int) -> None:
        """The process is replaced (a cold start): it remembers nothing."""
        fresh = self.process()
        self.writers[index % len(self.writers)] = fresh

    @rule(
        index=st.integers(0, 2),
        count=st.integers(0, 4),
        change=state_changes,
        fault=faults,
        race=st.one_of(
            st.none(), st.tuples(st.integers(1, 2), st.integers(0, 4), state_changes, race_faults)
        ),
    )
    def transition(
        self,
        index: int,
        count: int,
        change: str,
        fault: Fault | None,
        race: tuple[int, int, str, Fault | None] | None,
    ) -> None:
        """A state change with 0-4 events from the run as this process last read it (perhaps
        stale), perhaps raced by another process's commit (which may change state too)."""
        writer = self.writer(index)
        if writer.view is None:
            writer.view = writer.repo.get(TENANT, self.run_id)
        commit = Commit(self.new_events(count, EventType.STEP_COMPLETED), self.changes(writer.view, change))
        self.attempt(writer, commit, fault, self.race_for(index, race))

    @rule(
        index=st.integers(0, 2),
        count=st.integers(1, 6),
        fault=faults,
        # A racing commit may carry no events (a sweeper's re-kick): the append must not undo it.
        race=st.one_of(
            st.none(), st.tuples(st.integers(1, 2), st.integers(0, 4), state_changes, race_faults)
        ),
    )
    def append(
        self, index: int, count: int, fault: Fault | None, race: tuple[int, int, str, Fault | None] | None
    ) -> None:
        """Events without a state change (1-6, so some commits are longer than the readers'
        margin of 3), perhaps raced by another process's commit."""
        commit = Commit(self.new_events(count, EventType.WEBHOOK_DELIVERY), None)
        self.attempt(self.writer(index), commit, fault, self.race_for(index, race))

    def race_for(
        self, index: int, race: tuple[int, int, str, Fault | None] | None
    ) -> Callable[[], None] | None:
        if race is None or len(self.writers) < 2:
            return None
        offset, count, change, copy_fault = race
        other = (index % len(self.writers) + offset) % len(self.writers)
        if other == index % len(self.writers):
            other = (other + 1) % len(self.writers)
        if change == "none" and count > 0:
            commit = Commit(self.new_events(count, EventType.WEBHOOK_DELIVERY), None)
        else:
            # Its read happens inside the race, so its change is computed then: a placeholder here.
            commit = Commit(self.new_events(count, EventType.STEP_COMPLETED), {})
        return self.racing_commit(other, commit, change, copy_fault)

    def racing_commit(
        self, index: int, commit: Commit, change: str, copy_fault: Fault | None
    ) -> Callable[[], None]:
        def race() -> None:
            writer = self.writers[index]
            writer.view = writer.repo.get(TENANT, self.run_id)
            if commit.changes is not None:
                actual = Commit(commit.events, self.changes(writer.view, change))
            else:
                actual = commit
            self.attempt(writer, actual, copy_fault)

        return race

    @rule(
        first=st.integers(0, 2),
        second=st.integers(0, 2),
        storing_failure=storing_failures,
        transition=st.booleans(),
    )
    def next_writer_fails_storing_the_carried_events(
        self, first: int, second: int, storing_failure: Fault, transition: bool
    ) -> None:
        """Commits whose events ride in the run item, then a commit (by the same process or
        another) that fails while storing them, then one that goes through."""
        self.append(first, 4, None, None)
        self.append(first, 4, None, None)
        writer = self.writer(second)
        writer.view = writer.repo.get(TENANT, self.run_id)
        events = self.new_events(1, EventType.STEP_COMPLETED)
        self.attempt(writer, Commit(events, {} if transition else None), storing_failure)
        self.attempt(writer, Commit(self.new_events(1, EventType.WEBHOOK_DELIVERY), None), None)

    @rule(data=st.data(), index=st.integers(0, 3))
    def read_events(self, data: st.DataObject, index: int) -> None:
        """A reader pages from a random position with random page sizes to the end."""
        since = data.draw(st.integers(0, self.model.last + 2), label="since")
        limits = st.one_of(st.integers(1, 8), st.sampled_from([50, 100]))
        self.page_through(self.reader(index), since, lambda: data.draw(limits, label="limit"))

    # ---- what must hold after every step -----------------------------------------------

    def reader(self, index: int) -> RunRepository:
        if index < len(self.writers):
            return self.writers[index].repo
        return self.repository(self.tables.client)  # a fresh process

    def page_through(self, repo: RunRepository, since: int, next_limit: Callable[[], int]) -> None:
        expected = [event for event in self.model.events if event[0] > since]
        seen: list[tuple[int, str, str]] = []
        position = since
        while True:
            limit = next_limit()
            page = repo.list_events(TENANT, self.run_id, since=position, limit=limit)
            got = [(e.event_seq, e.event_type, str(e.payload["tag"])) for e in page.events]
            wanted = expected[len(seen) : len(seen) + limit]
            assert got == wanted, f"page since={position} limit={limit}: {got} != {wanted}"
            seen += got
            assert page.next_since == (got[-1][0] if got else position)
            assert page.has_more == (page.next_since < self.model.last)
            if not page.has_more:
                break
            assert page.next_since > position, "a page that says there is more made no progress"
            position = page.next_since
        assert seen == expected

    @invariant()
    def readers_see_exactly_the_committed_events(self) -> None:
        # Each step another reader: every writer's process in turn, then a fresh one.
        self.checks += 1
        reader = self.reader(self.checks % (len(self.writers) + 1))
        self.page_through(reader, 0, lambda: self.rng.choice([self.rng.randint(1, 12), 100]))

    @invariant()
    def the_run_item_holds_the_last_commit(self) -> None:
        run = self.repository(self.tables.client).get(TENANT, self.run_id)
        model = self.model
        assert (run.last_event_seq, run.version, run.sweeps, run.attempt) == (
            model.last,
            model.version,
            model.sweeps,
            model.attempt,
        )
        pending = [e.event_seq for e in run.latest_events]
        if pending:
            # A run of the latest events, from the start of a commit to the last one.
            assert pending == list(range(pending[0], model.last + 1))
            assert pending[0] in {first for first, _ in model.commits}

    @invariant()
    def every_event_is_stored_or_carried_and_stored_items_hold_whole_commits(self) -> None:
        stored = self.stored_commits()
        by_seq = {seq: (seq, kind, tag) for seq, kind, tag in self.model.events}
        firsts = {first for first, _ in self.model.commits}
        lasts = {last for _, last in self.model.commits}
        for (first, last), events in stored.items():
            assert first in firsts, f"stored {first}..{last} does not start a commit"
            assert last in lasts, f"stored {first}..{last} does not end a commit"
            assert events == [by_seq[seq] for seq in range(first, last + 1)]
        run = self.repository(self.tables.client).get(TENANT, self.run_id)
        held = {e.event_seq for e in run.latest_events}
        held |= {seq for first, last in stored for seq in range(first, last + 1)}
        missing = sorted(set(range(1, self.model.last + 1)) - held)
        assert not missing, f"events neither stored nor in the run item: {missing}"

    def stored_commits(self) -> dict[tuple[int, int], list[tuple[int, str, str]]]:
        stored: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
        request: dict[str, Any] = {
            "TableName": self.tables.events,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": run_pk(TENANT, self.run_id)}},
            "ConsistentRead": True,
        }
        while True:
            response = self.tables.client.query(**request)
            for item in response["Items"]:
                value = item["events"]
                events = json.loads(zlib.decompress(value["B"]) if "B" in value else value["S"])
                key = (int(item["first_seq"]["N"]), int(item["event_seq"]["N"]))
                stored[key] = [(e["event_seq"], e["event_type"], e["payload"]["tag"]) for e in events]
            if "LastEvaluatedKey" not in response:
                return stored
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def test_commits_survive_a_failure_at_every_point_and_readers_see_exactly_the_committed_events(
    aws_env: dict[str, str], clock: FakeClock
) -> None:
    parts = make_container(aws_env, clock)
    tables = Tables(parts.dynamodb, parts.settings.runs_table, parts.settings.run_events_table)
    run_ids = itertools.count(1)

    class OnTheseTables(CommitProtocol):
        def __init__(self) -> None:
            super().__init__(tables, clock, run_ids)

    run_state_machine_as_test(
        OnTheseTables,
        settings=settings(
            max_examples=10,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_an_append_racing_a_state_change_without_events_keeps_that_change(
    aws_env: dict[str, str], clock: FakeClock
) -> None:
    parts = make_container(aws_env, clock)
    tables = Tables(parts.dynamodb, parts.settings.runs_table, parts.settings.run_events_table)
    appender_client, sweeper_client = Faulty(tables), Faulty(tables)
    appender = RunRepository(appender_client, tables.runs, tables.events, clock=clock)
    sweeper = RunRepository(sweeper_client, tables.runs, tables.events, clock=clock)
    create_run(appender, "run-1")
    sweeper_view = sweeper.get(TENANT, "run-1")
    moved: list[Run] = []

    def sweep() -> None:  # between the appender's GetItem of the run and its PutItem
        moved.append(transition(sweeper, sweeper_view, {"sweeps": 1}, []))

    appender_client.arm(None, sweep)
    seqs = appender.append_events(TENANT, "run-1", [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)])
    appender_client.disarm()

    assert seqs == [1]
    assert moved[0].version == 2
    run = appender.get(TENANT, "run-1")
    assert run.last_event_seq == 1
    assert (run.version, run.sweeps) == (2, 1)  # the sweeper's commit is kept
