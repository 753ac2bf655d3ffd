"""Steps side by side, on the in-memory fakes: `parallel` (join all, join any), `map` (its window of
`max_concurrency`, item order, tolerated failures, computed items refused) and `workflow` (wait or
not, a child that cannot start, workflows calling each other until the nesting bound), a parent
cancelled or paused while its children run; then faults: ends delivered twice, late or never, a
crash between the children's creation and the parent's commit, a child's lost kick, ends that race,
a child created by a commit that lost its race. Every run's events stay numbered 1..N; the
definitions API refuses what nests too deep, repeats a step id, lists too many items or starts
itself; another tenant's big map holds nobody up (docs/steps.md, "Steps side by side")."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock, api_client, drain, make_fake
from tests.fakes import FakeQueue, FakeRunLog
from tests.faults import Faulty, unwrapped
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import AdvanceMessage, CancelChildren, ChildEnded, QueuedMessage
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import EventType, Run, RunEvent, RunStatus
from workflows.domain.transitions import Commit
from workflows.engine.outputs import RunOutputs
from workflows.errors import ValidationFailed
from workflows.roots.parts import Parts

T = "t1"
CALLER = Principal(tenant_id=T, user_id="ops", permissions=ALL_PERMISSIONS)
OTHER = Principal(tenant_id="t2", user_id="ops", permissions=ALL_PERMISSIONS)
GRACE = 900  # the sweeper's (sweep_grace_sec)
Step = dict[str, Any]


class Killed(BaseException):
    """The process dying: nothing after it runs, and SQS delivers its message again."""


# ---- definitions -----------------------------------------------------------------------


def _log(step_id: str, message: str = "ok") -> Step:
    return {"id": step_id, "type": "log", "config": {"message": message}}


def _fails(step_id: str) -> Step:
    """A step that fails (not retried): its template reads an input no run here has."""
    return {"id": step_id, "type": "log", "config": {"message": "{{ inputs.absent.deeper }}"}}


def _nap(step_id: str, seconds: float = 86_400) -> Step:
    return {"id": step_id, "type": "delay", "config": {"seconds": seconds}}


def _when(step_id: str, condition: str, then: str, otherwise: str) -> Step:
    return {
        "id": step_id,
        "type": "branch",
        "config": {"condition": condition, "true_next": then, "false_next": otherwise},
    }


def _parallel(step_id: str, branches: dict[str, list[Step]], **config: Any) -> Step:
    config.setdefault("mode", "child_runs")  # items run inside the run: test_inline_items.py
    return {"id": step_id, "type": "parallel", "config": {"branches": branches, **config}}


def _map(step_id: str, items: Any, steps: list[Step], **config: Any) -> Step:
    config.setdefault("mode", "child_runs")
    return {"id": step_id, "type": "map", "config": {"items": items, "steps": steps, **config}}


def _workflow(step_id: str, workflow_id: str, **config: Any) -> Step:
    return {"id": step_id, "type": "workflow", "config": {"workflow_id": workflow_id, **config}}


def _definition(*steps: Step, name: str = "side-by-side", **fields: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"name": name, "steps": list(steps), **fields})


# ---- the fakes -------------------------------------------------------------------------


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock)


def _store(parts: Parts) -> FakeRunLog:
    store = unwrapped(parts.runs)
    assert isinstance(store, FakeRunLog)
    return store


def _queue(parts: Parts) -> FakeQueue:
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    return queue


def _submit(
    parts: Parts, *steps: Step, inputs: dict[str, Any] | None = None, caller: Principal = CALLER
) -> str:
    """Submit a run of these steps and drain what it sends."""
    run_id = parts.run_service.submit(caller, _definition(*steps), inputs or {}).run_id
    drain(parts)
    return run_id


def _run(parts: Parts, run_id: str, tenant_id: str = T) -> Run:
    return parts.runs.get(tenant_id, run_id)


def _events(parts: Parts, run_id: str, tenant_id: str = T) -> list[RunEvent]:
    return parts.runs.list_events(tenant_id, run_id, limit=100_000).events


def _of_type(parts: Parts, run_id: str, event_type: EventType, step_id: str | None = None) -> list[RunEvent]:
    return [
        e
        for e in _events(parts, run_id)
        if e.event_type == event_type and (step_id is None or e.step_id == step_id)
    ]


def _children(parts: Parts, run_id: str) -> list[Run]:
    """The runs `run_id` started, by round and index (a workflow step's unplaced child last)."""
    with _store(parts).lock:
        found = [
            run.model_copy(deep=True) for run in _store(parts).runs.values() if run.parent_run_id == run_id
        ]
    return sorted(found, key=_place)


def _place(child: Run) -> tuple[int, int]:
    """A child's round and index (0, 0 for a child nobody waits for)."""
    place = child.child or {}
    return int(place.get("round", 0)), int(place.get("index", 0))


def _statuses(runs: list[Run]) -> list[str]:
    return [run.status.value for run in runs]


def _gap_free(parts: Parts) -> None:
    """Every run's events are numbered 1..N, N its last_event_seq: no gap, no repeat."""
    store = _store(parts)
    with store.lock:
        for key, run in store.runs.items():
            seqs = [event.event_seq for event in store.events[key]]
            assert seqs == list(range(1, run.last_event_seq + 1)), (run.run_id, seqs)


def _until_ended(parts: Parts, clock: FakeClock, run_id: str, *, step: float = 60, most: int = 100) -> Run:
    """Drain, and move the clock on while the run waits for delays (its children's)."""
    for _ in range(most):
        drain(parts, max_messages=100_000)
        run = _run(parts, run_id)
        if run.is_terminal:
            return run
        clock.advance(step)
    raise AssertionError(f"run {run_id} did not end: {_run(parts, run_id).status}")


def _output(parts: Parts, run_id: str, step_id: str | None = None) -> Any:
    """A step's output (the run's outputs without one), read back when it was stored apart."""
    run = _run(parts, run_id)
    outputs = RunOutputs(parts.run_outputs, run)
    return outputs[step_id] if step_id else outputs.resolve(run.outputs)


def _messages(outputs: list[Any]) -> list[str | None]:
    """The `message` of each log step's output (None for an item that failed)."""
    return [output and output["message"] for output in outputs]


def _ended_message(child: Run) -> ChildEnded:
    """The message a child's end sends its parent (Endings.tell_parent)."""
    assert child.parent_run_id is not None
    assert child.parent_step_id is not None
    assert child.child is not None
    return ChildEnded(
        tenant_id=child.tenant_id,
        run_id=child.parent_run_id,
        step_id=child.parent_step_id,
        round=child.child["round"],
        index=child.child["index"],
        child_run_id=child.run_id,
    )


def _started_children(commit: Commit) -> bool:
    return any(event.event_type == EventType.CHILDREN_STARTED for event in commit.events)


# ---- parallel --------------------------------------------------------------------------


def test_parallel_all_gives_each_branch_last_output_by_name(parts: Parts) -> None:
    run_id = _submit(
        parts,
        _log("first", "hi"),
        _parallel(
            "both",
            {
                "a": [_log("a1", "{{ branch }} saw {{ steps.first.output.message }}")],
                "b": [_log("b1", "one"), _log("b2", "{{ branch }} two")],
            },
        ),
        _log("after", "{{ steps.both.output.a.message }} / {{ steps.both.output.b.message }}"),
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["message"] == "a saw hi / b two"
    [completed] = _of_type(parts, run_id, EventType.STEP_COMPLETED, "both")
    assert completed.payload["output"] == {
        "a": {"message": "a saw hi", "level": "info"},
        "b": {"message": "b two", "level": "info"},
    }
    a, b = _children(parts, run_id)
    round_ = _place(a)[0]
    assert [a.child, b.child] == [
        {"round": round_, "index": 0, "branch": "a"},
        {"round": round_, "index": 1, "branch": "b"},
    ]
    assert [a.scope, b.scope] == [{"parent_id": run_id, "branch": "a"}, {"parent_id": run_id, "branch": "b"}]
    for child in (a, b):
        assert child.parent_run_id == run_id
        assert child.parent_step_id == "both"
        assert child.depth == 1
        assert child.status == RunStatus.SUCCEEDED
    ended = _of_type(parts, run_id, EventType.CHILD_ENDED, "both")
    assert sorted(e.payload["branch"] for e in ended) == ["a", "b"]
    _gap_free(parts)


def test_parallel_all_a_failing_branch_fails_the_step_and_cancels_the_others(parts: Parts) -> None:
    run_id = _submit(
        parts, _parallel("both", {"bad": [_fails("boom")], "slow": [_nap("wait")]}), _log("after")
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "branch_failed"
    assert run.error["step_id"] == "both"
    assert "bad" in run.error["message"]
    bad, slow = _children(parts, run_id)
    assert bad.status == RunStatus.FAILED
    assert slow.status == RunStatus.CANCELLED
    assert not _of_type(parts, run_id, EventType.STEP_STARTED, "after")
    _gap_free(parts)


def test_a_failed_parallel_follows_on_failure(parts: Parts) -> None:
    both = {
        **_parallel("both", {"bad": [_fails("boom")], "slow": [_nap("wait")]}),
        "on_failure": "handled",
    }
    run_id = _submit(
        parts, both, _log("after"), _log("handled", "handled {{ steps.both.output.error.code }}")
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs["message"] == "handled branch_failed"
    assert _statuses(_children(parts, run_id)) == ["failed", "cancelled"]
    _gap_free(parts)


def test_parallel_any_the_first_branch_to_succeed_wins(parts: Parts) -> None:
    run_id = _submit(
        parts,
        _parallel(
            "race",
            {
                "slow": [_nap("wait"), _log("late")],
                "bad": [_fails("boom")],
                "fast": [_log("quick", "fast won")],
            },
            join="any",
        ),
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    [completed] = _of_type(parts, run_id, EventType.STEP_COMPLETED, "race")
    assert completed.payload["output"] == {"fast": {"message": "fast won", "level": "info"}}
    # A branch that failed does not fail an `any` join while another may still succeed.
    assert _statuses(_children(parts, run_id)) == ["cancelled", "failed", "succeeded"]
    _gap_free(parts)


def test_parallel_any_fails_when_every_branch_failed(parts: Parts) -> None:
    run_id = _submit(
        parts, _parallel("race", {"one": [_fails("boom1")], "two": [_fails("boom2")]}, join="any")
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "branches_failed"
    assert "one" in run.error["message"]
    assert "two" in run.error["message"]
    _gap_free(parts)


# ---- map -------------------------------------------------------------------------------


def _most_running(events: list[RunEvent], step_id: str) -> tuple[int, list[int], list[int]]:
    """From a parent's events: the most children started and not yet ended at any point, and
    the indices in the order they were started and ended."""
    running: set[int] = set()
    started: list[int] = []
    ended: list[int] = []
    most = 0
    for event in events:
        if event.step_id != step_id:
            continue
        if event.event_type == EventType.CHILDREN_STARTED:
            for child in event.payload["children"]:
                assert child["index"] not in running
                running.add(child["index"])
                started.append(child["index"])
        elif event.event_type == EventType.CHILD_ENDED:
            running.remove(event.payload["index"])
            ended.append(event.payload["index"])
            assert event.payload["running"] == len(running)
        most = max(most, len(running))
    return most, started, ended


def test_map_runs_at_most_max_concurrency_items_at_once_and_keeps_item_order(
    parts: Parts, clock: FakeClock
) -> None:
    # Every third item waits a little: items end out of order.
    item_steps = [
        _when("pick", "index % 3 == 0", "slow", "say"),
        _nap("slow", 5),
        _log("say", "item {{ item }}"),
    ]
    definition = _definition(
        _log("first", "x"),
        _map("each", "{{ inputs.orders }}", item_steps, max_concurrency=5),
        _log("after", "{{ steps.each.output | length }} items after {{ steps.first.output.message }}"),
    )
    run_id = parts.run_service.submit(CALLER, definition, {"orders": [f"o{i}" for i in range(50)]}).run_id

    run = _until_ended(parts, clock, run_id, step=5)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["message"] == "50 items after x"
    most, started, ended = _most_running(_events(parts, run_id), "each")
    assert most == 5
    assert started == list(range(50))
    assert sorted(ended) == list(range(50))
    assert ended != list(range(50))  # they did end out of order
    assert len(_of_type(parts, run_id, EventType.STEP_COMPLETED, "each")) == 1
    assert _messages(_output(parts, run_id, "each")) == [f"item o{i}" for i in range(50)]
    children = _children(parts, run_id)
    assert len(children) == 50
    assert [(child.scope or {}).get("item") for child in children] == [f"o{i}" for i in range(50)]
    _gap_free(parts)


def test_map_tolerates_the_failures_it_is_told_to(parts: Parts) -> None:
    item_steps = [_when("odd", "item % 2 == 1", "boom", "say"), _fails("boom"), _log("say", "{{ item }}")]
    run_id = _submit(parts, _map("each", list(range(6)), item_steps, tolerated_failures=3))

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id, "each")) == ["0", None, "2", None, "4", None]
    _gap_free(parts)


def test_map_with_more_failures_than_tolerated_fails_and_cancels_the_rest(
    parts: Parts, clock: FakeClock
) -> None:
    item_steps = [_when("early", "item < 2", "boom", "wait"), _fails("boom"), _nap("wait", 3600)]
    run_id = _submit(parts, _map("each", list(range(8)), item_steps, max_concurrency=6, tolerated_failures=1))

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "item_failed"
    assert run.error["message"].startswith("2 item(s) failed, 1 tolerated: 0, 1")
    children = _children(parts, run_id)
    # Six started; item 0's end (tolerated) started item 6; item 1's failed the step: the five
    # waiting were cancelled, and item 7 never started.
    assert _statuses(children) == ["failed", "failed", *["cancelled"] * 5]
    clock.advance(7200)
    drain(parts)
    assert len(_children(parts, run_id)) == 7
    _gap_free(parts)


@pytest.mark.parametrize(("count", "status"), [(10, "succeeded"), (11, "failed")])
def test_map_of_computed_items_over_the_limit_fails_too_many_items(
    clock: FakeClock, count: int, status: str
) -> None:
    parts = make_fake(clock, max_map_items=10)
    run_id = _submit(
        parts, _map("each", "{{ inputs.orders }}", [_log("say")]), inputs={"orders": [0] * count}
    )

    run = _run(parts, run_id)
    assert run.status.value == status
    if status == "failed":
        assert run.error is not None
        assert run.error["code"] == "too_many_items"
        assert _children(parts, run_id) == []
    else:
        assert len(_children(parts, run_id)) == 10


@pytest.mark.parametrize("orders", [{"a": 1}, "abc", 7, None])
def test_map_items_that_are_not_a_list_fail_invalid_items(parts: Parts, orders: Any) -> None:
    run_id = _submit(parts, _map("each", "{{ inputs.orders }}", [_log("say")]), inputs={"orders": orders})

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "invalid_items"
    assert _children(parts, run_id) == []


def test_map_of_no_items_outputs_an_empty_list(parts: Parts) -> None:
    run_id = _submit(
        parts,
        _map("each", "{{ inputs.orders }}", [_log("say")]),
        _log("after", "{{ steps.each.output | tojson }}"),
        inputs={"orders": []},
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["message"] == "[]"
    assert _children(parts, run_id) == []
    assert not _of_type(parts, run_id, EventType.CHILDREN_STARTED)
    _gap_free(parts)


BIG_MAP = 1_000


def test_a_large_map_keeps_the_parent_small(clock: FakeClock) -> None:
    parts = make_fake(clock)
    runs = Faulty(unwrapped(parts.runs))
    parts.give(runs=runs)
    record: list[int] = [0]
    item: list[int] = [0]

    def measure(commit: Commit) -> None:
        # The parent's commits while it waits (a child's record holds no children).
        if commit.run.fanout is not None:
            record[0] = max(record[0], len(json.dumps(commit.run.fanout)))
            item[0] = max(item[0], len(commit.run.model_dump_json()))

    runs.hook("commit", measure, times=None)
    items = "{{ range(" + str(BIG_MAP) + ") | list }}"
    definition = _definition(_map("each", items, [_log("say", "{{ item }}")], max_concurrency=100))
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    drain(parts, max_messages=10 * BIG_MAP)

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert len(run.outputs) == 1  # kept apart: a reference to the stored output
    output = _output(parts, run_id)
    assert _messages(output) == [str(i) for i in range(BIG_MAP)]
    # The parent's record of its children stays small whatever their number: the items are
    # stored apart in chunks, the ended ones counted below a mark.
    assert 0 < record[0] < 2_000, record
    assert item[0] < 4_000, item
    # Its writes grow with the items, not with their square: one commit per child's end.
    commits = runs.calls["commit"]
    assert commits <= 4 * BIG_MAP + 10, commits
    # Two events per item: its end, and the start of the one taking its place.
    assert len(_events(parts, run_id)) <= 2 * BIG_MAP + 10
    _gap_free(parts)


# ---- workflow --------------------------------------------------------------------------

CHILD_SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def _save(parts: Parts, *steps: Step, workflow_id: str | None = None, **fields: Any) -> str:
    """A saved workflow of these steps (the definitions store's own create): its id."""
    workflow_id = workflow_id or str(uuid.uuid4())
    parts.definitions.create(
        T, CALLER.user_id, workflow_id, _definition(*steps, name=f"wf-{workflow_id}", **fields)
    )
    return workflow_id


def test_workflow_step_waits_for_the_child_and_takes_its_outputs(parts: Parts) -> None:
    child_id = _save(parts, _log("hello", "Hello {{ inputs.name }}"), inputs_schema=CHILD_SCHEMA)
    run_id = _submit(
        parts,
        _workflow("call", child_id, inputs={"name": "{{ inputs.who }}"}),
        _log("after", "the child said {{ steps.call.output.message }}"),
        inputs={"who": "Ada"},
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["message"] == "the child said Hello Ada"
    [child] = _children(parts, run_id)
    assert child.parent_run_id == run_id
    assert child.parent_step_id == "call"
    assert child.workflow_id == child_id
    assert child.inputs == {"name": "Ada"}
    assert child.depth == 1
    assert child.status == RunStatus.SUCCEEDED
    view = parts.queries.get(CALLER, child.run_id)
    assert (view.parent_run_id, view.parent_step_id) == (run_id, "call")
    _gap_free(parts)


def test_a_failing_child_workflow_fails_the_step_child_failed(parts: Parts) -> None:
    child_id = _save(parts, _fails("boom"))
    run_id = _submit(parts, _workflow("call", child_id), _log("after"))

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "child_failed"
    [child] = _children(parts, run_id)
    assert child.run_id in run.error["message"]
    assert "absent" in run.error["message"]  # the child's own reason
    _gap_free(parts)


def test_workflow_step_without_wait_starts_the_child_and_goes_on(parts: Parts, clock: FakeClock) -> None:
    child_id = _save(parts, _nap("wait", 120), _log("done"))
    run_id = _submit(
        parts, _workflow("call", child_id, wait=False), _log("after", "{{ steps.call.output.run_id }}")
    )

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    [child] = _children(parts, run_id)
    assert run.outputs["message"] == child.run_id
    assert child.status == RunStatus.RUNNING
    assert child.parent_run_id == run_id
    assert child.child is None  # nobody waits for it
    last = _run(parts, run_id).last_event_seq

    _until_ended(parts, clock, child.run_id)
    assert _run(parts, child.run_id).status == RunStatus.SUCCEEDED
    assert _run(parts, run_id).last_event_seq == last  # its end tells the parent nothing
    _gap_free(parts)


@pytest.mark.parametrize(
    ("case", "code"),
    [("unknown", "workflow_not_found"), ("inputs", "invalid_inputs"), ("version", "workflow_not_found")],
)
def test_a_workflow_step_whose_child_cannot_start_fails(parts: Parts, case: str, code: str) -> None:
    child_id = _save(parts, _log("hello", "Hello {{ inputs.name }}"), inputs_schema=CHILD_SCHEMA)
    config: dict[str, Any] = {"inputs": {"name": "Ada"}}
    if case == "unknown":
        child_id = str(uuid.uuid4())
    elif case == "inputs":
        config = {"inputs": {"name": 7}}
    else:
        config["version"] = 9
    run_id = _submit(parts, _workflow("call", child_id, **config))

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == code
    assert _children(parts, run_id) == []


def test_workflows_calling_each_other_end_at_the_nesting_bound(parts: Parts) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    _save(parts, _workflow("call_second", second), workflow_id=first)
    _save(parts, _workflow("call_first", first), workflow_id=second)

    run_id = parts.definition_service.submit_run(CALLER, first, {}).run_id
    drain(parts)

    chain = [_run(parts, run_id)]
    while children := _children(parts, chain[-1].run_id):
        [child] = children
        chain.append(child)
    limit = parts.settings.max_nesting
    assert [run.depth for run in chain] == list(range(limit + 1))
    assert all(run.status == RunStatus.FAILED for run in chain)
    assert chain[-1].error is not None
    assert chain[-1].error["code"] == "too_deep"
    for run in chain[:-1]:
        assert run.error is not None
        assert run.error["code"] == "child_failed"
    assert not _queue(parts).messages
    _gap_free(parts)


WORKFLOWS = "/api/v1/workflows"


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("top", "steps[0].config.workflow_id"),
        ("branch", "steps[0].config.branches.inner[0].config.workflow_id"),
    ],
)
def test_a_version_that_starts_its_own_workflow_is_refused(
    client: TestClient, where: str, field: str
) -> None:
    created = client.post(WORKFLOWS, json={"name": "selfish", "steps": [_log("hi")]})
    assert created.status_code == 201, created.text
    workflow_id = created.json()["workflow_id"]
    call = _workflow("again", workflow_id)
    step = call if where == "top" else _parallel("both", {"inner": [call]})

    refused = client.post(f"{WORKFLOWS}/{workflow_id}/versions", json={"name": "selfish", "steps": [step]})

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]
    other = _workflow("other", str(uuid.uuid4()))
    assert (
        client.post(f"{WORKFLOWS}/{workflow_id}/versions", json={"name": "ok", "steps": [other]}).status_code
        == 201
    )


# ---- control: cancel, pause ------------------------------------------------------------


@pytest.mark.parametrize("ending", ["cancel", "give_up"])
def test_a_parent_ended_mid_map_cancels_its_children_and_starts_no_more(
    parts: Parts, clock: FakeClock, ending: str
) -> None:
    run_id = _submit(parts, _map("each", list(range(20)), [_nap("wait", 60), _log("say")], max_concurrency=3))
    assert _statuses(_children(parts, run_id)) == ["running"] * 3

    if ending == "cancel":
        assert parts.control.act(T, run_id, "cancel", "ops").result == "applied"
    else:  # the service fails it (a message dead-lettered, no progress after re-kicks)
        assert (
            parts.engine.give_up(T, run_id, {"code": "internal_error", "message": "gone"}).action == "failed"
        )
    drain(parts)

    assert _run(parts, run_id).status == ("cancelled" if ending == "cancel" else "failed")
    assert _statuses(_children(parts, run_id)) == ["cancelled"] * 3
    clock.advance(3600)
    drain(parts)
    assert len(_children(parts, run_id)) == 3
    assert len(_of_type(parts, run_id, EventType.CHILDREN_STARTED)) == 1
    _gap_free(parts)


def test_cancelling_the_parent_cancels_the_child_workflow_it_waits_for(parts: Parts) -> None:
    child_id = _save(parts, _nap("wait"), _log("done"))
    run_id = _submit(parts, _workflow("call", child_id))
    [child] = _children(parts, run_id)
    assert child.status == RunStatus.RUNNING

    parts.control.act(T, run_id, "cancel", "ops")
    drain(parts)

    assert _run(parts, child.run_id).status == RunStatus.CANCELLED
    _gap_free(parts)


def test_a_paused_map_pauses_its_children_and_starts_nothing_until_resumed(
    parts: Parts, clock: FakeClock
) -> None:
    run_id = _submit(
        parts, _map("each", list(range(6)), [_nap("wait", 60), _log("say", "{{ item }}")], max_concurrency=2)
    )
    assert parts.control.act(T, run_id, "pause", "ops").result == "applied"
    drain(parts)
    # The running children are paused with their parent (a page message), each with an event.
    assert _statuses(_children(parts, run_id)) == ["paused"] * 2
    for child in _children(parts, run_id):
        paused = [e for e in _events(parts, child.run_id) if e.event_type == EventType.RUN_PAUSED]
        assert [e.payload["actor"] for e in paused] == ["parent"]

    clock.advance(3600)
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.PAUSED
    assert _statuses(_children(parts, run_id)) == ["paused"] * 2  # their delays wait for the resume
    assert len(_children(parts, run_id)) == 2  # nothing new while paused
    assert len(_of_type(parts, run_id, EventType.CHILDREN_STARTED)) == 1
    assert _of_type(parts, run_id, EventType.CHILD_ENDED) == []

    assert parts.control.act(T, run_id, "resume", "ops").result == "applied"
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    output = _output(parts, run_id)
    assert _messages(output) == [str(i) for i in range(6)]
    most, started, _ = _most_running(_events(parts, run_id), "each")
    assert most == 2
    assert started == list(range(6))
    _gap_free(parts)


def test_pausing_a_run_reaches_its_grandchildren_and_resuming_finishes_them(
    parts: Parts, clock: FakeClock
) -> None:
    inner = _parallel("inner", {"x": [_nap("nap", 60), _log("x1", "x")], "y": [_log("y1", "y")]})
    run_id = _submit(parts, _map("outer", [1], [inner]))
    (child,) = _children(parts, run_id)
    grandchildren = _children(parts, child.run_id)
    assert _statuses(grandchildren) == ["running", "succeeded"]

    assert parts.control.act(T, run_id, "pause", "ops").result == "applied"
    drain(parts)
    assert _run(parts, child.run_id).status == RunStatus.PAUSED
    assert _statuses(_children(parts, child.run_id)) == ["paused", "succeeded"]

    assert parts.control.act(T, run_id, "resume", "ops").result == "applied"
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _output(parts, run_id) == [
        {"x": {"message": "x", "level": "info"}, "y": {"message": "y", "level": "info"}}
    ]
    _gap_free(parts)


# ---- faults ----------------------------------------------------------------------------


def test_duplicate_and_late_child_ends_change_nothing(parts: Parts, clock: FakeClock) -> None:
    item_steps = [_when("fast", "index == 0", "say", "wait"), _nap("wait", 60), _log("say")]
    run_id = _submit(parts, _map("each", [1, 2, 3], item_steps))
    first = _children(parts, run_id)[0]
    assert first.status == RunStatus.SUCCEEDED
    version = _run(parts, run_id).version
    message = _ended_message(first)

    assert parts.children.ended(message) == "duplicate"
    assert parts.children.ended(message.model_copy(update={"round": message.round - 1})) == "ignored"
    assert parts.children.ended(message.model_copy(update={"step_id": "other"})) == "ignored"
    assert _run(parts, run_id).version == version

    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.SUCCEEDED
    seq = run.last_event_seq
    for child in _children(parts, run_id):
        assert parts.children.ended(_ended_message(child)) == "ignored"
    assert _run(parts, run_id).last_event_seq == seq
    assert len(_of_type(parts, run_id, EventType.STEP_COMPLETED, "each")) == 1
    assert len(_of_type(parts, run_id, EventType.CHILD_ENDED, "each")) == 3
    _gap_free(parts)


def test_a_retried_step_starts_new_children_and_ignores_the_old_round(parts: Parts, clock: FakeClock) -> None:
    both = {
        **_parallel("both", {"bad": [_nap("wait", 30), _fails("boom")], "good": [_log("fine")]}),
        "retry": {"max_attempts": 2, "initial_interval_seconds": 1, "jitter": "none"},
    }
    run_id = _submit(parts, both)
    clock.advance(30)
    drain(parts)  # the bad branch failed: the step is tried again after its backoff
    clock.advance(1)
    drain(parts)

    waiting = _run(parts, run_id)
    assert waiting.status == RunStatus.RUNNING
    assert len(_of_type(parts, run_id, EventType.STEP_RETRYING, "both")) == 1
    children = _children(parts, run_id)
    first, second = sorted({_place(child)[0] for child in children})
    assert [_place(child) for child in children] == [(first, 0), (first, 1), (second, 0), (second, 1)]
    # The first round's ends, delivered late, belong to nothing the step waits for now.
    for child in children[:2]:
        assert parts.children.ended(_ended_message(child)) == "ignored"
    assert _run(parts, run_id).version == waiting.version

    run = _until_ended(parts, clock, run_id, step=30)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "branch_failed"
    assert len(_of_type(parts, run_id, EventType.CHILD_ENDED, "both")) == 4
    _gap_free(parts)


def test_a_join_decided_while_paused_rests_at_the_next_step(parts: Parts, clock: FakeClock) -> None:
    run_id = _submit(
        parts, _map("each", [1, 2], [_nap("wait", 60)]), _log("after", "{{ steps.each.output | length }}")
    )
    parts.control.act(T, run_id, "pause", "ops")
    clock.advance(61)
    drain(parts)

    run = _run(parts, run_id)
    assert run.status == RunStatus.PAUSED
    assert run.current_step_id == "after"
    assert run.fanout is None
    assert len(_of_type(parts, run_id, EventType.STEP_COMPLETED, "each")) == 1

    parts.control.act(T, run_id, "resume", "ops")
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["message"] == "2"
    _gap_free(parts)


def _losing(parts: Parts, kind: type[QueuedMessage], times: int | None = 1) -> Faulty:
    """The parts' queue, wrapped to drop the next `times` messages of `kind`."""
    queue = Faulty(unwrapped(parts.queue))
    parts.give(queue=queue)
    return queue.drop("send", times=times, when=lambda message, **_: isinstance(message, kind))


def test_a_lost_child_end_is_made_up_by_a_later_kick_of_the_child(parts: Parts) -> None:
    queue = _losing(parts, ChildEnded)
    run_id = _submit(parts, _map("each", [1, 2], [_log("say", "{{ item }}")]))
    assert queue.faults["send"] == 1
    run = _run(parts, run_id)
    assert run.status == RunStatus.RUNNING  # one end never arrived
    assert len(_of_type(parts, run_id, EventType.CHILD_ENDED)) == 1
    lost = next(
        child
        for child in _children(parts, run_id)
        if child.run_id not in {e.payload["run_id"] for e in _of_type(parts, run_id, EventType.CHILD_ENDED)}
    )

    # Any kick that reaches the ended child (a redelivery, a stale one) tells its parent again.
    _queue(parts).send(AdvanceMessage(tenant_id=T, run_id=lost.run_id, version=1))
    drain(parts)

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id)) == ["1", "2"]
    _gap_free(parts)


def test_a_lost_child_end_is_made_up_at_the_deadline(clock: FakeClock) -> None:
    parts = make_fake(clock, child_wait_sec=3600)
    _losing(parts, ChildEnded)
    run_id = _submit(parts, _map("each", [1, 2], [_log("say", "{{ item }}")]))
    assert _run(parts, run_id).status == RunStatus.RUNNING

    clock.advance(3600 + GRACE + 1)
    assert parts.sweeper.sweep().rekicked == 1
    drain(parts)

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error  # the end was read from the child itself
    assert _messages(_output(parts, run_id)) == ["1", "2"]
    assert len(_of_type(parts, run_id, EventType.CHILD_ENDED)) == 2
    _gap_free(parts)


def test_children_still_running_at_the_deadline_fail_the_step_timeout(clock: FakeClock) -> None:
    parts = make_fake(clock, child_wait_sec=3600)
    each = {
        **_map("each", [0, 1], [_when("slow", "item == 1", "wait", "say"), _nap("wait"), _log("say")]),
        "on_timeout": "late",
    }
    run_id = _submit(parts, each, _log("after"), _log("late", "{{ steps.each.output.error.code }}"))

    clock.advance(3600 + GRACE + 1)
    parts.sweeper.sweep()
    drain(parts)

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["message"] == "timeout"
    [timed_out] = _of_type(parts, run_id, EventType.STEP_TIMEOUT, "each")
    assert timed_out.payload["error"]["code"] == "timeout"
    assert _statuses(_children(parts, run_id)) == ["succeeded", "cancelled"]
    _gap_free(parts)


def _deliver(parts: Parts, clock: FakeClock, *, visibility: float = 120) -> list[str]:
    """Work every message as the dispatcher does (tests/conftest.py's drain) until none is left;
    a message whose work dies comes back once its visibility timeout has passed, as SQS
    delivers it again."""
    queue = _queue(parts)
    actions: list[str] = []
    for _ in range(1000):
        messages = queue.receive()
        if not messages:
            if not queue.messages:
                return actions
            clock.advance(visibility)
            continue
        for message in messages:
            try:
                actions += _work(parts, message)
            except Killed:
                actions.append("killed")
                queue.send(message, delay_seconds=int(visibility))
    raise AssertionError("the queue did not drain")


def _work(parts: Parts, message: QueuedMessage) -> list[str]:
    """One message, as the dispatcher works it."""
    if isinstance(message, ChildEnded):
        return [parts.children.ended(message)]
    if isinstance(message, CancelChildren):
        parts.children.control_page(message)
        return ["children_cancelled"]
    assert isinstance(message, AdvanceMessage)
    return [parts.engine.process(message).action]


def _faulty_runs(parts: Parts) -> Faulty:
    runs = Faulty(unwrapped(parts.runs))
    parts.give(runs=runs)
    return runs


def _first_window(commit: Commit) -> bool:
    return _started_children(commit) and commit.read.fanout is None


def _next_window(commit: Commit) -> bool:
    return _started_children(commit) and commit.read.fanout is not None


@pytest.mark.parametrize("window", [_first_window, _next_window], ids=["first_window", "next_window"])
def test_a_crash_between_creating_children_and_the_parents_commit_creates_none_twice(
    clock: FakeClock, window: Callable[[Commit], bool]
) -> None:
    parts = make_fake(clock)
    runs = _faulty_runs(parts)
    runs.fail("commit", Killed, when=window)
    run_id = parts.run_service.submit(
        CALLER, _definition(_map("each", list(range(4)), [_log("say", "{{ item }}")], max_concurrency=2)), {}
    ).run_id

    actions = _deliver(parts, clock)

    assert actions.count("killed") == 1
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id)) == ["0", "1", "2", "3"]
    children = _children(parts, run_id)
    assert [_place(child)[1] for child in children] == [0, 1, 2, 3]
    for child in children:
        assert [e.event_type for e in _events(parts, child.run_id)].count("run_started") == 1
    _, started, ended = _most_running(_events(parts, run_id), "each")
    assert started == [0, 1, 2, 3]
    assert sorted(ended) == [0, 1, 2, 3]
    assert len(_of_type(parts, run_id, EventType.STEP_COMPLETED, "each")) == 1
    _gap_free(parts)


