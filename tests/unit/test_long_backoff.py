"""A retry's backoff longer than SQS's longest delay (15 minutes) is waited out in hops: the
step's next attempt runs when the backoff ends, not when the first hop comes back."""

from __future__ import annotations

from tests.conftest import FakeClock, drain, make_fake
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import RunStatus

CALLER = Principal(tenant_id="t1", user_id="ops", permissions=ALL_PERMISSIONS)


def test_a_one_hour_backoff_runs_the_next_attempt_after_an_hour(clock: FakeClock) -> None:
    parts = make_fake(clock)
    step = {
        "id": "flaky",
        "type": "log",
        "config": {"message": "{{ inputs.missing.field }}"},  # fails on every attempt
        "retry": {
            "max_attempts": 2,
            "initial_interval_seconds": 3600,
            "max_interval_seconds": 3600,
            "jitter": "none",
        },
    }
    definition = WorkflowDefinition.model_validate({"name": "backoff", "steps": [step]})
    run_id = parts.run_service.submit(CALLER, definition, {}).run_id
    drain(parts)
    assert parts.runs.get("t1", run_id).attempt == 2  # the first attempt failed; the second waits
    for _ in range(3):
        clock.advance(900)  # each hop comes back before the backoff ends
        assert set(drain(parts).actions) <= {"waiting"}
        assert parts.runs.get("t1", run_id).status == RunStatus.RUNNING
    clock.advance(900)
    drain(parts)
    ended = parts.runs.get("t1", run_id)
    assert ended.status == RunStatus.FAILED  # the second attempt ran, an hour later, and failed
    events = parts.runs.list_events("t1", run_id, limit=50).events
    assert [e.event_type for e in events].count("step_started") == 2
