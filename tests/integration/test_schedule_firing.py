"""Schedules firing, with a controlled clock: the local scheduler sends what EventBridge sends,
and the dispatcher starts exactly one run per fire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from fastapi.testclient import TestClient

from devstack.functions import LambdaContext
from devstack.scheduler import LocalScheduler, ensure_scheduling
from devstack.workers import sqs_event
from tests.conftest import AtomicRequests, FakeClock, log_definition, settings_from
from workflows.domain.messages import StartScheduledRun, parse_message
from workflows.roots import dispatcher as lambda_handler
from workflows.roots.parts import Parts

BASE = "/api/v1/workflows"


@pytest.fixture
def clock() -> FakeClock:
    # Near the real time: EventBridge (and moto) refuse a StartDate more than 5 minutes old.
    return FakeClock(datetime.now(UTC).replace(second=0, microsecond=0))


@pytest.fixture
def scheduling(aws_env: dict[str, str]) -> dict[str, str]:
    return ensure_scheduling(
        boto3.client("scheduler"),
        boto3.client("iam"),
        boto3.client("sqs"),
        stack="workflows-test",
        queue_url=aws_env["WORKFLOWS_DISPATCH_QUEUE_URL"],
    )


@pytest.fixture
def container(aws_env: dict[str, str], clock: FakeClock, scheduling: dict[str, str]) -> Parts:
    c = Parts(
        settings_from({**aws_env, **scheduling}),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
        s3=boto3.client("s3"),
        scheduler=boto3.client("scheduler"),
    )
    return c


@pytest.fixture
def local_scheduler(container: Parts, clock: FakeClock) -> LocalScheduler:
    return LocalScheduler(
        boto3.client("scheduler"), boto3.client("sqs"), group=container.settings.schedule_group, clock=clock
    )


def dispatch(container: Parts) -> list[str]:
    """Deliver every visible message as the dispatcher would; the results of schedule fires."""
    results: list[str] = []
    sqs, url = container.sqs, container.settings.dispatch_queue_url
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return results
        for message in messages:
            parsed = parse_message(message["Body"])
            if isinstance(parsed, StartScheduledRun):
                results.append(container.schedule_service.fire(parsed).result)
            else:
                container.engine.process(parsed)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def create(client: TestClient, expression: str, **extra: Any) -> dict[str, Any]:
    workflow = client.post(BASE, json=log_definition("tick")).json()
    response = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow["workflow_id"], "expression": expression, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def runs_of(client: TestClient, workflow_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.get(f"{BASE}/runs?workflow_id={workflow_id}").json()["runs"]
    return runs


def scheduled_times(bodies: list[str]) -> list[str]:
    return [json.loads(b)["scheduled_time"] for b in bodies]


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_rate_five_minutes_fires_every_five_minutes(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    # Given a rate(5 minutes) schedule created at T
    start = clock.now
    schedule = create(client, "rate(5 minutes)")
    assert schedule["next_fire_at"] == (start + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # When time passes: nothing before T+5, then one fire at each multiple of five minutes
    clock.advance(299)
    assert local_scheduler.tick() == []
    clock.advance(1)
    first = local_scheduler.tick()
    clock.advance(600)
    later = local_scheduler.tick()
    # Then the fires carry their scheduled times
    assert scheduled_times(first) == [stamp(start + timedelta(minutes=5))]
    assert scheduled_times(later) == [
        stamp(start + timedelta(minutes=10)),
        stamp(start + timedelta(minutes=15)),
    ]
    # And the dispatcher starts one run per fire, each recording the schedule and finishing
    assert dispatch(container) == ["started", "started", "started"]
    runs = runs_of(client, schedule["workflow_id"])
    assert len(runs) == 3
    assert {r["status"] for r in runs} == {"succeeded"}
    for run in runs:
        assert container.runs.get("default", run["run_id"]).owner_id == f"schedule:{schedule['schedule_id']}"
        assert client.get(f"{BASE}/runs/{run['run_id']}").json()["schedule_id"] == schedule["schedule_id"]
    view = client.get(f"{BASE}/schedules/{schedule['schedule_id']}").json()
    assert view["last_fire"]["result"] == "started"
    assert view["last_fire"]["scheduled_time"] == stamp(start + timedelta(minutes=15))
    assert view["last_fire"]["run_id"] in {r["run_id"] for r in runs}
    assert view["next_fire_at"] == (start + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_a_duplicate_fire_makes_one_run(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    # Given one fire, delivered twice (SQS and EventBridge deliver at least once)
    schedule = create(client, "rate(5 minutes)")
    clock.advance(300)
    [body] = local_scheduler.tick()
    container.sqs.send_message(QueueUrl=container.settings.dispatch_queue_url, MessageBody=body)
    # When the dispatcher processes both
    results = dispatch(container)
    # Then exactly one run exists
    assert sorted(results) == ["duplicate", "started"]
    assert len(runs_of(client, schedule["workflow_id"])) == 1


def test_disabling_stops_fires_and_enabling_does_not_catch_up(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    start = clock.now
    schedule = create(client, "rate(5 minutes)")
    path = f"{BASE}/schedules/{schedule['schedule_id']}"
    # Disabled, an hour passes without a fire
    assert client.patch(path, json={"enabled": False}).status_code == 200
    for _ in range(12):
        clock.advance(300)
        assert local_scheduler.tick() == []
    # Enabled again: the next fire is the next point of the five-minute grid, and no backlog
    assert client.patch(path, json={"enabled": True}).json()["next_fire_at"] == (
        start + timedelta(minutes=65)
    ).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert local_scheduler.tick() == []
    clock.advance(300)
    assert scheduled_times(local_scheduler.tick()) == [stamp(start + timedelta(minutes=65))]
    assert dispatch(container) == ["started"]


def test_a_fire_in_flight_when_the_schedule_is_disabled_starts_nothing(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    schedule = create(client, "rate(5 minutes)")
    clock.advance(300)
    local_scheduler.tick()
    client.patch(f"{BASE}/schedules/{schedule['schedule_id']}", json={"enabled": False})

    assert dispatch(container) == ["skipped"]

    last = client.get(f"{BASE}/schedules/{schedule['schedule_id']}").json()["last_fire"]
    assert last["result"] == "skipped"
    assert last["reason"] == "schedule_disabled"
    assert runs_of(client, schedule["workflow_id"]) == []


def test_an_at_schedule_fires_once(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    # Given at(T + 10 minutes) in New York time
    zone_time = (clock.now + timedelta(minutes=10)).astimezone(ZoneInfo("America/New_York"))
    expression = f"at({zone_time.strftime('%Y-%m-%dT%H:%M:%S')})"
    schedule = create(client, expression, timezone="America/New_York")
    assert schedule["next_fire_at"] == (clock.now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # When the clock passes it, and keeps going
    clock.advance(599)
    assert local_scheduler.tick() == []
    clock.advance(1)
    fired = local_scheduler.tick()
    assert dispatch(container) == ["started"]
    clock.advance(86400)
    assert local_scheduler.tick() == []
    # Then it fired once, started one run, and has no next fire
    assert len(fired) == 1
    assert len(runs_of(client, schedule["workflow_id"])) == 1
    assert client.get(f"{BASE}/schedules/{schedule['schedule_id']}").json()["next_fire_at"] is None


def test_a_deleted_workflows_schedule_starts_nothing_and_says_why(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    schedule = create(client, "rate(5 minutes)")
    client.delete(f"{BASE}/{schedule['workflow_id']}")
    clock.advance(300)
    local_scheduler.tick()

    assert dispatch(container) == ["skipped"]

    last = client.get(f"{BASE}/schedules/{schedule['schedule_id']}").json()["last_fire"]
    assert last["result"] == "skipped"
    assert last["reason"] == "workflow_deleted"
    assert "deleted" in last["message"]
    assert runs_of(client, schedule["workflow_id"]) == []


def test_a_fire_older_than_the_dedup_window_is_skipped(client: TestClient, container: Parts) -> None:
    schedule = create(client, "rate(1 day)")
    old = stamp(container.clock() - timedelta(days=2))
    message = StartScheduledRun(tenant_id="default", schedule_id=schedule["schedule_id"], scheduled_time=old)

    result = container.schedule_service.fire(message)

    assert (result.result, result.reason) == ("skipped", "too_late")
    assert runs_of(client, schedule["workflow_id"]) == []


def test_a_cron_schedule_fires_at_wall_clock_time_in_its_zone(
    client: TestClient, container: Parts, clock: FakeClock, local_scheduler: LocalScheduler
) -> None:
    schedule = create(client, "cron(0 2 * * ? *)", timezone="Asia/Tokyo")  # 17:00 UTC, no DST
    # To a minute past the next 17:00 UTC, whatever the hour the test starts at (a whole day on
    # would leave that fire too old to start when the test starts in the hour before 17:00).
    now = clock()
    fire = now.replace(hour=17, minute=0, second=0, microsecond=0)
    if fire <= now:
        fire += timedelta(days=1)
    clock.advance((fire - now).total_seconds() + 60)

    fired = scheduled_times(local_scheduler.tick())

    assert len(fired) == 1
    assert fired[0].endswith("T17:00:00Z")
    assert dispatch(container) == ["started"]
    assert len(runs_of(client, schedule["workflow_id"])) == 1


def test_the_dispatcher_function_starts_scheduled_runs(
    client: TestClient, container: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the message EventBridge Scheduler sends, in the SQS event Lambda receives
    schedule = create(client, "rate(5 minutes)")
    body = StartScheduledRun(
        tenant_id="default", schedule_id=schedule["schedule_id"], scheduled_time=stamp(container.clock())
    ).to_body()
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": body}
    monkeypatch.setattr(lambda_handler, "parts", lambda: container)
    # When the dispatcher's handler gets it
    response = lambda_handler.handle(
        sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:dispatch", "us-east-1"),
        LambdaContext(function_name="DispatcherFunction"),
    )
    # Then the run exists and the record succeeded
    assert response == {"batchItemFailures": []}
    assert len(runs_of(client, schedule["workflow_id"])) == 1


def test_fires_past_the_tenants_daily_budget_are_skipped_and_recorded(
    aws_env: dict[str, str], clock: FakeClock, scheduling: dict[str, str], local_scheduler: LocalScheduler
) -> None:
    # Given multi-user mode with a budget of two scheduled runs a day for the tenant
    c = Parts(
        settings_from({**aws_env, **scheduling}, auth_mode="multi_user", schedule_fires_per_tenant_per_day=2),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
        s3=boto3.client("s3"),
        scheduler=boto3.client("scheduler"),
    )
    admin, _ = c.api_keys.create("t1", "ada", ["admin"])
    from workflows.api import deps
    from workflows.api.app import create_app

    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    with TestClient(app, raise_server_exceptions=False) as api:
        api.headers.update({"X-API-KEY": admin})
        schedule = create(api, "rate(1 minute)")
        # When it fires three times
        for _ in range(3):
            clock.advance(60)
            local_scheduler.tick()
        results = dispatch(c)
        # Then two runs start and the third fire is skipped, with the reason on the schedule
        assert results == ["started", "started", "skipped"]
        assert len(runs_of(api, schedule["workflow_id"])) == 2
        last = api.get(f"{BASE}/schedules/{schedule['schedule_id']}").json()["last_fire"]
        assert last["result"] == "skipped"
        assert last["reason"] == "fire_budget_exhausted"