@pytest.mark.parametrize(
    ("window", "swept"), [(_first_window, False), (_next_window, True)], ids=["first_window", "next_window"]
)
def test_a_lost_answer_to_the_parents_commit_leaves_no_child_behind(
    clock: FakeClock, window: Callable[[Commit], bool], swept: bool
) -> None:
    """The commit lands and the process dies before the kicks that follow it. The first window's
    children are kicked by the parent's own kick, which its redelivered message sends again (the
    run sat still past the lost-kick grace); a later window's, never kicked, by the sweeper."""
    parts = make_fake(clock, sweep_grace_sec=GRACE)
    runs = _faulty_runs(parts)
    runs.fail("commit", Killed, after=True, when=window)
    definition = _definition(_map("each", list(range(4)), [_log("say", "{{ item }}")], max_concurrency=2))
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id

    actions = _deliver(parts, clock)

    assert "killed" in actions
    assert _run(parts, run_id).is_terminal is not swept
    if swept:
        assert "duplicate" in actions  # the redelivered end finds itself recorded
        statuses = _statuses(_children(parts, run_id))
        assert statuses[2] == "queued"  # started by the commit whose answer was lost
        clock.advance(GRACE + 1)
        # The children never kicked; the parent waits for them and is not swept.
        assert parts.sweeper.sweep().rekicked == statuses.count("queued")
        _deliver(parts, clock)
    else:
        assert "resent" in actions
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id)) == ["0", "1", "2", "3"]
    assert len(_of_type(parts, run_id, EventType.STEP_COMPLETED, "each")) == 1
    assert len(_of_type(parts, run_id, EventType.CHILD_ENDED, "each")) == 4
    _gap_free(parts)


