"""Schedules API on moto: validation, tenancy, and the EventBridge Scheduler schedule behind each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from devstack.scheduler import ensure_scheduling
from tests.conftest import API_KEY, AtomicRequests, FakeClock, log_definition, settings_from
from tests.faults import Faulty
from workflows.api import deps
from workflows.api.app import create_app
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
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
        # Delegating to the emulator's client; a test may make it refuse a call.
        scheduler=Faulty(boto3.client("scheduler")),
    )
    return c


def saved_workflow(client: TestClient, **extra: Any) -> str:
    response = client.post(BASE, json={**log_definition("hello {{ inputs.name }}"), **extra})
    assert response.status_code == 201, response.text
    return str(response.json()["workflow_id"])


def eventbridge(container: Parts, schedule_id: str) -> dict[str, Any]:
    response: dict[str, Any] = container.scheduler.client.get_schedule(
        Name=schedule_id, GroupName=container.settings.schedule_group
    )
    return response


def fields(response: Any) -> list[str]:
    return [d["field"] for d in response.json()["error"]["details"]]


def test_create_makes_an_eventbridge_schedule_that_sends_the_start_message_to_the_queue(
    client: TestClient, container: Parts, scheduling: dict[str, str]
) -> None:
    # Given a saved workflow
    workflow_id = saved_workflow(client)
    # When a nightly schedule is created for it
    response = client.post(
        f"{BASE}/schedules",
        json={
            "workflow_id": workflow_id,
            "expression": "cron(0 2 * * ? *)",
            "timezone": "Europe/Berlin",
            "inputs": {"name": "night"},
        },
    )
    # Then it answers 201 with the schedule
    assert response.status_code == 201, response.text
    view = response.json()
    assert response.headers["Location"] == view["links"]["self"]
    assert view["workflow_id"] == workflow_id
    assert view["enabled"] is True
    # 02:00 in Berlin: 01:00 UTC in winter, 00:00 UTC in summer
    assert view["next_fire_at"][10:] in ("T01:00:00.000Z", "T00:00:00.000Z")
    # And EventBridge Scheduler holds it: the dispatch queue as target, through the scheduler role
    stored = eventbridge(container, view["schedule_id"])
    assert stored["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert stored["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert stored["State"] == "ENABLED"
    assert stored["Target"]["Arn"] == scheduling["WORKFLOWS_DISPATCH_QUEUE_ARN"]
    assert stored["Target"]["RoleArn"] == scheduling["WORKFLOWS_SCHEDULER_ROLE_ARN"]
    assert json.loads(stored["Target"]["Input"]) == {
        "v": 1,
        "kind": "start_scheduled",
        "tenant_id": "default",
        "schedule_id": view["schedule_id"],
        "scheduled_time": "<aws.scheduler.scheduled-time>",
    }


def test_delete_removes_the_eventbridge_schedule(client: TestClient, container: Parts) -> None:
    workflow_id = saved_workflow(client)
    schedule_id = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(5 minutes)"}
    ).json()["schedule_id"]

    assert client.delete(f"{BASE}/schedules/{schedule_id}").status_code == 204

    with pytest.raises(ClientError) as caught:
        eventbridge(container, schedule_id)
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert client.get(f"{BASE}/schedules/{schedule_id}").status_code == 404
    assert client.delete(f"{BASE}/schedules/{schedule_id}").status_code == 404


def test_patch_disables_and_changes_the_eventbridge_schedule(client: TestClient, container: Parts) -> None:
    workflow_id = saved_workflow(client)
    schedule_id = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(5 minutes)"}
    ).json()["schedule_id"]

    response = client.patch(
        f"{BASE}/schedules/{schedule_id}",
        json={"enabled": False, "expression": "rate(1 hour)", "inputs": {"name": "x"}},
    )

    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is False
    assert response.json()["next_fire_at"] is None
    assert response.json()["inputs"] == {"name": "x"}
    stored = eventbridge(container, schedule_id)
    assert stored["State"] == "DISABLED"
    assert stored["ScheduleExpression"] == "rate(1 hour)"


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"expression": "every night"}, "expression", "expected cron("),
        ({"expression": "cron(0 2 * * * *)"}, "expression", "exactly one of day-of-month and day-of-week"),
        ({"expression": "rate(5 fortnights)"}, "expression", "rate unit"),
        ({"expression": "at(2001-01-01T00:00:00)"}, "expression", "is in the past"),
        ({"expression": "rate(5 minutes)", "timezone": "Mars/Olympus_Mons"}, "timezone", "IANA time zone"),
    ],
)
def test_invalid_expressions_and_time_zones_answer_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, says: str
) -> None:
    workflow_id = saved_workflow(client)

    response = client.post(f"{BASE}/schedules", json={"workflow_id": workflow_id, **body})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field
    assert says in error["details"][0]["message"]
    assert client.get(f"{BASE}/schedules").json()["schedules"] == []


def test_patch_with_an_invalid_expression_changes_nothing(client: TestClient, container: Parts) -> None:
    workflow_id = saved_workflow(client)
    schedule_id = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(5 minutes)"}
    ).json()["schedule_id"]

    response = client.patch(f"{BASE}/schedules/{schedule_id}", json={"expression": "rate(5 parsecs)"})

    assert response.status_code == 422
    assert fields(response) == ["expression"]
    assert client.get(f"{BASE}/schedules/{schedule_id}").json()["expression"] == "rate(5 minutes)"
    assert eventbridge(container, schedule_id)["ScheduleExpression"] == "rate(5 minutes)"


def test_inputs_the_workflow_refuses_answer_422(client: TestClient) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    workflow_id = saved_workflow(client, inputs_schema=schema)

    response = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(1 day)", "inputs": {}}
    )

    assert response.status_code == 422
    assert fields(response) == ["inputs.name"]


def test_another_tenants_workflow_answers_404(client: TestClient, container: Parts) -> None:
    # Given a workflow of another tenant
    definition = WorkflowDefinition.model_validate(log_definition("theirs"))
    container.definitions.create(
        "other-tenant", "someone", "6f1c9a6e-4e4a-4c8e-9d59-1f2c3b4a5d6e", definition
    )
    # When the caller schedules it
    response = client.post(
        f"{BASE}/schedules",
        json={"workflow_id": "6f1c9a6e-4e4a-4c8e-9d59-1f2c3b4a5d6e", "expression": "rate(5 minutes)"},
    )
    # Then it does not exist for them
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert fields(response) == ["workflow_id"]


def test_another_tenants_schedule_answers_404(client: TestClient, container: Parts) -> None:
    other = Principal(tenant_id="other-tenant", user_id="someone", permissions=ALL_PERMISSIONS)
    definition = WorkflowDefinition.model_validate(log_definition("theirs"))
    head = container.definitions.create(
        "other-tenant", "someone", "0b7e2f7c-52a4-4c67-9f0e-0d6c1d3e9a11", definition
    )
    theirs = container.schedule_service.create(other, workflow_id=head.workflow_id, expression="rate(1 hour)")
    path = f"{BASE}/schedules/{theirs.schedule_id}"

    assert client.get(path).status_code == 404
    assert client.patch(path, json={"enabled": False}).status_code == 404
    assert client.delete(path).status_code == 404
    assert client.get(f"{BASE}/schedules").json()["schedules"] == []
    assert eventbridge(container, theirs.schedule_id)["State"] == "ENABLED"


def test_a_deleted_workflow_cannot_be_scheduled(client: TestClient) -> None:
    workflow_id = saved_workflow(client)
    client.delete(f"{BASE}/{workflow_id}")

    response = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(1 day)"}
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "workflow_deleted"


def test_an_unknown_pinned_version_answers_404_naming_version(client: TestClient) -> None:
    workflow_id = saved_workflow(client)

    response = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(1 day)", "version": 7}
    )

    assert response.status_code == 404
    assert fields(response) == ["version"]


def test_when_eventbridge_refuses_nothing_is_stored(client: TestClient, container: Parts) -> None:
    workflow_id = saved_workflow(client)
    error = {"Error": {"Code": "ServiceQuotaExceededException", "Message": "too many"}}
    scheduler = container.scheduler_client
    assert isinstance(scheduler, Faulty)
    scheduler.fail("create_schedule", lambda: ClientError(error, "CreateSchedule"))

    response = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(1 day)"}
    )

    assert response.status_code == 503
    assert scheduler.faults["create_schedule"] == 1
    assert client.get(f"{BASE}/schedules").json()["schedules"] == []


def test_list_pages_through_the_callers_schedules(client: TestClient) -> None:
    workflow_id = saved_workflow(client)
    created = {
        client.post(
            f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(1 day)"}
        ).json()["schedule_id"]
        for _ in range(3)
    }

    first = client.get(f"{BASE}/schedules?limit=2").json()
    second = client.get(f"{BASE}/schedules?limit=2&cursor={first['next_cursor']}").json()

    assert len(first["schedules"]) == 2
    assert {s["schedule_id"] for s in first["schedules"] + second["schedules"]} == created
    assert second["next_cursor"] is None


def test_patch_needs_a_field_and_refuses_nulls(client: TestClient) -> None:
    workflow_id = saved_workflow(client)
    schedule_id = client.post(
        f"{BASE}/schedules", json={"workflow_id": workflow_id, "expression": "rate(1 day)"}
    ).json()["schedule_id"]

    assert fields(client.patch(f"{BASE}/schedules/{schedule_id}", json={})) == ["body"]
    assert fields(client.patch(f"{BASE}/schedules/{schedule_id}", json={"enabled": None})) == ["enabled"]


def test_a_tenant_has_at_most_the_configured_number_of_schedules(
    aws_env: dict[str, str], clock: FakeClock, scheduling: dict[str, str]
) -> None:
    # Given a limit of two schedules per tenant
    c = Parts(
        settings_from({**aws_env, **scheduling}, max_schedules_per_tenant=2),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
        scheduler=boto3.client("scheduler"),
    )
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: c
    with TestClient(app, raise_server_exceptions=False) as api:
        api.headers.update({"X-API-KEY": API_KEY})
        workflow_id = saved_workflow(api)
        body = {"workflow_id": workflow_id, "expression": "rate(1 hour)"}
        made = [api.post(f"{BASE}/schedules", json=body) for _ in range(2)]
        # When a third is created
        refused = api.post(f"{BASE}/schedules", json=body)
        # Then it is refused clearly, and deleting one makes room again
        assert [r.status_code for r in made] == [201, 201]
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "limit_exceeded"
        assert fields(refused) == ["schedules"]
        assert len(api.get(f"{BASE}/schedules").json()["schedules"]) == 2
        api.delete(f"{BASE}/schedules/{made[0].json()['schedule_id']}")
        assert api.post(f"{BASE}/schedules", json=body).status_code == 201
