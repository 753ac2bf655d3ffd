"""Step outputs past the run item's inline limit are kept in items of their own (docs/storage.md,
"Step outputs"): templates, the API and the completion webhook see them whole; the run item
keeps a reference, and remembers only the most recent steps. On in-memory fakes."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import LOCAL_WEBHOOKS, FakeClock, api_client, drain, make_fake
from tests.faults import Faulty, unwrapped
from tests.receivers import Receiver
from workflows.domain.outputs import INLINE_OUTPUT_BYTES, KEPT_OUTPUT_BYTES, KEPT_STEP_OUTPUTS, encode, is_ref
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
BIG = "x" * 4000  # one log step's output, well past the inline limit


def _run(client: TestClient, parts: Parts, definition: dict[str, Any]) -> str:
    response = client.post(f"{P}/runs", json={"definition": definition})
    assert response.status_code == 202, response.text
    drain(parts)
    run_id: str = response.json()["run_id"]
    return run_id


def test_a_big_output_is_stored_apart_and_seen_whole_everywhere(clock: FakeClock, receiver: Receiver) -> None:
    parts = make_fake(clock, **LOCAL_WEBHOOKS)
    definition = {
        "name": "big",
        "on_completion_webhook": receiver.url("/done"),
        "steps": [
            {"id": "big", "type": "log", "config": {"message": BIG}},
            {
                "id": "uses",
                "type": "log",
                "config": {"message": "{{ steps.big.output.message | length }} {{ last.message[:3] }}"},
            },
            {"id": "again", "type": "log", "config": {"message": "{{ steps.big.output.message }}"}},
        ],
    }
    with api_client(parts) as client:
        run_id = _run(client, parts, definition)
        run = parts.runs.get("default", run_id)
        assert run.status.value == "succeeded"
        # The run item holds references, not the 4 KB values.
        assert is_ref(run.step_outputs["big"])
        assert is_ref(run.outputs)
        assert len(json.dumps(run.model_dump(mode="json"))) < 2 * INLINE_OUTPUT_BYTES + 1500
        assert run.step_outputs["uses"] == {"message": "4000 xxx", "level": "info"}
        # The API shows the outputs whole.
        shown = client.get(f"{P}/runs/{run_id}").json()
        assert shown["outputs"] == {"message": BIG, "level": "info"}
        events = client.get(f"{P}/runs/{run_id}/events").json()["events"]
        outputs = {
            e["step_id"]: e["payload"]["output"] for e in events if e["event_type"] == "step_completed"
        }
        assert outputs["big"] == {"message": BIG, "level": "info"}
        assert outputs["again"] == {"message": BIG, "level": "info"}
        completed = [e for e in events if e["event_type"] == "run_completed"]
        assert completed[0]["payload"]["outputs"]["message"] == BIG
        listed = client.get(f"{P}/runs").json()["runs"]
        assert listed[0]["outputs"]["message"] == BIG
    [done] = [json.loads(r.body) for r in receiver.requests if r.path == "/done"]
    assert done["outputs"]["message"] == BIG


def test_only_the_most_recent_steps_are_remembered_and_older_ones_are_found(clock: FakeClock) -> None:
    parts = make_fake(clock, max_steps=100)
    count = KEPT_STEP_OUTPUTS + 8
    steps: list[dict[str, Any]] = [{"id": "first", "type": "log", "config": {"message": BIG}}]
    steps += [{"id": f"s{i}", "type": "log", "config": {"message": f"step {i}"}} for i in range(count)]
    steps.append({"id": "last", "type": "log", "config": {"message": "{{ steps.first.output.message[:4] }}"}})
    definition = {"name": "long", "steps": steps}
    with api_client(parts) as client:
        run_id = _run(client, parts, definition)
    run = parts.runs.get("default", run_id)
    assert run.status.value == "succeeded", run.error
    assert 1 < len(run.step_outputs) < KEPT_STEP_OUTPUTS  # the bytes bind before the count
    assert len(encode(run.step_outputs)) <= KEPT_OUTPUT_BYTES
    assert list(run.step_outputs)[-1] == "last"
    assert "first" not in run.step_outputs
    assert run.step_outputs["last"]["message"] == "xxxx"  # found in the run's events


def test_the_remembered_outputs_stay_within_their_bytes_however_many_steps_and_each_is_still_found(
    clock: FakeClock,
) -> None:
    parts = make_fake(clock, max_steps=200)
    prose = "order {i} for customer {i}: packed, labelled and handed to the carrier at dock {i}"
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "type": "log", "config": {"message": prose.format(i=i)}} for i in range(120)
    ]
    # Each later step names one long forgotten (found in the events) and a recent one.
    recent = "{{ steps.s119.output.message[:9] }}"
    steps += [
        {
            "id": f"echo{i}",
            "type": "log",
            "config": {"message": f"{{{{ steps.s{i}.output.message }}}} / " + recent},
        }
        for i in (0, 7, 60)
    ]
    with api_client(parts) as client:
        run_id = _run(client, parts, {"name": "long-prose", "steps": steps})
    run = parts.runs.get("default", run_id)
    assert run.status.value == "succeeded", run.error
    assert len(encode(run.step_outputs)) <= KEPT_OUTPUT_BYTES
    assert run.step_outputs["echo60"]["message"] == f"{prose.format(i=60)} / order 119"
    events = parts.runs.list_events("default", run_id, since=0, limit=1000).events
    echoed = {
        e.step_id: e.payload["output"]["message"]
        for e in events
        if e.event_type == "step_completed" and (e.step_id or "").startswith("echo")
    }
    assert echoed["echo0"] == f"{prose.format(i=0)} / order 119"
    assert echoed["echo7"] == f"{prose.format(i=7)} / order 119"


def test_a_routed_failure_is_the_steps_output_in_its_event(clock: FakeClock) -> None:
    parts = make_fake(clock)
    definition = {
        "name": "routed",
        "steps": [
            {"id": "bad", "type": "log", "config": {"message": "{{ nope.missing }}"}, "on_failure": "after"},
            {"id": "after", "type": "log", "config": {"message": "{{ steps.bad.output.error.code }}"}},
        ],
    }
    with api_client(parts) as client:
        run_id = _run(client, parts, definition)
        events = client.get(f"{P}/runs/{run_id}/events").json()["events"]
    failed = [e for e in events if e["event_type"] == "step_failed"]
    assert failed[0]["payload"]["output"]["error"]["code"] == failed[0]["payload"]["error"]["code"]
    assert (
        parts.runs.get("default", run_id).step_outputs["after"]["message"]
        == failed[0]["payload"]["error"]["code"]
    )


def test_a_big_output_is_read_back_only_by_a_step_that_names_it(clock: FakeClock) -> None:
    """`last` kept apart is read for a step whose templates name `last`, not for every step
    after it (a read per step, whether anything uses it or not, would cost a run that once
    had a big output a read on every later step)."""
    parts = make_fake(clock)
    outputs = unwrapped(parts.run_outputs)
    reads: list[int] = []
    read_outputs = outputs.read_outputs

    def counted(tenant_id: str, run_id: str, refs: Any) -> list[object]:
        reads.append(len(refs))
        return read_outputs(tenant_id, run_id, refs)

    outputs.read_outputs = counted  # type: ignore[method-assign]
    definition = {
        "name": "big-then-small",
        "steps": [
            {"id": "big", "type": "log", "config": {"message": BIG}},
            {"id": "quiet", "type": "log", "config": {"message": "no need of it"}},
            {"id": "reads", "type": "log", "config": {"message": "{{ last.message }}"}},
            {"id": "big2", "type": "log", "config": {"message": BIG}},
            {"id": "names", "type": "log", "config": {"message": "{{ last.message | length }}"}},
        ],
    }
    with api_client(parts) as client:
        run_id = _run(client, parts, definition)
    run = parts.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert run.step_outputs["reads"] == {"message": "no need of it", "level": "info"}
    assert run.step_outputs["names"] == {"message": "4000", "level": "info"}
    assert reads == [1]  # `names` read big2's output; `quiet` read nothing


# Ends the run before its last step, which therefore never runs.
STOP = {
    "id": "stop",
    "type": "branch",
    "config": {"condition": "1 == 1", "true_next": "_end", "false_next": "never"},
}


def test_a_loop_that_drops_nothing_never_reads_its_history_for_a_step_that_never_ran(
    clock: FakeClock,
) -> None:
    parts = make_fake(clock)
    outputs = Faulty(parts.run_outputs)
    parts = parts.give(run_outputs=outputs)
    count = "{{ ((steps.work.output.message.split(';')[0] | int) + 1) if 'work' in steps else 1 }}"
    probe = "{{ 'seen' if 'never' in steps else 'absent' }}"
    steps: list[dict[str, Any]] = [
        {"id": "work", "type": "log", "config": {"message": f"{count};{probe}"}},
        {
            "id": "again",
            "type": "branch",
            "config": {
                "condition": "(steps.work.output.message.split(';')[0] | int) < 4",
                "true_next": "work",
                "false_next": "_end",
            },
        },
        {"id": "never", "type": "log", "config": {"message": "skipped"}},
    ]
    with api_client(parts) as client:
        run_id = _run(client, parts, {"name": "probing-loop", "steps": steps})
    run = parts.runs.get("default", run_id)
    assert run.status.value == "succeeded", run.error
    assert run.steps_executed == 8  # four rounds of two steps
    assert not run.outputs_dropped
    assert run.step_outputs["work"]["message"] == "4;absent"
    assert outputs.calls["find_step_output"] == 0  # nothing dropped: nothing to look for


def test_a_run_that_dropped_outputs_looks_a_missing_step_up_once_per_step_not_per_mention(
    clock: FakeClock,
) -> None:
    parts = make_fake(clock)
    outputs = Faulty(parts.run_outputs)
    parts = parts.give(run_outputs=outputs)
    prose = "x" * 120
    probe = "{{ 'a' if 'never' in steps else 'b' }}{{ steps.get('never') }}{{ 'never' in steps }}"
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "type": "log", "config": {"message": prose}} for i in range(4)
    ]
    steps.append({"id": "probe", "type": "log", "config": {"message": probe}})
    steps += [STOP, {"id": "never", "type": "log", "config": {"message": "skipped"}}]
    with api_client(parts) as client:
        run_id = _run(client, parts, {"name": "probes-dropped", "steps": steps})
    run = parts.runs.get("default", run_id)
    assert run.status.value == "succeeded", run.error
    assert run.outputs_dropped
    assert run.step_outputs["probe"]["message"] == "bnullfalse"
    assert outputs.calls["find_step_output"] == 1  # three mentions, one look in the history