def test_a_lost_kick_of_a_child_is_found_by_the_sweeper(clock: FakeClock) -> None:
    parts = make_fake(clock, sweep_grace_sec=GRACE)
    parent: list[str] = []
    queue = Faulty(unwrapped(parts.queue))
    parts.give(queue=queue)
    # The first kick of a run other than the parent is lost: the first child's.
    queue.drop("send", when=lambda message, **_: bool(parent) and message.run_id != parent[0])
    definition = _definition(_map("each", list(range(3)), [_log("say", "{{ item }}")]))
    parent.append(parts.run_service.submit(CALLER, definition, {}).run_id)
    run_id = parent[0]
    drain(parts)
    assert queue.faults["send"] == 1
    assert _statuses(_children(parts, run_id)) == ["queued", "succeeded", "succeeded"]
    assert _run(parts, run_id).status == RunStatus.RUNNING

    clock.advance(GRACE + 1)
    report = parts.sweeper.sweep()
    drain(parts)

    assert report.rekicked == 1  # the child; the parent waits for it and is not swept
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id)) == ["0", "1", "2"]
    _gap_free(parts)


def _hold_ends(parts: Parts) -> list[ChildEnded]:
    """Work every message but the children's ends, which are kept back and answered."""
    queue = _queue(parts)
    held: list[ChildEnded] = []
    while messages := queue.receive():
        for message in messages:
            if isinstance(message, ChildEnded):
                held.append(message)
            else:
                _work(parts, message)
    return held


