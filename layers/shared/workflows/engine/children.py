"""Steps side by side: a step's child runs started, their ends recorded, the join (domain.fanout).

A `parallel`, `map` or `workflow` step returns `Spawn`. Then:
1. `begin` creates the first children (as many as `max_concurrency` allows; not kicked yet) and
   commits the step's record of them (`await_children`) with a kick for the run itself.
2. That kick (`advance`) kicks every child started and not ended, and starts more if the window
   allows. A kick sent again only kicks again: a child's stale kick changes nothing.
3. A child's terminal commit sends `ChildEnded` (Endings.finished). `ended` records it (one
   conditional commit per end: a child counted twice is impossible, a late or repeated message
   finds it counted), creates the next children, and once the join decides completes or fails
   the step in the same commit; the children still running are then cancelled (`CancelChildren`,
   a page per message). A child is created before the commit that records it and kicked after:
   a crash between leaves a queued child that the next window's kick (or the sweeper) starts.
4. The step waits at most `wait_seconds` (its record's `wait_until`, a long wait the sweeper
   wakes): then the children's own records are read (an end whose message was lost is counted),
   those still running are cancelled and the step fails with `timeout`.

Children of a run cancelled, or failed by the service, are cancelled too (Endings.finished).
A paused run records ends but starts no children until it is resumed; its children still
running are paused with it, and resumed with it (RunControl sends the page messages, and
`control_page` passes them on to a child's own children).

Items or branches made only of pure steps are no child runs (engine.inline): `begin` commits the
record (`inline`, no deadline: the run is working, and the sweeper looks at it like any running
run), and each kick of the run runs a batch of them and commits it (`record_children`, with the
join's outcome once it decides); the batch's kick runs the next. A paused run runs no batch.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, cast

from workflows.clock import Clock, iso, parse_iso, system_clock
from workflows.domain import fanout, transitions
from workflows.domain.definition import StepSpec, WorkflowDefinition
from workflows.domain.failures import StepFailed
from workflows.domain.fanout import Fanout
from workflows.domain.jsonlimits import check_size
from workflows.domain.messages import CancelChildren, ChildEnded
from workflows.domain.outputs import INLINE_OUTPUT_BYTES, encode, is_ref
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.domain.transitions import Commit
from workflows.engine.endings import Endings
from workflows.engine.inline import InlineItems
from workflows.engine.kicks import Kicks
from workflows.engine.outcomes import Build, StepCommits, Written
from workflows.engine.outputs import RunOutputs, store_output
from workflows.errors import InvalidState, NotFound, PayloadTooLarge, StaleWrite
from workflows.observability import count, logger
from workflows.ports import DispatchQueue, RunLog, RunOutputStore
from workflows.steps.base import Spawn, StepResult
from workflows.steps.registry import StepRegistry, reads_inputs, runs_inline

# Commits of one child's end that lose a race (another child's end, a fill) before one lands.
_RECORD_TRIES = 20
CHILDREN_TIMEOUT = "timeout"
# Chunks of items a process keeps after reading them (each at most 100 items).
_CHUNKS_KEPT = 64
# Children one commit creates and records as started.
START_PER_COMMIT = 10
# Pages of children (CANCEL_PAGE each) a retry's look at them reads per commit.
REDO_PAGES = 10
# Inline items one commit records (engine.inline): at most this many, the batch closed once
# their events pass INLINE_EVENT_BYTES (the run item holds a commit's events) or once it has
# taken INLINE_BATCH_SECONDS (the kick that runs the next batch is charged to the tenant again).
INLINE_PER_COMMIT = 250
INLINE_EVENT_BYTES = 64 * 1024
INLINE_BATCH_SECONDS = 2.0


class SavedWorkflows(Protocol):
    """Saved workflows as a `workflow` step starts them (the composition root's, over the
    definitions service)."""

    def definition(
        self, parent: Run, workflow_id: str, version: int | None, inputs: dict[str, Any]
    ) -> WorkflowDefinition:
        """The workflow's definition (its latest version, or `version`) with `inputs` checked
        against its inputs_schema, for a child of `parent` (which its owner may start);
        StepFailed (not retried) when it cannot be run so."""


@dataclass(frozen=True)
class Limits:
    max_items: int = 10_000
    max_nesting: int = 5
    wait_seconds: int = 30 * 24 * 3600
    # What one child may carry beside the run's inputs (a map's item, a child workflow's inputs):
    # as much as a run's inputs may be, so every child fits in its run item.
    max_child_bytes: int = 64 * 1024


class Children:
    def __init__(
        self,
        runs: RunLog,
        outputs: RunOutputStore,
        kicks: Kicks,
        queue: DispatchQueue,
        commits: StepCommits,
        endings: Endings,
        *,
        workflows: SavedWorkflows | None = None,
        registry: StepRegistry | None = None,
        limits: Limits = Limits(),
        clock: Clock = system_clock,
    ) -> None:
        self._runs = runs
        self._outputs = outputs
        self._kicks = kicks
        self._queue = queue
        self._commits = commits
        self._endings = endings
        self._workflows = workflows
        self._registry = registry
        self._inline = InlineItems(registry, outputs) if registry is not None else None
        # (definition, branch) -> whether its steps read the run's inputs (steps.reads_inputs).
        self._reads_inputs: dict[tuple[str | None, str, str], bool] = {}
        # Chunks of maps' items read lately: (tenant, run, round, chunk) -> items.
        self._chunks_read: OrderedDict[tuple[str, str, int, int], list[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._limits = limits
        self._clock = clock

    # ---- the step begins -------------------------------------------------------------

    def begin(
        self, run: Run, definition: WorkflowDefinition, step: StepSpec, spawn: Spawn, now: datetime
    ) -> Build:
        """The step's children planned and the first ones created; StepFailed when they cannot
        be (too deep, too many items, a workflow that cannot run)."""
        if run.depth + 1 > self._limits.max_nesting:
            raise StepFailed(
                "too_deep",
                f"runs nest at most {self._limits.max_nesting} deep; this step's children would be"
                f" {run.depth + 1} deep",
                retryable=False,
            )
        round_ = run.version
        if spawn.kind == "workflow":
            return self._begin_workflow(run, definition, step, spawn, round_)
        if spawn.kind == "map":
            if len(spawn.items) > self._limits.max_items:
                raise StepFailed(
                    "too_many_items",
                    f"items: {len(spawn.items)} items, limit {self._limits.max_items}",
                    retryable=False,
                )
            for index, item in enumerate(spawn.items):
                self._fits(item, f"items[{index}]", "item_too_large")
            record = fanout.plan(
                step.id,
                "map",
                round_,
                len(spawn.items),
                max_concurrency=spawn.max_concurrency,
                tolerated_failures=spawn.tolerated_failures,
            )
            record["chunks"] = self._chunks(run, spawn.items)
            if not spawn.items:
                return self._commits.succeeded(run, definition, step, StepResult(output=[]))
            parts = [spawn.steps]
        else:
            record = fanout.plan(step.id, "parallel", round_, len(spawn.branches), join=spawn.join)
            record["branches"] = list(spawn.branches)
            parts = list(spawn.branches.values())
        if self._runs_inline(spawn, parts):
            inline = cast(Fanout, {**record, "inline": True, "results": []})
            return lambda base: transitions.await_children(base, inline, [], until=None)
        return self._open(run, definition, record, items=spawn.items)

    def _runs_inline(self, spawn: Spawn, parts: list[list[StepSpec]]) -> bool:
        """Whether the items (branches) run inside the run: asked for (`mode: auto`), and each
        is made only of pure steps (steps.registry.runs_inline)."""
        registry = self._registry
        if spawn.mode != "auto" or self._inline is None or registry is None:
            return False
        return all(runs_inline(part, registry) for part in parts)

    def _fits(self, value: Any, field: str, code: str) -> None:
        """StepFailed (not retried) when `value` is more than one child may carry."""
        try:
            check_size(value, field, self._limits.max_child_bytes)
        except PayloadTooLarge as exc:
            raise StepFailed(code, exc.message, retryable=False) from None

    def _begin_workflow(
        self, run: Run, definition: WorkflowDefinition, step: StepSpec, spawn: Spawn, round_: int
    ) -> Build:
        if self._workflows is None:
            raise StepFailed("unavailable", "this function does not start workflows", retryable=False)
        assert spawn.workflow_id is not None
        self._fits(spawn.inputs, "inputs", "inputs_too_large")
        child_definition = self._workflows.definition(run, spawn.workflow_id, spawn.version, spawn.inputs)
        record = fanout.plan(step.id, "workflow", round_, 1)
        record["workflow_id"], record["version"] = spawn.workflow_id, child_definition.version
        if spawn.wait:
            return self._open(run, definition, record, inputs=spawn.inputs, child_definition=child_definition)
        # Nobody waits for it: it has a parent but no place, and is kicked now (before the
        # commit: a lost commit leaves a run that runs anyway, as its starter asked).
        child = self._child(run, record, 0, child_definition, spawn.inputs, placed=False)
        self._create(child, child_definition)
        self._kicks.send(child)
        output = {
            "run_id": child.run_id,
            "workflow_id": spawn.workflow_id,
            "version": child_definition.version,
        }
        return self._commits.succeeded(run, definition, step, StepResult(output=output))

    def _open(
        self,
        run: Run,
        definition: WorkflowDefinition,
        record: Fanout,
        *,
        items: Sequence[Any] = (),
        inputs: dict[str, Any] | None = None,
        child_definition: WorkflowDefinition | None = None,
    ) -> Build:
        started = _first(fanout.window(record))
        for index in started:
            self._start(
                run, definition, record, index, items=items, inputs=inputs, child_definition=child_definition
            )
        record = cast(Fanout, {**record, "started": started.stop})
        until = iso(self._clock() + timedelta(seconds=self._limits.wait_seconds))
        events = [_started_event(run, record, started)]

        def build(base: Run) -> Commit:
            return transitions.await_children(base, record, events, until=until)

        return build

    # ---- children started ------------------------------------------------------------

    def _chunks(self, run: Run, items: list[Any]) -> list[Any]:
        """A map's items, kept apart from the run item past a few hundred bytes, in chunks:
        starting a window reads only the chunks it covers."""
        if len(encode(items)) <= INLINE_OUTPUT_BYTES:
            return [items]
        size = fanout.ITEMS_PER_CHUNK
        return [
            self._outputs.put_output(run.tenant_id, run.run_id, items[start : start + size])
            for start in range(0, len(items), size)
        ]

    def _item(self, run: Run, record: Fanout, index: int) -> Any:
        """Item `index` of a map: its chunk read once per process while the map runs (a window
        of ten starts reads one chunk, not one per item)."""
        chunk, position = fanout.chunk_of(index)
        key = (run.tenant_id, run.run_id, record["round"], chunk)
        with self._lock:
            items = self._chunks_read.get(key)
        if items is None:
            stored = record["chunks"][chunk]
            items = cast(list[Any], RunOutputs(self._outputs, run).resolve(stored))
            with self._lock:
                self._chunks_read[key] = items
                while len(self._chunks_read) > _CHUNKS_KEPT:
                    self._chunks_read.popitem(last=False)
        return items[position]

    def _start(
        self,
        run: Run,
        definition: WorkflowDefinition,
        record: Fanout,
        index: int,
        *,
        items: Sequence[Any] = (),
        inputs: dict[str, Any] | None = None,
        child_definition: WorkflowDefinition | None = None,
    ) -> Run:
        """Child `index` created (not kicked), or found created already."""
        kind = record["kind"]
        scope: dict[str, Any] = {"parent_id": run.run_id}
        step = definition.step(record["step_id"])
        if kind == "parallel":
            name = fanout.branch(record, index)
            assert name is not None
            steps = step.config["branches"][name]
            child_definition = _part(definition, f"{step.id}.{name}", steps)
            scope["branch"] = name
            inputs = self._inputs(run, step.id, name, child_definition)
        elif kind == "map":
            item = items[index] if index < len(items) else self._item(run, record, index)
            child_definition = _part(definition, f"{step.id}[]", step.config["steps"])
            scope.update(item=item, index=index)
            inputs = self._inputs(run, step.id, "[]", child_definition)
        assert child_definition is not None  # a workflow step's one child is started by begin
        child = self._child(run, record, index, child_definition, inputs or {}, scope=scope)
        self._create(child, child_definition)
        return child

    def _inputs(self, run: Run, step_id: str, part: str, definition: WorkflowDefinition) -> dict[str, Any]:
        """The run's inputs for a branch or an item: copied only when its steps read them (a
        10,000-item map of a run with 64 KB of inputs would otherwise store them 10,000 times)."""
        if self._registry is None:
            return run.inputs
        key = (run.definition_hash or run.run_id, step_id, part)
        if key not in self._reads_inputs:
            if len(self._reads_inputs) > 1024:
                self._reads_inputs.clear()
            self._reads_inputs[key] = reads_inputs(definition.steps, self._registry)
        return run.inputs if self._reads_inputs[key] else {}

    def _child(
        self,
        run: Run,
        record: Fanout,
        index: int,
        definition: WorkflowDefinition,
        inputs: dict[str, Any],
        *,
        scope: dict[str, Any] | None = None,
        placed: bool = True,
    ) -> Run:
        now = iso(self._clock())
        saved = record["kind"] == "workflow"
        return Run(
            run_id=fanout.child_id(record, run.run_id, index),
            tenant_id=run.tenant_id,
            owner_id=run.owner_id,
            workflow_id=record.get("workflow_id") if saved else run.workflow_id,
            definition_version=definition.version,
            definition_name=definition.name,
            status=RunStatus.QUEUED,
            inputs=inputs,
            current_step_id=definition.first_step_id(),
            created_at=now,
            updated_at=now,
            parent_run_id=run.run_id,
            parent_step_id=record["step_id"],
            child=dict(fanout.place(record, index)) if placed else None,
            depth=run.depth + 1,
            scope=scope if not saved else {"parent_id": run.run_id},
        )

    def _create(self, child: Run, definition: WorkflowDefinition) -> None:
        with contextlib.suppress(StaleWrite):  # created already: by an earlier try of the same commit
            self._runs.create(child, definition)

    def _kick_all(self, tenant_id: str, run_ids: Iterable[str]) -> None:
        """A kick for each child as created: a child already past it drops it."""
        for run_id in run_ids:
            self._kicks.first(tenant_id, run_id)

    # ---- a child about to start --------------------------------------------------------

    def orphaned(self, child: Run) -> bool:
        """Whether a child about to start has a parent that no longer waits for it: ended, or
        gone on from the step (retried, or routed on). A commit that lost its race can create a
        child after its step's children were cancelled; the sweeper would then start it."""
        assert child.parent_run_id is not None
        try:
            parent = self._runs.get(child.tenant_id, child.parent_run_id)
        except NotFound:
            return True
        record = cast(Fanout | None, parent.fanout)
        place = cast(fanout.ChildPlace, child.child or {})
        return (
            parent.is_terminal
            or record is None
            or record["step_id"] != child.parent_step_id
            or record["round"] != place.get("round")
            or parent.current_step_id != child.parent_step_id
        )

    def drop(self, child: Run) -> None:
        """Cancel a child whose parent no longer waits for it, before its first step."""
        logger.info("a child run's parent no longer waits for it", extra={"run_id": child.run_id})
        self._control_child(child, "cancel")

    # ---- the run's own kick ----------------------------------------------------------

    def waits(self, run: Run) -> bool:
        return run.fanout is not None and run.fanout.get("step_id") == run.current_step_id

    def advance(self, run: Run, definition: WorkflowDefinition) -> tuple[str, Run, int]:
        """A kick for a run whose step waits for children: start the next ones (and kick those
        created but not kicked yet), or at the deadline time the step out; or run the next batch
        of items run inside it. What it did, the run, and the item steps it ran."""
        record = cast(Fanout, run.fanout)
        if record.get("inline"):
            return self._inline_batch(run, definition, record)
        now = self._clock()
        if run.wait_until and now >= parse_iso(run.wait_until):
            return (*self._time_out(run, definition, record), 0)
        try:
            return (*self._settle(run, definition, record, []), 0)
        except StaleWrite:
            return "lost_race", run, 0  # what moved it sends what comes next

    def batch_steps(self, run: Run) -> int:
        """The item steps the run's next kick runs, at least (an inline batch's items; 0 for
        children that are runs of their own): what the tenant's share is charged up front."""
        record = cast(Fanout | None, run.fanout)
        if record is None or not record.get("inline"):
            return 0
        return max(0, min(INLINE_PER_COMMIT, record["total"] - record["started"]))

    def _time_out(self, run: Run, definition: WorkflowDefinition, record: Fanout) -> tuple[str, Run]:
        """The step's deadline: ends whose messages were lost counted from the children's own
        records, then the step fails with `timeout` unless the join decided."""
        record, events = _fold(record, self._terminal(run, record, fanout.running(record)))
        try:
            return self._settle(run, definition, record, events, timed_out=True)
        except StaleWrite:
            return "lost_race", run

    # ---- a child ended ---------------------------------------------------------------

    def ended(self, message: ChildEnded) -> str:
        """Record a child's end on its parent, once; what the parent does next follows.

        The first try records this child alone (one read of it). Children ending together race
        for the parent's one item: a try that lost reads every running child of the window at
        once (one BatchGetItem) and records all that have ended, so the ends of a busy map are
        recorded a batch per commit, and the tries that lost after that find theirs recorded."""
        gather = False
        for attempt in range(_RECORD_TRIES):
            if attempt:
                time.sleep(random.uniform(0, min(0.05 * attempt, 0.5)))
            try:
                run, definition = self._runs.get_with_definition(message.tenant_id, message.run_id)
            except NotFound:
                return "unknown_run"
            record = cast(Fanout | None, run.fanout)
            if (
                record is None
                or run.is_terminal
                or record["step_id"] != message.step_id
                or record["round"] != message.round
                or run.current_step_id != message.step_id
            ):
                return "ignored"  # the step has moved on (or the run ended): nothing waits for it
            if message.index >= record["started"]:
                return "early"  # created by a commit that was lost: the window that starts it kicks it
            if fanout.has_ended(record, message.index):
                return "recorded" if attempt else "duplicate"
            if gather:
                children = self._terminal(run, record, fanout.running(record))
            else:
                try:
                    children = [self._runs.get(message.tenant_id, message.child_run_id)]
                except NotFound:
                    return "unknown_child"
            children = [c for c in children if c.is_terminal and c.parent_run_id == run.run_id]
            if not any(c.run_id == message.child_run_id for c in children):
                return "not_ended"
            record, events = _fold(record, children)
            try:
                action, _ = self._settle(run, definition, record, events)
            except StaleWrite:
                gather = True  # another child's end (or a control action) moved the run first
                continue
            return action
        raise StaleWrite(f"run {message.run_id} kept changing while a child's end was recorded")

    def _terminal(self, run: Run, record: Fanout, indices: Sequence[int]) -> list[Run]:
        """The children among `indices` that have ended, read a page at a time."""
        found: list[Run] = []
        for start in range(0, len(indices), fanout.CANCEL_PAGE):
            ids = [
                fanout.child_id(record, run.run_id, i) for i in indices[start : start + fanout.CANCEL_PAGE]
            ]
            found += [
                child for child in self._runs.get_many(run.tenant_id, ids).values() if child.is_terminal
            ]
        return found

    def _settle(
        self,
        run: Run,
        definition: WorkflowDefinition,
        record: Fanout,
        events: list[NewEvent],
        *,
        timed_out: bool = False,
    ) -> tuple[str, Run]:
        """Commit the record (children ended: `events`), with the next window started, or with the
        join's outcome; then kick what was started, cancel what the join left running, and send
        what follows the step."""
        step = definition.step(record["step_id"])
        decided = fanout.verdict(record)
        started = range(0)
        more = False
        looked = False
        if decided == "wait" and not timed_out and run.status == RunStatus.RUNNING:
            # A retry's children that did not succeed run again first; new ones start after.
            record, counted, again, looked, more = self._redo(run, definition, record)
            events = [*events, *counted]
            if again:
                events = [*events, _started_event(run, record, again, again=True)]
            if not fanout.redo_pending(record):
                room = fanout.window(record)
                started = _first(room)
                more = len(started) < len(room)
                for index in started:
                    self._start(run, definition, record, index)
                if started:
                    events = [*events, _started_event(run, record, started)]
                record = cast(Fanout, {**record, "started": max(started.stop, record["started"])})
        unkicked = range(record.get("kicked", 0), record["started"])
        if decided == "wait" and not timed_out and not events and not unkicked and not looked:
            return "waiting", run  # nothing ended, nothing to start or kick: nothing to write
        if run.status == RunStatus.RUNNING:
            record = cast(Fanout, {**record, "kicked": record["started"]})
        outcome: Build | None = None
        if decided == "succeeded":
            outcome = self._commits.succeeded(
                run, definition, step, StepResult(output=self._output(run, record))
            )
        elif decided == "failed" or timed_out:
            if timed_out and decided == "wait":
                code = CHILDREN_TIMEOUT
                message = f"children still running after {self._limits.wait_seconds} s"
            else:
                code, message = fanout.failure_message(record)
            outcome = self._commits.failed(run, step, StepFailed(code, message))
        noted = record

        def build(base: Run) -> Commit:
            recorded = transitions.record_children(base, noted, events, more_to_start=more)
            return recorded if outcome is None else recorded.then(outcome(recorded.run))

        written = self._commits.write(run, build)
        if run.status == RunStatus.RUNNING:
            self._kick_all(run.tenant_id, (fanout.child_id(record, run.run_id, i) for i in unkicked))
        if outcome is None:
            self._kicks.send(written.run, written.kick)
            count("ChildrenRecorded", result="waiting")
            return "children_recorded", written.run
        if written.run.fanout is None:
            # The step went on (or the run ended with it): cancel what the join left running. A
            # run that failed at the step keeps its record, and its end cancels them.
            self.cancel(run, record)
        self._after(written, definition)
        count("ChildrenRecorded", result=decided if not timed_out else "timeout")
        return f"children_{decided if not timed_out else 'timed_out'}", written.run

    def _redo(
        self, run: Run, definition: WorkflowDefinition, record: Fanout
    ) -> tuple[Fanout, list[NewEvent], list[int], bool, bool]:
        """A retry's children that did not succeed, run again in place (domain.fanout.redrive):
        from `redo_cursor`, children read a page at a time (at most REDO_PAGES per commit), each
        failed or cancelled one run again from its failed step (or `redo_from`), at most
        START_PER_COMMIT per commit and as many as `max_concurrency` leaves room for. A child the
        record never saw end (its end came after the step failed) is counted now if it
        succeeded, and run again if not; one still running (its cancellation not yet through)
        counts as running. Returns the record, events for the ends counted, the children run
        again, whether any was looked at, and whether this commit's kick should look further."""
        if not fanout.redo_pending(record):
            return record, [], [], False, False
        cursor = record["redo_cursor"]
        room = record["max_concurrency"] - len(fanout.running(record))
        ended: list[Run] = []
        again: list[int] = []
        redoing = list(record.get("redoing", []))
        pages = 0
        full = False
        while cursor < record["redo_stop"] and pages < REDO_PAGES and not full:
            stop = min(record["redo_stop"], cursor + fanout.CANCEL_PAGE)
            ids = {fanout.child_id(record, run.run_id, i): i for i in range(cursor, stop)}
            found = {ids[c.run_id]: c for c in self._runs.get_many(run.tenant_id, list(ids)).values()}
            pages += 1
            for index in range(cursor, stop):
                child = found.get(index)
                counted = fanout.was_ended(record, index)  # ended as the record saw it
                if child is not None and child.status == RunStatus.SUCCEEDED:
                    if not counted:
                        ended.append(child)
                elif child is not None and not child.is_terminal:
                    if counted:
                        redoing.append(index)  # run again by a commit that was lost
                        room -= 1
                else:
                    if len(again) >= START_PER_COMMIT or (counted and room <= 0):
                        full = True
                        break
                    if child is None:  # created by a commit that was lost: create it now
                        self._kicks.send(self._start(run, definition, record, index))
                    else:
                        self._redrive_child(child, record.get("redo_from"))
                    if counted:
                        redoing.append(index)
                        room -= 1
                    again.append(index)
                cursor = index + 1
        record = cast(Fanout, {**record, "redo_cursor": cursor, "redoing": sorted(redoing)})
        record, events = _fold(record, ended)
        return record, events, again, True, fanout.redo_pending(record) and room > 0

    def _redrive_child(self, child: Run, redo_from: str | None) -> None:
        """One child that did not succeed runs again: from `redo_from` if its steps have it, else
        from the step it failed (or was cancelled) at. Kicked at once: a commit of its parent
        that is lost leaves it running, and the next look finds it so."""
        definition = self._runs.get_with_definition(child.tenant_id, child.run_id)[1]
        ids = {step.id for step in definition.steps}
        failed_at = (child.error or {}).get("step_id") or child.current_step_id
        step_id = next((s for s in (redo_from, failed_at) if s in ids), definition.first_step_id())
        for _ in range(_RECORD_TRIES):
            try:
                moved = self._runs.commit(transitions.redrive_child(child, step_id))
            except StaleWrite:
                child = self._runs.get(child.tenant_id, child.run_id)
                continue
            except InvalidState:
                return  # not failed nor cancelled: running again already
            self._kicks.send(moved)
            return
        logger.warning("a child kept changing while it was run again", extra={"run_id": child.run_id})

    def _after(self, written: Written, definition: WorkflowDefinition) -> None:
        self._kicks.send(written.run, written.kick)
        if written.run.is_terminal:
            self._endings.finished(written.run, definition)

    # ---- items run inside the run ----------------------------------------------------

    def _inline_batch(self, run: Run, definition: WorkflowDefinition, record: Fanout) -> tuple[str, Run, int]:
        """Run the next batch of items inside the run and commit it: their events, their ends
        counted, their outputs stored apart; with the join's outcome once it decides, else a
        kick for the next batch."""
        assert self._inline is not None
        step = definition.step(record["step_id"])
        parent_outputs = RunOutputs(self._outputs, run)
        now = self._clock()
        began = time.monotonic()
        events: list[NewEvent] = []
        outputs: list[Any] = []
        steps = size = 0
        index = record["started"]
        parts: dict[str, WorkflowDefinition] = {}
        while (
            index < record["total"]
            and len(outputs) < INLINE_PER_COMMIT
            and size < INLINE_EVENT_BYTES
            and time.monotonic() - began < INLINE_BATCH_SECONDS
        ):
            part, scope, named = self._inline_part(run, definition, record, index, parts)
            done = self._inline.run(run, part, scope, named, parent_outputs, now)
            events += done.events
            steps += done.steps
            size += done.event_bytes
            outputs.append(done.output if done.status == "succeeded" else None)
            error = cast(dict[str, Any] | None, done.error)
            record = fanout.mark_ended(record, index, done.status, None, error)
            index += 1
            record = cast(Fanout, {**record, "started": index, "kicked": index})
            if fanout.verdict(record) != "wait":
                break  # a branch won, or too many items failed: the rest are not run
        entry: fanout.ResultsEntry = {
            "level": 0,
            "n": len(outputs),
            "out": store_output(self._outputs, run, outputs),
        }
        record = cast(Fanout, {**record, "results": self._folded(run, [*record.get("results", []), entry])})
        decided = fanout.verdict(record)
        outcome: Build | None = None
        if decided == "succeeded":
            result = StepResult(output=self._inline_output(run, record))
            outcome = self._commits.succeeded(run, definition, step, result)
        elif decided == "failed":
            code, message = fanout.failure_message(record)
            outcome = self._commits.failed(run, step, StepFailed(code, message))
        noted = record

        def build(base: Run) -> Commit:
            recorded = transitions.record_children(base, noted, events, more_to_start=decided == "wait")
            return recorded if outcome is None else recorded.then(outcome(recorded.run))

        try:
            written = self._commits.write(run, build)
        except StaleWrite:
            return "lost_race", run, steps  # a control action moved the run first
        count("InlineItemsRecorded", result=decided)
        if outcome is None:
            self._kicks.send(written.run, written.kick)
            return "items_recorded", written.run, steps
        self._after(written, definition)
        return f"items_{decided}", written.run, steps

    def _inline_part(
        self,
        run: Run,
        definition: WorkflowDefinition,
        record: Fanout,
        index: int,
        parts: dict[str, WorkflowDefinition],
    ) -> tuple[WorkflowDefinition, dict[str, Any], dict[str, Any]]:
        """Item `index`'s steps, what its templates see, and what its events carry to name it."""
        step = definition.step(record["step_id"])
        if record["kind"] == "parallel":
            name = fanout.branch(record, index)
            assert name is not None
            if name not in parts:
                parts[name] = _part(definition, f"{step.id}.{name}", step.config["branches"][name])
            return parts[name], {"branch": name}, {"branch": name}
        if "[]" not in parts:
            parts["[]"] = _part(definition, f"{step.id}[]", step.config["steps"])
        return parts["[]"], {"item": self._item(run, record, index), "index": index}, {"index": index}

    def _folded(self, run: Run, results: list[fanout.ResultsEntry]) -> list[fanout.ResultsEntry]:
        """`results` with runs of RESULTS_FOLD entries of one level stored as one entry of the
        next (domain.fanout.to_fold): the record stays small however many batches there are."""
        while n := fanout.to_fold(results):
            tail = results[-n:]
            folded: fanout.ResultsEntry = {
                "level": tail[0]["level"] + 1,
                "n": sum(entry["n"] for entry in tail),
                "out": store_output(self._outputs, run, tail),
            }
            results = [*results[:-n], folded]
        return results

    def _inline_output(self, run: Run, record: Fanout) -> Any:
        """The step's output from items run inside the run: as `_output` gives children's."""
        reader = RunOutputs(self._outputs, run)
        values: list[Any] = []

        def flatten(entries: list[fanout.ResultsEntry]) -> None:
            for entry in entries:
                content = cast(list[Any], reader.resolve(entry["out"]))
                if entry["level"] == 0:
                    values.extend(reader.resolve(value) for value in content)
                else:
                    flatten(content)

        flatten(record.get("results", []))
        if record["kind"] == "parallel":
            names = record.get("branches", [])
            if record.get("join") == "any" and "winner" in record:
                return {names[record["winner"]]: values[record["winner"]]}
            return {names[i]: value for i, value in enumerate(values)}
        return values

    def _output(self, run: Run, record: Fanout) -> Any:
        """The step's output: each branch's last output by name (`any`: the winner's), a map's
        items' in item order (null for an item that failed), a child workflow's outputs."""
        indices = range(record["total"])
        if record.get("join") == "any" and "winner" in record:
            indices = range(record["winner"], record["winner"] + 1)
        values: dict[int, Any] = {}
        wanted = list(indices)
        for start in range(0, len(wanted), fanout.CANCEL_PAGE):
            ids = {
                fanout.child_id(record, run.run_id, i): i for i in wanted[start : start + fanout.CANCEL_PAGE]
            }
            for child in self._runs.get_many(run.tenant_id, list(ids)).values():
                if child.status == RunStatus.SUCCEEDED:
                    output = child.outputs
                    values[ids[child.run_id]] = (
                        RunOutputs(self._outputs, child).resolve(output) if is_ref(output) else output
                    )
        if record["kind"] == "workflow":
            return values.get(0)
        if record["kind"] == "parallel":
            return {fanout.branch(record, i): values[i] for i in sorted(values)}
        return [values.get(i) for i in range(record["total"])]

    # ---- cancelling children ---------------------------------------------------------

    def cancel(self, run: Run, record: Fanout) -> None:
        """Cancel the children of `record` that have not ended (a message per page of them)."""
        message = fanout.cancellation(run.tenant_id, run.run_id, record)
        if message is not None:
            self._queue.send(message)

    def control_page(self, message: CancelChildren) -> int:
        """Cancel (pause, resume: `message.action`) the children of one page that have not
        ended; the next page goes on its own message. How many changed."""
        stop = min(message.stop, message.start + fanout.CANCEL_PAGE)
        ids = [
            fanout.child_run_id(message.run_id, message.step_id, message.round, index)
            for index in range(message.start, stop)
        ]
        changed = 0
        for child in self._runs.get_many(message.tenant_id, ids).values():
            if not child.is_terminal and child.parent_run_id == message.run_id:
                changed += self._control_child(child, message.action)
        if stop < message.stop:
            self._queue.send(message.model_copy(update={"start": stop}))
        return changed

    def _control_child(self, child: Run, action: Literal["cancel", "pause", "resume"]) -> int:
        """One child cancelled, paused or resumed, as its parent was; its own children follow
        (a cancelled child's through Endings.finished, a paused or resumed one's here)."""
        for _ in range(_RECORD_TRIES):
            now = self._clock()
            if action == "pause":
                commit = transitions.pause(child, actor="parent")
            elif action == "resume":
                commit = transitions.resume(child, actor="parent", now=now)
            else:
                commit = transitions.cancel(child, actor="parent", now=now)
            if commit is None:
                return 0
            try:
                moved = self._runs.commit(commit)
            except StaleWrite:
                child = self._runs.get(child.tenant_id, child.run_id)
                continue
            except InvalidState:
                return 0
            self._kicks.send(moved, commit.kick)
            if moved.is_terminal:
                definition = self._runs.get_with_definition(child.tenant_id, child.run_id)[1]
                self._endings.finished(moved, definition)
            elif action in ("pause", "resume"):
                following = fanout.following(
                    moved.tenant_id,
                    moved.run_id,
                    cast(Fanout | None, moved.fanout),
                    moved.current_step_id,
                    action,
                )
                if following is not None:
                    self._queue.send(following)
            return 1
        logger.warning("a child kept changing while it was controlled", extra={"run_id": child.run_id})
        return 0


