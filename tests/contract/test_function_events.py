"""Each function's real entry point, called with every events/*.json file (the same files
`sam local invoke -e` takes), a fake Lambda context, and the layer on sys.path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.functions import LambdaContext as FakeLambdaContext
from devstack.functions import load_function
from tests.fakes import FakeConnections
from workflows import settings
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.roots import api, dispatch_dlq, dispatcher, dlq_worker, follow, sweeper

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
KNOWN_RUN = "00000000-0000-4000-8000-000000000001"
# The key the sample API events carry (`make events` writes copies with a live stack's key).
SAMPLE_API_KEY = "local-dev-key"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


@pytest.fixture
def deployed_env(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment template.yaml gives the functions, pointing at moto."""
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORKFLOWS_API_KEY", SAMPLE_API_KEY)
    _fresh()
    yield aws_env
    _fresh()


def _fresh() -> None:
    """Each function builds its parts anew from the environment, as a cold start would."""
    settings.get_settings.cache_clear()
    for root in (api, dispatcher, dispatch_dlq, dlq_worker, sweeper, follow):
        root.parts.cache_clear()


def _store_known_run() -> None:
    definition = WorkflowDefinition.model_validate(
        {"name": "hello", "steps": [{"id": "greet", "type": "log", "config": {"message": "hi"}}]}
    )
    now = "2026-11-25T12:00:00.000Z"
    run = Run(
        run_id=KNOWN_RUN,
        tenant_id="default",
        owner_id="admin",
        definition_version=1,
        definition_name="hello",
        status=RunStatus.QUEUED,
        current_step_id="greet",
        created_at=now,
        updated_at=now,
    )
    api.parts().runs.create(run, definition)


def test_every_event_file_is_covered() -> None:
    covered = {
        "ApiFunction/health.json",
        "ApiFunction/submit_run.json",
        "ApiFunction/get_run.json",
        "ApiFunction/get_events.json",
        "DispatcherFunction/sqs.json",
        "DlqRetryFunction/schedule.json",
        "DispatchDlqFunction/sqs.json",
        "SweeperFunction/schedule.json",
        "FollowFunction/connect.json",
        "FollowFunction/message.json",
        "FollowFunction/stream.json",
        "FollowFunction/disconnect.json",
    }
    # Laid out by function (events/<FunctionLogicalId>/*.json), as SAM tooling looks for them;
    # events/local/ holds what `make events` writes for a running stack (not in git).
    laid_out = {str(p.relative_to(EVENTS)) for p in EVENTS.glob("*/*.json") if p.parts[-2] != "local"}
    assert laid_out == covered
    assert list(EVENTS.glob("*.json")) == []


def test_api_health(deployed_env: dict[str, str]) -> None:
    response = load_function("api").handler(event("ApiFunction/health.json"), FakeLambdaContext())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "ok"


def test_api_submit_run_queues_a_run(deployed_env: dict[str, str]) -> None:
    response = load_function("api").handler(event("ApiFunction/submit_run.json"), FakeLambdaContext())
    assert response["statusCode"] == 202, response["body"]
    body = json.loads(response["body"])
    assert body["status"] == "queued"
    sqs = api.parts().sqs
    messages = sqs.receive_message(QueueUrl=deployed_env["WORKFLOWS_DISPATCH_QUEUE_URL"]).get("Messages", [])
    assert [json.loads(m["Body"])["run_id"] for m in messages] == [body["run_id"]]


def test_dispatcher_then_api_reads(deployed_env: dict[str, str]) -> None:
    _store_known_run()
    result = load_function("dispatcher").handler(event("DispatcherFunction/sqs.json"), FakeLambdaContext())
    assert result == {"batchItemFailures": []}

    api = load_function("api")
    run = api.handler(event("ApiFunction/get_run.json"), FakeLambdaContext())
    assert run["statusCode"] == 200
    assert json.loads(run["body"])["status"] == "succeeded"
    events = api.handler(event("ApiFunction/get_events.json"), FakeLambdaContext())
    assert [e["event_type"] for e in json.loads(events["body"])["events"]] == [
        "run_started",
        "step_started",
        "step_completed",
        "run_completed",
    ]