def test_concurrent_child_ends_are_each_counted_once(clock: FakeClock) -> None:
    parts = make_fake(clock)
    runs = _faulty_runs(parts)
    width = 8
    definition = _definition(_map("each", list(range(width)), [_log("say", "{{ item }}")]))
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    ends = _hold_ends(parts)
    assert len(ends) == width

    # Every end reads the parent at the same version before any commits: all but one lose the
    # race, read again and commit on top.
    barrier = threading.Barrier(width, timeout=10)
    runs.hook("get_with_definition", lambda *_: barrier.wait(), times=width)
    results: list[str] = []
    errors: list[BaseException] = []

    def record(message: ChildEnded) -> None:
        try:
            results.append(parts.children.ended(message))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(end,)) for end in ends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    drain(parts)

    # One end completes the step; each of the others is recorded by its own commit or, having
    # lost a race, found recorded by another's.
    assert results.count("children_succeeded") == 1
    assert set(results) <= {"children_succeeded", "children_recorded", "recorded", "duplicate"}
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    ended = _of_type(parts, run_id, EventType.CHILD_ENDED, "each")
    assert sorted(event.payload["index"] for event in ended) == list(range(width))
    assert len(_of_type(parts, run_id, EventType.STEP_COMPLETED, "each")) == 1
    assert _messages(_output(parts, run_id)) == [str(i) for i in range(width)]
    for end in ends:
        assert parts.children.ended(end) == "ignored"
    _gap_free(parts)


