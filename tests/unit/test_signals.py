"""wait_for_signal and signals, on the fakes: a signal sent before the wait (lookback) or after it,
`mode: all`, matching on fields, a signal to one run, idempotency by id, timeouts through
`on_timeout`, a lost delivery made up by the wait's next hop, and a flood refused per tenant."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FakeClock, drain, make_fake, step_output
from tests.fakes import FakeQueue
from tests.faults import unwrapped
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import DeliverSignal
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import Run, RunStatus
from workflows.errors import Conflict, DomainError, QuotaExceeded
from workflows.roots.parts import Parts

CALLER = Principal(tenant_id="t1", user_id="ops", permissions=ALL_PERMISSIONS)
OTHER_TENANT = Principal(tenant_id="t2", user_id="ops", permissions=ALL_PERMISSIONS)


def _wait(**config: Any) -> dict[str, Any]:
    return {"id": "wait", "type": "wait_for_signal", "config": config}


def _definition(*steps: dict[str, Any]) -> WorkflowDefinition:
    after = {"id": "after", "type": "log", "config": {"message": "{{ steps.wait.output.signals | tojson }}"}}
    return WorkflowDefinition.model_validate({"name": "signals", "steps": [*steps, after]})


def _submit(parts: Parts, definition: WorkflowDefinition, inputs: dict[str, Any] | None = None) -> str:
    run_id = parts.run_service.submit(CALLER, definition, inputs or {}).run_id
    drain(parts)
    return run_id


def _run(parts: Parts, run_id: str, caller: Principal = CALLER) -> Run:
    return parts.runs.get(caller.tenant_id, run_id)


def _wait_output(parts: Parts, run: Run) -> Any:
    """The wait step's output, as the run's later templates see it."""
    return step_output(parts, run.tenant_id, run.run_id, "wait")


def _types(parts: Parts, run_id: str) -> list[str]:
    return [e.event_type for e in parts.runs.list_events("t1", run_id, limit=100).events]


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock)


def test_a_signal_sent_after_the_wait_began_completes_the_step(parts: Parts, clock: FakeClock) -> None:
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "paid"}])))
    waiting = _run(parts, run_id)
    assert waiting.status == RunStatus.RUNNING
    assert waiting.current_step_id == "wait"
    assert waiting.signal_wait is not None
    # The wait begins once: the step is not run again until its kick comes back.
    assert _types(parts, run_id).count("waiting_signal") == 1

    clock.advance(3)
    receipt = parts.signal_service.send(CALLER, "paid", "sig-1", {"amount": 12})
    assert receipt.new
    drain(parts)

    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    output = _wait_output(parts, run)
    assert output["signals"]["paid"]["data"] == {"amount": 12}
    assert output["signals"]["paid"]["id"] == "sig-1"
    assert run.signal_wait is None
    types = _types(parts, run_id)
    assert types.index("waiting_signal") < types.index("signal_received") < types.index("step_completed")


def test_a_signal_sent_before_the_wait_counts_within_its_lookback(parts: Parts, clock: FakeClock) -> None:
    parts.signal_service.send(CALLER, "ready", "early", {"n": 1})
    drain(parts)  # delivered to nobody: nothing waits yet
    clock.advance(5)
    looking_back = _submit(parts, _definition(_wait(signals=[{"name": "ready"}], lookback_seconds=10)))
    not_looking = _submit(parts, _definition(_wait(signals=[{"name": "ready"}])))
    assert _run(parts, looking_back).status == RunStatus.SUCCEEDED
    assert _wait_output(parts, _run(parts, looking_back))["signals"]["ready"]["id"] == "early"
    assert _run(parts, not_looking).status == RunStatus.RUNNING  # lookback 0: sent before it counts


def test_mode_all_waits_for_one_of_each_name(parts: Parts, clock: FakeClock) -> None:
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "a"}, {"name": "b"}], mode="all")))
    parts.signal_service.send(CALLER, "a", "a-1", {})
    parts.signal_service.send(CALLER, "a", "a-2", {})  # a second `a` adds nothing
    drain(parts)
    partway = _run(parts, run_id)
    assert partway.status == RunStatus.RUNNING
    assert partway.signal_wait is not None
    assert set(partway.signal_wait["received"]) == {"a"}
    parts.signal_service.send(CALLER, "b", "b-1", {})
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert set(_wait_output(parts, run)["signals"]) == {"a", "b"}
    assert _types(parts, run_id).count("signal_received") == 2


def test_fields_must_match_values_rendered_from_the_run(parts: Parts) -> None:
    wait = _wait(signals=[{"name": "paid", "match": {"order.id": "{{ inputs.order }}", "ok": True}}])
    run_id = _submit(parts, _definition(wait), {"order": 7})
    assert _run(parts, run_id).signal_wait["signals"][0]["match"] == {"order.id": 7, "ok": True}  # type: ignore[index]
    parts.signal_service.send(CALLER, "paid", "other-order", {"order": {"id": 8}, "ok": True})
    parts.signal_service.send(CALLER, "paid", "not-ok", {"order": {"id": 7}, "ok": False})
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.RUNNING
    parts.signal_service.send(CALLER, "paid", "this-one", {"order": {"id": 7}, "ok": True})
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert _wait_output(parts, run)["signals"]["paid"]["id"] == "this-one"


def test_a_signal_to_one_run_reaches_that_run_only(parts: Parts, clock: FakeClock) -> None:
    first = _submit(parts, _definition(_wait(signals=[{"name": "go"}], lookback_seconds=600)))
    second = _submit(parts, _definition(_wait(signals=[{"name": "go"}], lookback_seconds=600)))
    receipt = parts.signal_service.send(CALLER, "go", "to-first", {}, run_id=first)
    assert receipt.delivery == "completed"
    drain(parts)
    assert _run(parts, first).status == RunStatus.SUCCEEDED
    assert _run(parts, second).status == RunStatus.RUNNING
    # A run that begins waiting later does not take another run's signal on its look back.
    third = _submit(parts, _definition(_wait(signals=[{"name": "go"}], lookback_seconds=600)))
    assert _run(parts, third).status == RunStatus.RUNNING


def test_a_signal_id_is_sent_once(parts: Parts) -> None:
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "a"}, {"name": "b"}], mode="all")))
    first = parts.signal_service.send(CALLER, "a", "same", {"x": 1})
    again = parts.signal_service.send(CALLER, "a", "same", {"x": 1})
    assert first.new
    assert not again.new
    assert again.sent_at == first.sent_at
    with pytest.raises(Conflict):
        parts.signal_service.send(CALLER, "a", "same", {"x": 2})
    drain(parts)
    assert _types(parts, run_id).count("signal_received") == 1
    # Ids are the tenant's own: another tenant's `same` is another signal.
    assert parts.signal_service.send(OTHER_TENANT, "a", "same", {"x": 2}).new


def test_a_wait_that_times_out_follows_on_timeout(parts: Parts, clock: FakeClock) -> None:
    wait = {**_wait(signals=[{"name": "never"}], timeout_seconds=60), "on_timeout": "late"}
    late = {"id": "late", "type": "log", "config": {"message": "timed out"}}
    definition = WorkflowDefinition.model_validate(
        {
            "name": "t",
            "steps": [
                wait,
                {"id": "done", "type": "log", "config": {"message": "ok"}, "on_success": "_end"},
                late,
            ],
        }
    )
    run_id = _submit(parts, definition)
    clock.advance(61)
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert "late" in run.step_outputs
    assert _wait_output(parts, run)["error"]["code"] == "timeout"
    assert "step_timeout" in _types(parts, run_id)
    # A signal after the timeout changes nothing.
    parts.signal_service.send(CALLER, "never", "too-late", {})
    drain(parts)
    assert _types(parts, run_id).count("signal_received") == 0


def test_a_lost_delivery_is_made_up_by_the_waits_next_hop(parts: Parts, clock: FakeClock) -> None:
    # A wait of up to an hour is chained in hops (a longer one is woken by the sweeper).
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "paid"}], timeout_seconds=3600)))
    parts.signal_service.send(CALLER, "paid", "lost", {})
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    queue.messages = [q for q in queue.messages if not isinstance(q.message, DeliverSignal)]  # lost
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.RUNNING
    clock.advance(900)  # the wait's next hop (SQS delays at most 15 minutes)
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED


def test_a_paused_run_takes_a_signal_and_rests_until_resumed(parts: Parts) -> None:
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "paid"}])))
    parts.control.act("t1", run_id, "pause", "ops")
    parts.signal_service.send(CALLER, "paid", "while-paused", {})
    drain(parts)
    paused = _run(parts, run_id)
    assert paused.status == RunStatus.PAUSED
    assert paused.current_step_id == "after"
    parts.control.act("t1", run_id, "resume", "ops")
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.SUCCEEDED


def test_a_cancelled_run_is_no_longer_waiting(parts: Parts) -> None:
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "paid"}])))
    store = parts.signals
    assert store.waiters("t1", "paid", after=None, limit=10)[0] == [run_id]
    parts.control.act("t1", run_id, "cancel", "ops")
    parts.signal_service.send(CALLER, "paid", "after-cancel", {})
    drain(parts)
    assert _run(parts, run_id).status == RunStatus.CANCELLED
    assert _types(parts, run_id).count("signal_received") == 0
    assert store.waiters("t1", "paid", after=None, limit=10)[0] == []  # its waiter is gone


def test_a_signal_reaches_every_waiting_run_a_page_at_a_time(parts: Parts) -> None:
    runs = [_submit(parts, _definition(_wait(signals=[{"name": "all"}]))) for _ in range(60)]
    parts.signal_service.send(CALLER, "all", "broadcast", {})
    drained = drain(parts)
    assert drained.actions.count("signal_delivered") == 3  # 25 waiting runs per message
    assert {_run(parts, run_id).status for run_id in runs} == {RunStatus.SUCCEEDED}


def test_a_tenants_signal_flood_is_refused_and_costs_no_other_tenant(clock: FakeClock) -> None:
    parts = make_fake(clock, signal_quota_per_min=5)
    for n in range(5):
        parts.signal_service.send(CALLER, "flood", f"s{n}", {})
    with pytest.raises(QuotaExceeded) as refused:
        parts.signal_service.send(CALLER, "flood", "s5", {})
    assert refused.value.headers is not None
    assert "Retry-After" in refused.value.headers
    assert parts.signal_service.send(OTHER_TENANT, "flood", "s5", {}).new
    clock.advance(60)
    assert parts.signal_service.send(CALLER, "flood", "s6", {}).new


@pytest.mark.parametrize(
    ("name", "signal_id", "data", "field"),
    [
        ("bad name", "x", {}, "name"),
        ("ok", "../x", {}, "id"),
        ("ok", "x" * 129, {}, "id"),
        ("ok", "x", {"blob": "y" * 20_000}, "data"),
    ],
)
def test_hostile_signals_are_refused_naming_the_field(
    parts: Parts, name: str, signal_id: str, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(DomainError) as refused:
        parts.signal_service.send(CALLER, name, signal_id, data)
    assert refused.value.details[0]["field"] == field


def test_a_delivery_delivered_twice_is_taken_once(parts: Parts) -> None:
    run_id = _submit(parts, _definition(_wait(signals=[{"name": "a"}, {"name": "b"}], mode="all")))
    parts.signal_service.send(CALLER, "a", "once", {})
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    [delivery] = [q.message for q in queue.messages if isinstance(q.message, DeliverSignal)]
    queue.send(delivery)  # SQS delivers it again
    parts.signal_waits.deliver_page(delivery)  # and a third time, late
    drain(parts)
    assert _types(parts, run_id).count("signal_received") == 1
    assert _run(parts, run_id).status == RunStatus.RUNNING  # still waiting for `b`


def test_a_signal_recorded_short_of_all_keeps_the_waits_timeout(parts: Parts, clock: FakeClock) -> None:
    wait = {
        **_wait(signals=[{"name": "a"}, {"name": "b"}], mode="all", timeout_seconds=120),
        "on_timeout": "late",
    }
    late = {"id": "late", "type": "log", "config": {"message": "late"}, "on_success": "_end"}
    run_id = _submit(parts, _definition(wait, late))
    clock.advance(10)
    parts.signal_service.send(CALLER, "a", "a-1", {})
    drain(parts)
    clock.advance(111)  # past the timeout: the kick the recording commit sent for it wakes the run
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.sweeps == 0
    assert _wait_output(parts, run)["error"]["code"] == "timeout"


def test_a_look_back_finds_its_signal_among_many_of_the_same_name(parts: Parts, clock: FakeClock) -> None:
    for n in range(60):
        parts.signal_service.send(CALLER, "paid", f"other-{n}", {"order": 1000 + n})
    parts.signal_service.send(CALLER, "paid", "mine", {"order": 7})
    drain(parts)
    clock.advance(5)
    wait = _wait(signals=[{"name": "paid", "match": {"order": 7}}], lookback_seconds=60)
    run = _run(parts, _submit(parts, _definition(wait)))
    assert run.status == RunStatus.SUCCEEDED
    assert _wait_output(parts, run)["signals"]["paid"]["id"] == "mine"


def test_a_delivery_before_the_wait_is_committed_keeps_the_runs_waiter(parts: Parts) -> None:
    run_id = parts.run_service.submit(CALLER, _definition(_wait(signals=[{"name": "paid"}])), {}).run_id
    # The wait registers its waiter, then commits; a delivery reads the run in between.
    parts.signals.add_waiter("t1", "paid", run_id, expires_at=2_000_000_000)
    parts.signal_service.send(CALLER, "paid", "in-the-gap", {"order": 8})
    queue = unwrapped(parts.queue)
    assert isinstance(queue, FakeQueue)
    [delivery] = [q.message for q in queue.messages if isinstance(q.message, DeliverSignal)]
    assert isinstance(delivery, DeliverSignal)
    parts.signal_waits.deliver_page(delivery)
    assert parts.signals.waiters("t1", "paid", after=None, limit=10)[0] == [run_id]


def test_a_wait_in_a_loop_takes_a_signal_once(parts: Parts, clock: FakeClock) -> None:
    steps = [
        {
            **_wait(signals=[{"name": "batch"}], lookback_seconds=600),
            "on_success": "work",
            "on_timeout": "_end",
        },
        {"id": "work", "type": "log", "config": {"message": "work"}, "on_success": "wait"},
    ]
    definition = WorkflowDefinition.model_validate({"name": "loop", "steps": steps})
    parts.signal_service.send(CALLER, "batch", "first", {})
    drain(parts)
    run_id = _submit(parts, definition)
    run = _run(parts, run_id)
    assert run.status == RunStatus.RUNNING
    assert run.current_step_id == "wait"  # the second pass waits for a new signal
    assert _types(parts, run_id).count("signal_received") == 1
    clock.advance(1)
    parts.signal_service.send(CALLER, "batch", "second", {})
    drain(parts)
    assert _types(parts, run_id).count("signal_received") == 2
    assert _run(parts, run_id).current_step_id == "wait"


def test_a_paused_run_does_not_take_a_signal_sent_after_its_timeout(parts: Parts, clock: FakeClock) -> None:
    wait = {**_wait(signals=[{"name": "paid"}], timeout_seconds=60), "on_timeout": "late"}
    late = {"id": "late", "type": "log", "config": {"message": "late"}, "on_success": "_end"}
    run_id = _submit(parts, _definition(wait, late))
    parts.control.act("t1", run_id, "pause", "ops")
    clock.advance(3600)
    assert parts.signal_service.send(CALLER, "paid", "too-late", {}, run_id=run_id).delivery == "ignored"
    parts.control.act("t1", run_id, "resume", "ops")
    drain(parts)
    run = _run(parts, run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert _wait_output(parts, run)["error"]["code"] == "timeout"
