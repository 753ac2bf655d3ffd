"""A tenant's schedule cap holds under concurrency: creates racing for the last places never
leave the tenant with more schedules than the cap, on the in-memory fakes and on DynamoDB
(moto). A deleted schedule, and a create that fails half-way, give their place back."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from devstack.scheduler import ensure_scheduling
from tests.conftest import AtomicRequests, FakeClock, log_definition, make_fake, settings_from
from tests.faults import Faulty
from workflows.adapters.schedules import counter_key
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.errors import DependencyUnavailable, LimitExceeded
from workflows.roots.parts import Parts

ADA = Principal(tenant_id="t1", user_id="ada", permissions=ALL_PERMISSIONS)


def _workflow(parts: Parts) -> str:
    head, _ = parts.definition_service.create(ADA, WorkflowDefinition.model_validate(log_definition("hi")))
    return head.workflow_id


def _race(parts: Parts, workflow_id: str, callers: int) -> list[str]:
    """`callers` creates released at once; each answers `created` or `refused`."""
    start = threading.Barrier(callers)

    def create(_: int) -> str:
        start.wait()
        try:
            parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
        except LimitExceeded:
            return "refused"
        return "created"

    # Threads switch as often as the interpreter allows, so that a window between a check and
    # the write it guards is hit, as concurrent requests on separate functions hit it.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(callers) as pool:
            return list(pool.map(create, range(callers)))
    finally:
        sys.setswitchinterval(interval)


def _stored(parts: Parts) -> int:
    schedules, _ = parts.schedules.list("t1", limit=1000, start=None)
    return len(schedules)


# ---- on the fakes ------------------------------------------------------------------------


def test_concurrent_creates_on_the_fakes_never_exceed_the_cap(clock: FakeClock) -> None:
    parts = make_fake(clock, max_schedules_per_tenant=10)
    results = _race(parts, _workflow(parts), 60)
    assert (results.count("created"), results.count("refused")) == (10, 50)
    assert _stored(parts) == 10


def test_a_deleted_schedule_gives_its_place_back(clock: FakeClock) -> None:
    parts = make_fake(clock, max_schedules_per_tenant=1)
    workflow_id = _workflow(parts)
    first = parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    with pytest.raises(LimitExceeded):
        parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    parts.schedule_service.delete(ADA, first.schedule_id)
    parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    assert _stored(parts) == 1


def test_a_create_eventbridge_refuses_gives_its_place_back(clock: FakeClock) -> None:
    parts = make_fake(clock, max_schedules_per_tenant=1)
    workflow_id = _workflow(parts)
    # EventBridge Scheduler refuses every change until it is back
    eventbridge = Faulty(parts.scheduler).fail(
        "put", lambda: DependencyUnavailable("EventBridge Scheduler is unavailable"), times=None
    )
    parts.give(scheduler=eventbridge)
    for _ in range(3):
        with pytest.raises(DependencyUnavailable):
            parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    eventbridge.heal()
    parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    assert _stored(parts) == 1


# ---- on DynamoDB (moto) -----------------------------------------------------------------


@pytest.fixture
def scheduling(aws_env: dict[str, str]) -> dict[str, str]:
    return ensure_scheduling(
        boto3.client("scheduler"),
        boto3.client("iam"),
        boto3.client("sqs"),
        stack="workflows-test",
        queue_url=aws_env["WORKFLOWS_DISPATCH_QUEUE_URL"],
    )


def _on_moto(env: dict[str, str], clock: FakeClock, **overrides: Any) -> Parts:
    return Parts(
        settings_from(env, **overrides),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
        scheduler=AtomicRequests(boto3.client("scheduler")),
    )


@pytest.fixture
def near_now() -> FakeClock:
    # EventBridge (and moto) refuse a StartDate more than 5 minutes old.
    return FakeClock(datetime.now(UTC).replace(second=0, microsecond=0))


def test_concurrent_creates_on_dynamodb_never_exceed_the_cap(
    aws_env: dict[str, str], scheduling: dict[str, str], near_now: FakeClock
) -> None:
    parts = _on_moto({**aws_env, **scheduling}, near_now, max_schedules_per_tenant=5)
    results = _race(parts, _workflow(parts), 20)
    assert (results.count("created"), results.count("refused")) == (5, 15)
    assert _stored(parts) == 5


def test_on_dynamodb_a_delete_and_a_failed_create_give_their_places_back(
    aws_env: dict[str, str], scheduling: dict[str, str], near_now: FakeClock
) -> None:
    # Without the scheduling settings every EventBridge write fails, after the item was written
    unscheduled = _on_moto(aws_env, near_now, max_schedules_per_tenant=1)
    workflow_id = _workflow(unscheduled)
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            unscheduled.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    parts = _on_moto({**aws_env, **scheduling}, near_now, max_schedules_per_tenant=1)
    first = parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    with pytest.raises(LimitExceeded):
        parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    parts.schedule_service.delete(ADA, first.schedule_id)
    parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    assert _stored(parts) == 1


def test_on_dynamodb_schedules_made_before_the_counter_count_towards_the_cap(
    aws_env: dict[str, str], scheduling: dict[str, str], near_now: FakeClock
) -> None:
    parts = _on_moto({**aws_env, **scheduling}, near_now, max_schedules_per_tenant=3)
    workflow_id = _workflow(parts)
    made = [
        parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
        for _ in range(2)
    ]

    def forget_the_counter() -> None:
        # As for a tenant whose schedules were stored before the service kept a counter
        parts.dynamodb.delete_item(TableName=parts.settings.schedules_table, Key=counter_key("t1"))

    forget_the_counter()
    parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    with pytest.raises(LimitExceeded):
        parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    forget_the_counter()
    parts.schedule_service.delete(ADA, made[0].schedule_id)
    parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    with pytest.raises(LimitExceeded):
        parts.schedule_service.create(ADA, workflow_id=workflow_id, expression="rate(1 hour)")
    assert _stored(parts) == 3