def test_a_child_created_by_a_commit_that_lost_its_race_is_cancelled_with_the_rest(clock: FakeClock) -> None:
    """Two ends race: the success's commit would start the next item, the failure's fails the step
    first. The item the losing commit created is never kicked; the step's cancellation must
    reach it, or the sweeper would find it and run it after its step failed."""
    parts = make_fake(clock, sweep_grace_sec=GRACE)
    runs = _faulty_runs(parts)
    item_steps = [_when("first", "item == 0", "boom", "say"), _fails("boom"), _log("say")]
    definition = _definition(_map("each", [0, 1, 2], item_steps, max_concurrency=2))
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    failure, success = sorted(_hold_ends(parts), key=lambda end: end.index)
    decided: list[str] = []

    def fail_first(commit: Commit) -> None:
        decided.append(parts.children.ended(failure))

    runs.hook("commit", fail_first, when=lambda commit: commit.run.run_id == run_id)

    assert parts.children.ended(success) == "ignored"  # it lost: the step had failed meanwhile
    assert decided == ["children_failed"]
    drain(parts)
    clock.advance(GRACE + 1)
    parts.sweeper.sweep()
    drain(parts)

    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "item_failed"
    children = _children(parts, run_id)
    assert _statuses(children) == ["failed", "succeeded", "cancelled"]
    assert all(child.is_terminal for child in children)
    _gap_free(parts)


