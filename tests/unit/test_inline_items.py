"""Items run inside their parent run, on the in-memory fakes: a `map` or `parallel` whose steps are
only `log` and `branch` steps starts no child run; each kick runs a batch of items and one commit
records it (their events, named by `index` or `branch`, in the parent's stream). Outputs in item
order across batches, routes and failures inside an item, tolerated failures, `join: any`, what
keeps a map out of this mode, pause, cancel, duplicate and lost kicks, and the tenant's share
charged per item step (docs/steps.md, "Steps side by side")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FakeClock, drain, make_fake
from tests.fakes import FakeQueue, FakeRunLog
from tests.faults import Faulty, unwrapped
from workflows.domain import fanout
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import AdvanceMessage, CancelChildren, QueuedMessage
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import EventType, Run, RunEvent, RunStatus
from workflows.engine.children import INLINE_PER_COMMIT
from workflows.engine.outputs import RunOutputs
from workflows.roots.parts import Parts

T = "t1"
CALLER = Principal(tenant_id=T, user_id="ops", permissions=ALL_PERMISSIONS)
GRACE = 900
Step = dict[str, Any]


def _log(step_id: str, message: str = "ok", **fields: Any) -> Step:
    return {"id": step_id, "type": "log", "config": {"message": message}, **fields}


def _when(step_id: str, condition: str, then: str, otherwise: str) -> Step:
    return {
        "id": step_id,
        "type": "branch",
        "config": {"condition": condition, "true_next": then, "false_next": otherwise},
    }


def _map(step_id: str, items: Any, steps: list[Step], **config: Any) -> Step:
    return {"id": step_id, "type": "map", "config": {"items": items, "steps": steps, **config}}


def _parallel(step_id: str, branches: dict[str, list[Step]], **config: Any) -> Step:
    return {"id": step_id, "type": "parallel", "config": {"branches": branches, **config}}


FAILS = "{{ inputs.absent.deeper }}"  # a template that fails: no run here has that input
# Items of the maps paused, cancelled or kicked twice here: two batches and part of a third.
ITEMS = 2 * INLINE_PER_COMMIT + INLINE_PER_COMMIT // 2


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock)


def _submit(parts: Parts, *steps: Step, inputs: dict[str, Any] | None = None) -> str:
    definition = WorkflowDefinition.model_validate({"name": "inline", "steps": list(steps)})
    run_id = parts.run_service.submit(CALLER, definition, inputs or {}).run_id
    drain(parts, max_messages=100_000)
    return run_id


def _run(parts: Parts, run_id: str) -> Run:
    return parts.runs.get(T, run_id)


def _store(parts: Parts) -> FakeRunLog:
    store = unwrapped(parts.runs)
    assert isinstance(store, FakeRunLog)
    return store


def _events(parts: Parts, run_id: str) -> list[RunEvent]:
    return parts.runs.list_events(T, run_id, limit=100_000).events


def _output(parts: Parts, run_id: str, step_id: str) -> Any:
    return RunOutputs(parts.run_outputs, _run(parts, run_id))[step_id]


def _child_runs(parts: Parts) -> list[Run]:
    store = _store(parts)
    with store.lock:
        return [run for run in store.runs.values() if run.parent_run_id is not None]


def _gap_free(parts: Parts, run_id: str) -> None:
    seqs = [event.event_seq for event in _events(parts, run_id)]
    assert seqs == list(range(1, _run(parts, run_id).last_event_seq + 1))


def _item_events(parts: Parts, run_id: str, step_id: str) -> list[RunEvent]:
    return [e for e in _events(parts, run_id) if e.step_id == step_id]


# ---- map ------------------------------------------------------------------------------


def test_a_map_of_log_items_runs_inside_the_run_in_item_order(parts: Parts) -> None:
    run_id = _submit(
        parts,
        _log("first", "hi"),
        _map(
            "each",
            ["a", "b", "c"],
            [_log("say", "{{ index }}={{ item }} after {{ steps.first.output.message }}")],
        ),
        _log("after", "{{ steps.each.output | map(attribute='message') | join(',') }}"),
    )
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _child_runs(parts) == []
    assert [o["message"] for o in _output(parts, run_id, "each")] == [
        "0=a after hi",
        "1=b after hi",
        "2=c after hi",
    ]
    assert _output(parts, run_id, "after")["message"] == "0=a after hi,1=b after hi,2=c after hi"
    said = _item_events(parts, run_id, "say")
    assert [(e.event_type, e.payload["index"]) for e in said] == [
        (EventType.STEP_COMPLETED, i) for i in range(3)
    ]
    assert all("item" not in e.payload for e in said)  # named by index; the item may be large
    _gap_free(parts, run_id)


def test_a_map_of_a_thousand_items_commits_in_batches_and_keeps_the_record_small(parts: Parts) -> None:
    items = 4 * INLINE_PER_COMMIT
    definition = WorkflowDefinition.model_validate(
        {
            "name": "inline",
            "steps": [
                _map(
                    "each",
                    f"{{{{ range({4 * INLINE_PER_COMMIT}) | list }}}}",
                    [_log("say", "{{ item * 2 }}")],
                )
            ],
        }
    )
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    actions = drain(parts).actions
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert [o["message"] for o in _output(parts, run_id, "each")] == [str(2 * i) for i in range(items)]
    # The run's kick (the map's record), a kick per batch (the last one ends the run).
    batches = items // INLINE_PER_COMMIT
    assert actions == ["advanced", *["items_recorded"] * (batches - 1), "items_succeeded"]
    assert len(_item_events(parts, run_id, "say")) == items
    assert [e.event_type for e in _item_events(parts, run_id, "each")] == [
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
    ]
    # Every batch's events are one commit's: numbered in item order, none missing.
    assert [e.payload["index"] for e in _item_events(parts, run_id, "say")] == list(range(items))
    _gap_free(parts, run_id)


def test_the_record_folds_batch_results_and_stays_small() -> None:
    """Results entries fold RESULTS_FOLD at a time: 10,000 batches leave a few dozen entries."""
    results: list[fanout.ResultsEntry] = []
    most = 0
    for _ in range(10_000):
        results.append({"level": 0, "n": 1, "out": []})
        while n := fanout.to_fold(results):
            tail = results[-n:]
            results = [
                *results[:-n],
                {"level": tail[0]["level"] + 1, "n": sum(e["n"] for e in tail), "out": []},
            ]
        most = max(most, len(results))
    assert sum(entry["n"] for entry in results) == 10_000
    assert most <= 5 * (fanout.RESULTS_FOLD - 1) + 1
    levels = [entry["level"] for entry in results]
    assert levels == sorted(levels, reverse=True)


def test_branches_and_routed_failures_inside_an_item(parts: Parts) -> None:
    steps = [
        _when("odd", "item % 2 == 1", "risky", "even"),
        _log("even", "even {{ item }}", on_success="_end"),
        _log("risky", FAILS, on_failure="rescued"),
        _log("rescued", "rescued {{ item }}: {{ steps.risky.output.error.code }}"),
    ]
    run_id = _submit(parts, _map("each", [0, 1, 2], steps))
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert [o["message"] for o in _output(parts, run_id, "each")] == [
        "even 0",
        "rescued 1: template_error",
        "even 2",
    ]
    failed = _item_events(parts, run_id, "risky")
    assert [(e.event_type, e.payload["index"]) for e in failed] == [(EventType.STEP_FAILED, 1)]
    assert failed[0].payload["output"]["error"]["code"] == "template_error"


def test_a_failure_routed_to_the_end_is_the_items_output(parts: Parts) -> None:
    steps = [_log("risky", "{% if item %}" + FAILS + "{% else %}fine{% endif %}", on_failure="_end")]
    run_id = _submit(parts, _map("each", [0, 1], steps))
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    first, second = _output(parts, run_id, "each")
    assert first == {"message": "fine", "level": "info"}
    assert second["error"]["code"] == "template_error"


def test_tolerated_failures_give_null_and_one_too_many_fails_the_step(parts: Parts) -> None:
    say = [_log("say", "{% if item == 'bad' %}" + FAILS + "{% else %}{{ item }}{% endif %}")]
    run_id = _submit(parts, _map("each", ["a", "bad", "c"], say, tolerated_failures=1))
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert [o and o["message"] for o in _output(parts, run_id, "each")] == ["a", None, "c"]

    run_id = _submit(parts, _map("each", ["a", "bad", "bad", "d"], say, tolerated_failures=1))
    run = _run(parts, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == "item_failed"
    assert "1, 2" in run.error["message"]
    # The step failed at the second failure: the item after it never ran.
    assert [e.payload["index"] for e in _item_events(parts, run_id, "say")] == [0, 1, 2]
    # An item run inside the run is named by its index alone: there is no child run to link.
    failure = fanout.mark_ended(fanout.plan("each", "map", 1, 3), 1, "failed", None, None)["failures"]
    assert failure == [{"index": 1, "status": "failed"}]


def test_a_large_item_output_is_stored_apart_and_read_back(parts: Parts) -> None:
    run_id = _submit(parts, _map("each", [1, 2], [_log("say", "{{ 'x' * 3000 }}{{ item }}")]))
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert [len(o["message"]) for o in _output(parts, run_id, "each")] == [3001, 3001]
    events = _item_events(parts, run_id, "say")
    assert all("$output" in e.payload["output"] for e in events)  # references, not 3 KB copies


# ---- parallel -------------------------------------------------------------------------


def test_a_parallel_of_log_branches_runs_inside_the_run(parts: Parts) -> None:
    run_id = _submit(
        parts,
        _parallel(
            "both",
            {"a": [_log("a1", "{{ branch }} one")], "b": [_log("b1", "x"), _log("b2", "{{ branch }} two")]},
        ),
    )
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert _child_runs(parts) == []
    assert _output(parts, run_id, "both") == {
        "a": {"message": "a one", "level": "info"},
        "b": {"message": "b two", "level": "info"},
    }
    assert [e.payload["branch"] for e in _events(parts, run_id) if e.step_id in ("a1", "b1", "b2")] == [
        "a",
        "b",
        "b",
    ]


def test_join_any_takes_the_first_branch_that_succeeds_and_runs_no_more(parts: Parts) -> None:
    branches = {"x": [_log("x1", FAILS)], "y": [_log("y1", "y wins")], "z": [_log("z1", "never")]}
    run_id = _submit(parts, _parallel("first", branches, join="any"))
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert _output(parts, run_id, "first") == {"y": {"message": "y wins", "level": "info"}}
    assert _item_events(parts, run_id, "z1") == []


# ---- what keeps items out ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "config"),
    [
        pytest.param([_log("say")], {"mode": "child_runs"}, id="asked-for-child-runs"),
        pytest.param([{"id": "nap", "type": "delay", "config": {"seconds": 1}}], {}, id="a-delay"),
        pytest.param([_log("say", retry={"max_attempts": 2})], {}, id="a-retry-policy"),
        pytest.param([_log("say"), _when("again", "false", "say", "_end")], {}, id="a-route-back-a-loop"),
    ],
)
def test_items_that_are_not_only_pure_steps_are_child_runs(
    parts: Parts, clock: FakeClock, steps: list[Step], config: dict[str, Any]
) -> None:
    run_id = _submit(parts, _map("each", [1, 2], steps, **config))
    for _ in range(5):
        clock.advance(5)
        drain(parts)
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert len(_child_runs(parts)) == 2


# ---- control and faults -----------------------------------------------------------------


def _work(parts: Parts, kicks: int) -> None:
    """Work the next `kicks` dispatch messages, one at a time."""
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    for _ in range(kicks):
        (message,) = queue.receive()
        assert isinstance(message, AdvanceMessage)
        parts.engine.process(message)


def _held(parts: Parts) -> list[QueuedMessage]:
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    return queue.receive()


def test_pause_stops_between_batches_and_resume_goes_on(parts: Parts) -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "name": "inline",
            "steps": [_map("each", f"{{{{ range({ITEMS}) | list }}}}", [_log("say", "{{ item }}")])],
        }
    )
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    _work(parts, 2)  # the run's first kick (the map's record), then one batch
    assert parts.control.act(T, run_id, "pause", "ops").result == "applied"
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.PAUSED
    assert run.fanout is not None
    assert run.fanout["started"] == INLINE_PER_COMMIT
    assert parts.control.act(T, run_id, "resume", "ops").result == "applied"
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert len(_output(parts, run_id, "each")) == ITEMS
    _gap_free(parts, run_id)


def test_cancel_mid_map_ends_the_run_and_cancels_no_child(parts: Parts) -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "name": "inline",
            "steps": [_map("each", f"{{{{ range({ITEMS}) | list }}}}", [_log("say", "{{ item }}")])],
        }
    )
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    _work(parts, 2)
    assert parts.control.act(T, run_id, "cancel", "ops").result == "applied"
    pending = _held(parts)
    assert not any(isinstance(m, CancelChildren) for m in pending)
    for message in pending:
        assert isinstance(message, AdvanceMessage)
        assert parts.engine.process(message).action in ("ignored", "stale")
    run = _run(parts, run_id)
    assert run.status == RunStatus.CANCELLED
    assert len(_item_events(parts, run_id, "say")) == INLINE_PER_COMMIT
    _gap_free(parts, run_id)


def test_a_duplicate_kick_records_each_batch_once(parts: Parts) -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "name": "inline",
            "steps": [_map("each", f"{{{{ range({ITEMS}) | list }}}}", [_log("say", "{{ item }}")])],
        }
    )
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    _work(parts, 1)  # the map's record: its kick runs the first batch
    (kick,) = _held(parts)
    assert isinstance(kick, AdvanceMessage)
    # Two deliveries of that kick that race: both read the run before either commits.
    run, pinned = parts.runs.get_with_definition(T, run_id)
    assert parts.children.advance(run, pinned)[0] == "items_recorded"
    assert parts.children.advance(run, pinned)[0] == "lost_race"
    # And the same kick delivered once more, after: stale.
    assert parts.engine.process(kick).action == "stale"
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert [e.payload["index"] for e in _item_events(parts, run_id, "say")] == list(range(ITEMS))
    assert [o["message"] for o in _output(parts, run_id, "each")] == [str(i) for i in range(ITEMS)]
    _gap_free(parts, run_id)


def test_a_lost_kick_between_batches_is_found_by_the_sweeper(clock: FakeClock) -> None:
    parts = make_fake(clock, sweep_grace_sec=GRACE)
    queue = Faulty(unwrapped(parts.queue))
    parts.give(queue=queue)
    definition = WorkflowDefinition.model_validate(
        {
            "name": "inline",
            "steps": [_map("each", f"{{{{ range({ITEMS}) | list }}}}", [_log("say", "{{ item }}")])],
        }
    )
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    _work(parts, 2)  # the record, then the first batch (whose kick is next)
    queue.drop("send", when=lambda message, **_: True)
    drain(parts)  # the second batch commits; its kick is lost
    queue.drop("send", when=lambda message, **_: False)
    run = _run(parts, run_id)
    assert run.status == RunStatus.RUNNING
    assert run.fanout is not None
    assert run.fanout["started"] == 2 * INLINE_PER_COMMIT

    clock.advance(GRACE + 1)
    assert parts.sweeper.sweep().rekicked == 1
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED
    assert [e.payload["index"] for e in _item_events(parts, run_id, "say")] == list(range(ITEMS))
    _gap_free(parts, run_id)


def test_item_steps_are_charged_to_the_tenant_share(clock: FakeClock) -> None:
    parts = make_fake(clock, tenant_steps_per_sec=5, tenant_steps_burst=10)
    definition = WorkflowDefinition.model_validate(
        {"name": "inline", "steps": [_map("each", "{{ range(40) | list }}", [_log("say", "{{ item }}")])]}
    )
    first = parts.run_service.submit(CALLER, definition, {}).run_id
    drain(parts)
    assert _run(parts, first).status == RunStatus.SUCCEEDED
    # Its 40 item steps moved the tenant's clock 8 s on: the tenant's next map waits its turn.
    second = parts.run_service.submit(CALLER, definition, {}).run_id
    assert "deferred" in drain(parts).actions
    assert not _run(parts, second).is_terminal
    other = Principal(tenant_id="t2", user_id="ops", permissions=ALL_PERMISSIONS)
    elsewhere = parts.run_service.submit(other, definition, {}).run_id
    drain(parts)
    assert parts.runs.get("t2", elsewhere).status == RunStatus.SUCCEEDED  # another tenant's is not
    for _ in range(10):
        clock.advance(2)
        drain(parts)
    assert _run(parts, second).status == RunStatus.SUCCEEDED