def test_dispatcher_reports_a_malformed_record_as_failed(deployed_env: dict[str, str]) -> None:
    sqs_event = event("DispatcherFunction/sqs.json")
    sqs_event["Records"][0]["body"] = "not json"
    result = load_function("dispatcher").handler(sqs_event, FakeLambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": sqs_event["Records"][0]["messageId"]}]}


def test_api_get_unknown_run_is_a_json_404(deployed_env: dict[str, str]) -> None:
    response = load_function("api").handler(event("ApiFunction/get_run.json"), FakeLambdaContext())
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["error"]["code"] == "not_found"


def test_dlq_retry_makes_a_pass_over_the_due_rows(deployed_env: dict[str, str]) -> None:
    # 16 s left: room for exactly one pass before the 10 s request timeout + margin.
    context = FakeLambdaContext(function_name="DlqRetryFunction", timeout_ms=16_000)
    report = load_function("dlq_retry").handler(event("DlqRetryFunction/schedule.json"), context)
    assert report == {
        "passes": 1,
        "delivered": 0,
        "rescheduled": 0,
        "exhausted": 0,
        "skipped": 0,
        "failed": 0,
    }


def test_dlq_retry_does_nothing_when_disabled(
    deployed_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WEBHOOK_DLQ_ENABLED", "false")
    _fresh()
    report = load_function("dlq_retry").handler(event("DlqRetryFunction/schedule.json"), FakeLambdaContext())
    assert report["passes"] == 0


def test_dispatch_dead_letter_fails_its_run(deployed_env: dict[str, str]) -> None:
    _store_known_run()
    sqs_event = event("DispatchDlqFunction/sqs.json")
    result = load_function("dispatch_dlq").handler(sqs_event, FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    run = load_function("api").handler(event("ApiFunction/get_run.json"), FakeLambdaContext())
    body = json.loads(run["body"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "internal_error"
    assert sqs_event["Records"][0]["messageId"] in body["error"]["message"]


def test_sweeper_reports_its_sweep(deployed_env: dict[str, str]) -> None:
    _store_known_run()
    report = load_function("sweeper").handler(event("SweeperFunction/schedule.json"), FakeLambdaContext())
    # The stored run was last written days ago with no kick in flight: lost, so it is re-kicked.
    assert report == {"candidates": 1, "woken": 0, "rekicked": 1, "stalled": 0, "failed": 0}
    sqs = api.parts().sqs
    messages = sqs.receive_message(QueueUrl=deployed_env["WORKFLOWS_DISPATCH_QUEUE_URL"]).get("Messages", [])
    assert [json.loads(m["Body"])["run_id"] for m in messages] == [KNOWN_RUN]


def test_follow_connects_follows_pushes_and_disconnects(deployed_env: dict[str, str]) -> None:
    _store_known_run()
    handler = load_function("follow").handler
    posted = FakeConnections()
    follow.parts().give(connections=posted)  # no management API call leaves the process

    connected = handler(event("FollowFunction/connect.json"), FakeLambdaContext())
    assert connected == {"statusCode": 200}
    assert handler(event("FollowFunction/message.json"), FakeLambdaContext()) == {"statusCode": 200}
    api.parts().runs.append_events("default", KNOWN_RUN, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)])
    pushed = handler(event("FollowFunction/stream.json"), FakeLambdaContext())
    assert pushed == {"batchItemFailures": []}
    assert posted.seqs("Fa1bCcDEoAMCJGw=") == [1]
    assert handler(event("FollowFunction/disconnect.json"), FakeLambdaContext()) == {"statusCode": 200}
    assert follow.parts().followers.connection("Fa1bCcDEoAMCJGw=") is None