def test_a_child_created_after_its_parent_ended_is_cancelled_before_it_runs(clock: FakeClock) -> None:
    """A commit that stalled longer than the parent's cancellation creates an item after the
    cancellation ran: the sweeper finds it queued, and its first kick cancels it unrun."""
    parts = make_fake(clock, sweep_grace_sec=GRACE)
    definition = _definition(_map("each", list(range(4)), [_nap("wait", 60), _log("say")], max_concurrency=2))
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    drain(parts)
    stale, pinned = parts.runs.get_with_definition(T, run_id)
    assert stale.fanout is not None
    assert parts.control.act(T, run_id, "cancel", "ops").result == "applied"
    drain(parts)
    assert _statuses(_children(parts, run_id)) == ["cancelled"] * 2

    orphan = parts.children._start(stale, pinned, stale.fanout, 2)  # the stalled commit's child
    clock.advance(GRACE + 1)
    parts.sweeper.sweep()
    drain(parts)

    ended = _run(parts, orphan.run_id)
    assert ended.status == RunStatus.CANCELLED
    assert not [e for e in _events(parts, orphan.run_id) if e.event_type == EventType.STEP_STARTED]
    _gap_free(parts)


# ---- retry inside the items -----------------------------------------------------------------


def _boom_on(condition: str) -> list[Step]:
    """Item steps: `a`, then `boom` failing when `condition` holds, then `c`."""
    return [
        _log("a", "a {{ item }}"),
        _log("boom", "{% if " + condition + " %}" + "{{ inputs.absent.deeper }}" + "{% else %}ok{% endif %}"),
        _log("c", "c {{ item }}"),
    ]


