"""Every run ends: whatever breaks while a message is processed, the run reaches `failed` with a
machine-readable code, its events written without a gap, its tenant slot released and its
completion webhook sent (docs/engine.md, "How runs end"). On in-memory fakes; the completion
webhook goes to a real receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from tests.conftest import LOCAL_WEBHOOKS, FakeClock, drain, make_fake
from tests.faults import Faulty, registry_with
from tests.receivers import Receiver
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import AdvanceMessage
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import Run, RunStatus
from workflows.domain.transitions import Commit
from workflows.errors import DomainError
from workflows.roots import dispatch_dlq, dispatcher
from workflows.roots.parts import Parts
from workflows.steps.base import StepContext, StepResult, TemplateField

T = "default"
CALLER = Principal(T, "admin", ALL_PERMISSIONS)


class ExplodeConfig(BaseModel):
    kind: Literal["bug", "recursion", "huge_output", "artifact", "ok"]


class ExplodeStep:
    """A step type that misbehaves on request, as a buggy step or template would."""

    name = "explode"
    description = "test step"
    config_model = ExplodeConfig
    example = {"kind": "ok"}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, ExplodeConfig)
        if config.kind == "bug":
            raise KeyError("a bug in the step")
        if config.kind == "recursion":
            raise RecursionError("maximum recursion depth exceeded")
        if config.kind == "huge_output":
            # Outputs of any size are kept apart from the run (to S3 when big); what the step
            # adds to its event beside the output is not, and cannot pass the item limit.
            huge = base64.b64encode(os.urandom(450_000)).decode()  # incompressible
            return StepResult(output={"ok": True}, event_fields={"usage": huge})
        if config.kind == "artifact":
            return StepResult(output={"text": "keep me"}, event_fields={"save_artifact": True})
        return StepResult(output={"ok": True})


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def _parts(clock: FakeClock, **settings: Any) -> Parts:
    """Fake parts with the `explode` step type, whose run and artifact stores can break."""
    parts = make_fake(clock, tenant_concurrency=1, **LOCAL_WEBHOOKS, **settings)
    return parts.give(
        registry=registry_with(ExplodeStep()), runs=Faulty(parts.runs), artifacts=Faulty(parts.artifacts)
    )


def _faulty(part: object) -> Faulty:
    assert isinstance(part, Faulty)
    return part


def _submit(parts: Parts, steps: list[dict[str, Any]], receiver: Receiver | None = None) -> Run:
    body: dict[str, Any] = {"name": "faulty", "steps": steps}
    if receiver is not None:
        body["on_completion_webhook"] = receiver.url("/done")
    return parts.run_service.submit(CALLER, WorkflowDefinition.model_validate(body), {})


def _events(parts: Parts, run_id: str) -> list[Any]:
    events = parts.runs.list_events(T, run_id, since=0, limit=1000).events
    assert [e.event_seq for e in events] == list(range(1, len(events) + 1))  # gap-free
    return events


def _assert_ended(parts: Parts, run_id: str, code: str, receiver: Receiver | None = None) -> Run:
    run = parts.runs.get(T, run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["code"] == code
    # The run's own events end with its failure; its completion webhook's delivery may follow.
    types = [e.event_type for e in _events(parts, run_id) if e.event_type != "webhook_delivery"]
    assert types[-1] == "run_failed"
    assert types.count("run_failed") == 1
    # The tenant's only slot is free again: another run of the tenant runs to the end.
    other = _submit(parts, [{"id": "a", "type": "log", "config": {"message": "after"}}])
    drain(parts)
    assert parts.runs.get(T, other.run_id).status == RunStatus.SUCCEEDED
    if receiver is not None:
        done = [json.loads(r.body) for r in receiver.requests if r.path == "/done"]
        assert [(d["run_id"], d["status"]) for d in done] == [(run_id, "failed")]
    return run


@pytest.mark.parametrize("kind", ["bug", "recursion"])
def test_a_step_that_raises_fails_with_internal_error_and_a_correlation_id(
    clock: FakeClock, receiver: Receiver, kind: str
) -> None:
    parts = _parts(clock)
    run = _submit(parts, [{"id": "boom", "type": "explode", "config": {"kind": kind}}], receiver)
    message = AdvanceMessage(tenant_id=T, run_id=run.run_id, version=run.version)
    parts.queue.receive()  # the submission's own kick, delivered here with its message id
    outcome = parts.engine.process(message, correlation_id="msg-1")
    assert outcome.run_status == "failed"
    ended = _assert_ended(parts, run.run_id, "internal_error", receiver)
    assert ended.error is not None
    assert ended.error["step_id"] == "boom"
    assert ended.error["correlation_id"] == "msg-1"
    assert "msg-1" in ended.error["message"]
    assert "a bug" not in ended.error["message"]


def test_an_internal_error_follows_the_steps_retry_policy_and_routing(clock: FakeClock) -> None:
    parts = _parts(clock)
    steps = [
        {
            "id": "boom",
            "type": "explode",
            "config": {"kind": "bug"},
            "retry": {"max_attempts": 2, "initial_interval_seconds": 1},
            "on_failure": "cleanup",
        },
        {"id": "cleanup", "type": "log", "config": {"message": "cleaned up"}},
    ]
    run = _submit(parts, steps)
    drain(parts)
    clock.advance(5)
    drain(parts)
    ended = parts.runs.get(T, run.run_id)
    assert ended.status == RunStatus.SUCCEEDED
    types = [e.event_type for e in _events(parts, run.run_id)]
    assert types.count("step_retrying") == 1
    assert types.count("step_failed") == 1


def test_an_output_too_large_to_store_fails_the_step_not_the_message(
    clock: FakeClock, receiver: Receiver
) -> None:
    parts = _parts(clock)
    run = _submit(parts, [{"id": "big", "type": "explode", "config": {"kind": "huge_output"}}], receiver)
    drain(parts)
    ended = _assert_ended(parts, run.run_id, "output_too_large", receiver)
    assert ended.error is not None
    assert ended.error["step_id"] == "big"


def test_an_output_too_large_can_be_routed_like_any_failure(clock: FakeClock) -> None:
    parts = _parts(clock)
    steps = [
        {"id": "big", "type": "explode", "config": {"kind": "huge_output"}, "on_failure": "fallback"},
        {"id": "fallback", "type": "log", "config": {"message": "{{ steps.big.output.error.code }}"}},
    ]
    run = _submit(parts, steps)
    drain(parts)
    ended = parts.runs.get(T, run.run_id)
    assert ended.status == RunStatus.SUCCEEDED, ended.error
    assert ended.step_outputs["fallback"]["message"] == "output_too_large"


class _Broken(DomainError):
    code = "service_unavailable"


def _fail_commits(parts: Parts) -> None:
    # Storage refuses every commit of the step's result (an item it will never accept); the
    # run's failure, which stores no output, goes through.
    def stores_a_result(commit: Commit) -> bool:
        return commit.run.step_outputs != commit.read.step_outputs

    _faulty(parts.runs).fail(
        "commit", lambda: _Broken("storage refuses this item"), times=None, when=stores_a_result
    )


def _fail_artifacts(parts: Parts) -> None:
    _faulty(parts.artifacts).fail("save", lambda: _Broken("the bucket is unavailable"), times=None)


def _fail_definition_reads(parts: Parts) -> None:
    _faulty(parts.runs).fail(
        "get_with_definition", lambda: ValueError("the pinned definition does not validate"), times=None
    )


CAUSES = {
    # Each keeps failing on every delivery of the message; none is a step's own failure.
    "commit refused": (_fail_commits, [{"id": "a", "type": "log", "config": {"message": "x"}}]),
    "artifact store down": (
        _fail_artifacts,
        [{"id": "a", "type": "explode", "config": {"kind": "artifact"}}],
    ),
    "definition unreadable": (
        _fail_definition_reads,
        [{"id": "a", "type": "log", "config": {"message": "x"}}],
    ),
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_a_message_that_fails_on_every_delivery_fails_its_run_on_the_last(
    clock: FakeClock, receiver: Receiver, cause: str
) -> None:
    parts = _parts(clock, dispatch_max_receive_count=3)
    breaks, steps = CAUSES[cause]
    run = _submit(parts, steps, receiver)
    [message] = parts.queue.receive()
    breaks(parts)
    for receive in (1, 2):
        with pytest.raises((_Broken, ValueError)):  # whatever broke: SQS delivers it again
            parts.engine.process(message, receive_count=receive, correlation_id="msg-7")
        clock.advance(10)
    outcome = parts.engine.process(message, receive_count=3, correlation_id="msg-7")
    assert outcome.action == "failed"
    ended = parts.runs.get(T, run.run_id)
    assert ended.error is not None
    assert ended.error["code"] == "internal_error"
    assert ended.error["correlation_id"] == "msg-7"
    if cause == "definition unreadable":
        # No definition, so no completion webhook to name: the run still ends and frees its slot.
        assert ended.status == RunStatus.FAILED
        assert not [r for r in receiver.requests if r.path == "/done"]
        return
    _faulty(parts.runs).heal()  # storage well again, for the next run
    _assert_ended(parts, run.run_id, "internal_error", receiver)


def test_a_kick_for_a_run_that_already_ended_changes_nothing_on_its_last_delivery(clock: FakeClock) -> None:
    parts = _parts(clock)
    run = _submit(parts, [{"id": "a", "type": "log", "config": {"message": "x"}}])
    drain(parts)
    done = parts.runs.get(T, run.run_id)
    assert (
        parts.engine.give_up(T, run.run_id, {"code": "internal_error", "message": "late"}).action == "ignored"
    )
    assert parts.runs.get(T, run.run_id).version == done.version


def _sqs_event(body: str, *, message_id: str = "m-1", receive_count: int = 1) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": "r",
                "body": body,
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dispatch",
                "awsRegion": "us-east-1",
            }
        ]
    }


class _Context:
    function_name = "DispatchDlqFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:DispatchDlqFunction"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def test_the_dead_letter_consumer_fails_the_run_of_each_message(
    clock: FakeClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(clock)
    monkeypatch.setattr(dispatch_dlq, "parts", lambda: parts)
    run = _submit(parts, [{"id": "a", "type": "log", "config": {"message": "x"}}], receiver)
    [message] = parts.queue.receive()  # dead-lettered instead of processed
    bodies = [message.to_body(), "not json", json.dumps({"kind": "nonsense"})]
    for index, body in enumerate(bodies):
        response = dispatch_dlq.handle(_sqs_event(body, message_id=f"dead-{index}"), _Context())
        assert response == {"batchItemFailures": []}  # nothing left to retry: each was handled
    ended = _assert_ended(parts, run.run_id, "internal_error", receiver)
    assert ended.error is not None
    assert ended.error["correlation_id"] == "dead-0"


def test_the_dispatcher_passes_the_receive_count_so_the_last_delivery_fails_the_run(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(clock, dispatch_max_receive_count=2)
    monkeypatch.setattr(dispatcher, "parts", lambda: parts)
    run = _submit(parts, [{"id": "a", "type": "log", "config": {"message": "x"}}])
    [message] = parts.queue.receive()
    _fail_artifacts(parts)
    _fail_definition_reads(parts)
    first = dispatcher.handle(_sqs_event(message.to_body(), receive_count=1), _Context())
    assert first == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert parts.runs.get(T, run.run_id).status == RunStatus.QUEUED
    last = dispatcher.handle(_sqs_event(message.to_body(), receive_count=2), _Context())
    assert last == {"batchItemFailures": []}
    ended = parts.runs.get(T, run.run_id)
    assert ended.status == RunStatus.FAILED
    assert ended.error is not None
    assert ended.error["correlation_id"] == "m-1"