def _part(definition: WorkflowDefinition, label: str, steps: list[dict[str, Any]]) -> WorkflowDefinition:
    """A branch's or a map's steps as the definition its child runs pin."""
    return WorkflowDefinition.model_validate(
        {"name": f"{definition.name} / {label}"[:200], "version": definition.version, "steps": steps}
    )


def _first(window: range) -> range:
    """The children one commit starts: at most START_PER_COMMIT (the commit's kick starts the
    rest), so the commits that race to record ends each create a few children, not a window."""
    return window[:START_PER_COMMIT]


def _fold(record: Fanout, children: Iterable[Run]) -> tuple[Fanout, list[NewEvent]]:
    """The record with `children` (ended, not yet counted) counted, and an event for each."""
    events: list[NewEvent] = []
    for child in sorted(children, key=lambda c: cast(fanout.ChildPlace, c.child or {})["index"]):
        index = cast(fanout.ChildPlace, child.child or {})["index"]
        record = fanout.mark_ended(record, index, child.status.value, child.run_id, child.error)
        events.append(_ended_event(record, child))
    return record, events


def _started_event(run: Run, record: Fanout, started: Sequence[int], *, again: bool = False) -> NewEvent:
    children: list[dict[str, Any]] = [
        {**fanout.place(record, index), "run_id": fanout.child_id(record, run.run_id, index)}
        for index in started
    ]
    for child in children:
        child.pop("round", None)
        if again:
            child["again"] = True  # a retry runs it again (domain.fanout.redrive)
    return NewEvent(
        event_type=EventType.CHILDREN_STARTED, step_id=record["step_id"], payload={"children": children}
    )


def _ended_event(record: Fanout, child: Run) -> NewEvent:
    place = cast(dict[str, Any], dict(child.child or {}))
    place.pop("round", None)
    payload: dict[str, Any] = {**place, "run_id": child.run_id, "status": child.status.value}
    if child.error:
        payload["error"] = {"code": child.error.get("code"), "message": child.error.get("message")}
    payload["ended"] = fanout.ended_count(record)
    payload["running"] = record["started"] - fanout.ended_count(record)
    return NewEvent(event_type=EventType.CHILD_ENDED, step_id=record["step_id"], payload=payload)