def _child_events(parts: Parts, child: Run) -> list[str]:
    return [f"{e.event_type}:{e.step_id or ''}" for e in _events(parts, child.run_id)]


def test_a_retry_runs_again_only_the_items_that_did_not_succeed_from_a_step_inside_them(
    parts: Parts, clock: FakeClock
) -> None:
    run_id = _submit(parts, _map("each", [0, 1, 2, 3], _boom_on("item == 1"), max_concurrency=2))
    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    first, failed = _children(parts, run_id)[:2]
    assert (first.status, failed.status) == (RunStatus.SUCCEEDED, RunStatus.FAILED)
    assert all(child.is_terminal for child in _children(parts, run_id))
    untouched = (first.version, _child_events(parts, first))

    # From the failing step again: the item fails again, the one that succeeded is left alone.
    assert parts.control.act(T, run_id, "retry", "ops").result == "applied"
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.FAILED
    assert _child_events(parts, _run(parts, failed.run_id)).count("step_started:a") == 1
    assert _child_events(parts, _run(parts, failed.run_id)).count("step_started:boom") == 2

    # From `c`, a step inside the items: item 1 skips `boom`; items 2 and 3 then start as usual.
    assert parts.control.act(T, run_id, "retry", "ops", from_step="c").result == "applied"
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id)) == ["c 0", "c 1", "c 2", "c 3"]
    children = _children(parts, run_id)
    assert len(children) == 4  # the same child runs: none created again
    assert (children[0].version, _child_events(parts, children[0])) == untouched
    again = [
        c["index"]
        for e in _of_type(parts, run_id, EventType.CHILDREN_STARTED)
        for c in e.payload["children"]
        if c.get("again")
    ]
    assert again.count(1) == 2  # the failed item, once per retry
    assert 0 not in again  # the one that succeeded, never
    retried = [e for e in _of_type(parts, run_id, EventType.RUN_RESUMED) if e.payload.get("redrive")]
    assert [e.payload.get("items_from_step") for e in retried] == [None, "c"]
    _gap_free(parts)


def test_a_retry_of_a_parallel_runs_again_only_the_failed_branch(parts: Parts, clock: FakeClock) -> None:
    branches = {"good": [_log("g1", "good")], "bad": [_fails("boom"), _log("c", "c {{ branch }}")]}
    run_id = _submit(parts, _parallel("both", branches))
    assert _run(parts, run_id).status == RunStatus.FAILED
    good = _children(parts, run_id)[0]
    assert parts.control.act(T, run_id, "retry", "ops", from_step="c").result == "applied"
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _output(parts, run_id) == {
        "good": {"message": "good", "level": "info"},
        "bad": {"message": "c bad", "level": "info"},
    }
    assert _run(parts, good.run_id).version == good.version
    _gap_free(parts)


def test_items_cancelled_when_their_step_failed_run_again_too(parts: Parts, clock: FakeClock) -> None:
    steps = [
        _when("first", "item == 0", "boom", "wait"),
        _fails("boom"),
        _nap("wait", 60),
        _log("c", "c {{ item }}"),
    ]
    run_id = _submit(parts, _map("each", [0, 1, 2], steps))
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.FAILED
    assert _statuses(_children(parts, run_id)) == ["failed", "cancelled", "cancelled"]

    assert parts.control.act(T, run_id, "retry", "ops", from_step="c").result == "applied"
    run = _until_ended(parts, clock, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _messages(_output(parts, run_id)) == ["c 0", "c 1", "c 2"]
    _gap_free(parts)


def test_a_retry_from_the_step_itself_runs_every_item_again(parts: Parts, clock: FakeClock) -> None:
    run_id = _submit(parts, _map("each", [0, 1], _boom_on("item == 1")))
    assert _run(parts, run_id).status == RunStatus.FAILED
    assert parts.control.act(T, run_id, "retry", "ops", from_step="each").result == "applied"
    _until_ended(parts, clock, run_id)
    assert len(_children(parts, run_id)) == 4  # a new round: two new child runs


def test_a_retry_from_inside_items_that_ran_inside_the_run_is_refused(parts: Parts) -> None:
    run_id = _submit(parts, _map("each", [0, 1], _boom_on("item == 1"), mode="auto"))
    assert _run(parts, run_id).status == RunStatus.FAILED
    with pytest.raises(ValidationFailed) as refused:
        parts.control.act(T, run_id, "retry", "ops", from_step="c")
    assert refused.value.details == [{"field": "from_step", "message": "not retryable inside its items"}]


# ---- the API ---------------------------------------------------------------------------


def _nested(depth: int) -> Step:
    """`depth` parallels, each holding the next; a log step in the innermost."""
    step: Step = _log("leaf")
    for level in range(depth, 0, -1):
        step = _parallel(f"p{level}", {"inner": [step]})
    return step


def _submitted(client: TestClient, *steps: Step) -> Any:
    return client.post(f"{WORKFLOWS}/runs", json={"definition": {"name": "checked", "steps": list(steps)}})


def _refusal(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_steps_nested_deeper_than_the_bound_are_refused_too_deep(
    client: TestClient, container: Parts
) -> None:
    # `limit` nested parallels run children `limit` deep, which the engine allows; one more not.
    limit = container.settings.max_nesting
    assert _submitted(client, _nested(limit)).status_code == 202

    error = _refusal(_submitted(client, _nested(limit + 1)))

    assert error["code"] == "too_deep"
    deepest = "steps[0]" + ".config.branches.inner[0]" * limit + ".config.branches.inner"
    assert [d["field"] for d in error["details"]] == [f"definition.{deepest}"]
    report = client.post(f"{WORKFLOWS}/validate", json={"name": "deep", "steps": [_nested(limit + 1)]}).json()
    assert report["valid"] is False
    assert [e["field"] for e in report["errors"]] == [deepest]


def test_a_step_id_repeated_across_branches_is_refused_naming_both(client: TestClient) -> None:
    error = _refusal(_submitted(client, _parallel("both", {"a": [_log("same")], "b": [_log("same")]})))

    assert error["code"] == "validation_error"
    [detail] = error["details"]
    assert detail["field"] == "definition.steps[0].config.branches.b[0].id"
    assert "at steps[0].config.branches.a[0]" in detail["message"]
    # A map's steps and the definition's share one namespace too.
    error = _refusal(_submitted(client, _log("same"), _map("each", [1], [_log("same")])))
    assert [d["field"] for d in error["details"]] == ["definition.steps[1].config.steps[0].id"]


def test_literal_items_over_the_limit_are_refused(clock: FakeClock) -> None:
    with api_client(make_fake(clock, max_map_items=10)) as client:
        assert _submitted(client, _map("each", list(range(10)), [_log("say")])).status_code == 202
        error = _refusal(_submitted(client, _map("each", list(range(11)), [_log("say")])))
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["definition.steps[0].config.items"]
    assert "11 items, limit 10" in error["details"][0]["message"]


@pytest.mark.parametrize(
    "step",
    [
        _parallel("both", {"a": [_log("one")], "empty": []}),
        _parallel("both", {}),
        _map("each", [1], []),
        _map("each", [1], [_log("say")], max_concurrency=101),
    ],
    ids=["empty_branch", "no_branches", "no_item_steps", "too_concurrent"],
)
def test_side_by_side_steps_with_nothing_to_run_are_refused(client: TestClient, step: Step) -> None:
    error = _refusal(_submitted(client, step))

    assert error["code"] == "validation_error"
    assert error["details"][0]["field"].startswith("definition.steps[0].config")


# ---- tenants ---------------------------------------------------------------------------


def test_another_tenants_big_map_does_not_hold_up_a_run(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_concurrency=1)
    big = _map("each", list(range(200)), [_nap("wait", 60), _log("say")], max_concurrency=100)
    theirs = parts.run_service.submit(CALLER, _definition(big), {}).run_id
    ours = parts.run_service.submit(OTHER, _definition(_log("hello")), {}).run_id

    drain(parts)

    assert _run(parts, ours, "t2").status == RunStatus.SUCCEEDED
    assert _run(parts, theirs).status == RunStatus.RUNNING
    assert [e.event_type for e in _events(parts, ours, "t2")] == [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    # Its children run within its own slot: the map goes on under a concurrency of 1.
    assert _until_ended(parts, clock, theirs).status == RunStatus.SUCCEEDED
    assert _run(parts, ours, "t2").last_event_seq == 4
    assert {child.tenant_id for child in _children(parts, theirs)} == {T}
    _gap_free(parts)


def _every_run(parts: Parts) -> Iterator[Run]:
    with _store(parts).lock:
        yield from list(_store(parts).runs.values())


def test_events_are_gap_free_in_every_run_whatever_ends_them(parts: Parts, clock: FakeClock) -> None:
    child_id = _save(parts, _nap("wait", 30), _log("done"))
    run_id = _submit(
        parts,
        _parallel(
            "outer",
            {
                "nested": [_map("inner", [1, 2, 3], [_log("say", "{{ item }}")], max_concurrency=1)],
                "saved": [_workflow("call", child_id)],
                "slow": [_nap("wait_more", 60), _log("late")],
            },
        ),
        _parallel("race", {"a": [_nap("nap_a", 10)], "b": [_nap("nap_b", 20)]}, join="any"),
    )

    run = _until_ended(parts, clock, run_id, step=10)

    assert run.status == RunStatus.SUCCEEDED, run.error
    runs = list(_every_run(parts))
    assert len(runs) == 1 + 3 + 3 + 1 + 2  # the run, its branches, the map's items, the saved one, the race
    assert all(r.is_terminal for r in runs)
    assert max(r.depth for r in runs) == 2
    _gap_free(parts)


def test_items_get_the_runs_inputs_only_when_their_steps_read_them(parts: Parts) -> None:
    inputs = {"name": "Ada", "blob": "x" * 2000}
    reading = _map("each", [1, 2], [_log("say", "{{ inputs.name }} {{ item }}")])
    deciding = _map(
        "each",
        [1, 2],
        [
            {
                "id": "pick",
                "type": "branch",
                "config": {"condition": "inputs.name == 'Ada'", "true_next": "_end", "false_next": "_end"},
            }
        ],
    )
    blind = _map("each", [1, 2], [_log("say", "{{ item }}")])
    for definition, copied in ((reading, True), (deciding, True), (blind, False)):
        run_id = parts.run_service.submit(
            CALLER, WorkflowDefinition.model_validate({"name": "inputs", "steps": [definition]}), inputs
        ).run_id
        drain(parts)
        assert parts.runs.get("t1", run_id).status == RunStatus.SUCCEEDED
        for child in _children(parts, run_id):
            assert child.inputs == (inputs if copied else {})


def test_a_child_nobody_waits_for_takes_a_tenant_slot_of_its_own(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_concurrency=1)
    child_id = _save(parts, _log("done"))
    run_id = parts.run_service.submit(
        CALLER,
        WorkflowDefinition.model_validate(
            {"name": "starter", "steps": [_workflow("call", child_id, wait=False), _nap("hold", 30)]}
        ),
        {},
    ).run_id
    drain(parts)
    [child] = _children(parts, run_id)
    # The parent holds the tenant's one slot: the child it started waits for it, queued.
    assert _run(parts, child.run_id).status == RunStatus.QUEUED

    _until_ended(parts, clock, run_id)
    _until_ended(parts, clock, child.run_id)

    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert _run(parts, child.run_id).status == RunStatus.SUCCEEDED


def test_an_item_or_child_inputs_bigger_than_a_run_may_take_fail_the_step_at_once(clock: FakeClock) -> None:
    parts = make_fake(clock, max_inputs_bytes=1024)
    child_id = _save(parts, _log("hello", "Hello {{ inputs.name }}"))
    big = "x" * 600  # the run's inputs fit; twice that does not fit a child
    doubled = "{{ inputs.big ~ inputs.big }}"
    mapped = _submit(
        parts, _map("each", "{{ [1, inputs.big ~ inputs.big, 3] }}", [_log("say")]), inputs={"big": big}
    )
    called = _submit(parts, _workflow("call", child_id, inputs={"name": doubled}), inputs={"big": big})

    for run_id, code, field in (
        (mapped, "item_too_large", "items[1]"),
        (called, "inputs_too_large", "inputs"),
    ):
        run = _run(parts, run_id)
        assert run.status == RunStatus.FAILED
        assert run.error is not None
        assert run.error["code"] == code
        assert run.error["message"].startswith(f"{field}: ")
        assert _children(parts, run_id) == []
    _gap_free(parts)
