"""Schedules of saved workflows: their items in SchedulesTable and their EventBridge schedules.

Item (SchedulesTable, see docs/storage.md):
    pk = "<tenant_id>#schedules", sk = "<schedule_id>"
    workflow_id, expression, timezone, inputs (JSON), version (pinned, optional), enabled,
    anchor_at, created_at, updated_at, created_by, revision (guards updates),
    last_fire (JSON) and last_fire_time (the scheduled time it describes).

Counter item: pk = "<tenant_id>#schedule-count", sk = "count", n = the tenant's schedules.
A create is one transaction: the counter's `ADD n :1` on the condition `n < limit`, and the
item's put; a delete is the item's delete and `ADD n :-1`. So the cap holds whatever runs
concurrently, and the counter is exactly the number of items. A tenant whose schedules were
made before the counter existed gets one the first time a create or delete needs it, from a
count of its partition (written only if absent, before any transaction can use it).

One partition per tenant: get is a GetItem, the listing a Query on that partition, and another
tenant's schedule id finds nothing. A fire's outcome only moves forward: it is recorded when its
scheduled time is later than the one already recorded, so duplicate or late messages leave it.

Each schedule is also an EventBridge Scheduler schedule named after its id, in the stack's
schedule group, whose target is the dispatch queue (through a role that may only send there)
with a `start_scheduled` message as its input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import cancellation_reasons, check_owner, dumps, from_item, loads, to_item
from workflows.adapters.paging import Page, check_position, query_page
from workflows.domain.paging import Position
from workflows.domain.schedules import Schedule
from workflows.errors import DependencyUnavailable, NotFound, StaleWrite

KEY_FIELDS = ("pk", "sk")
# EventBridge Scheduler fills this in with the fire's scheduled time (ISO 8601, UTC).
SCHEDULED_TIME_PLACEHOLDER = "<aws.scheduler.scheduled-time>"
_JSON_FIELDS = ("inputs", "last_fire")
# Fields a PATCH may change (besides the bookkeeping ones).
MUTABLE_FIELDS = ("expression", "timezone", "inputs", "version", "enabled", "anchor_at")


# A transaction cancelled by a concurrent one on the same counter is tried again this often
# (DynamoDB cancels rather than queues transactions on one item) before the caller is told.
TRANSACTION_ATTEMPTS = 5
# Counting a partition to start its counter: no tenant comes near this (the cap is at most 10,000).
_COUNT_ALL = 1_000_000


def schedules_pk(tenant_id: str) -> str:
    return f"{tenant_id}#schedules"


def counter_key(tenant_id: str) -> dict[str, Any]:
    # `#` cannot occur in a tenant id, so no tenant's schedules partition is named like this.
    return {"pk": {"S": f"{tenant_id}#schedule-count"}, "sk": {"S": "count"}}


class ScheduleRepository:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def create(self, schedule: Schedule, *, limit: int) -> bool:
        """Store a new schedule unless the tenant has `limit` already (False)."""
        count = {
            "Update": {
                "TableName": self._table,
                "Key": counter_key(schedule.tenant_id),
                "UpdateExpression": "ADD n :one",
                # False for a counter not yet there too: it is started below, then tried again.
                "ConditionExpression": "n < :limit",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        put = {
            "Put": {
                "TableName": self._table,
                "Item": self._item(schedule),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        for _ in range(TRANSACTION_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=[count, put])
                return True
            except ClientError as exc:
                counter, item = _refusals(exc, 2)
                if counter == "ConditionalCheckFailed":
                    if "Item" in cancellation_reasons(exc)[0]:
                        return False  # the counter is at the limit
                    self._start_counter(schedule.tenant_id)
                elif item == "ConditionalCheckFailed":
                    raise StaleWrite(f"schedule '{schedule.schedule_id}' already exists") from exc
        raise StaleWrite("the tenant's schedules changed meanwhile; try again")

    def get(self, tenant_id: str, schedule_id: str) -> Schedule:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key=self._key(tenant_id, schedule_id), ConsistentRead=True
            )
        if "Item" not in response:
            raise NotFound(f"schedule '{schedule_id}' not found")
        schedule = self._from(response["Item"])
        check_owner(tenant_id, schedule.tenant_id, "schedule")
        return schedule

    def count(self, tenant_id: str, at_most: int) -> int:
        """How many schedules the tenant has, counting no further than `at_most`."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": schedules_pk(tenant_id)}},
            "Select": "COUNT",
            "ConsistentRead": True,
        }
        total = 0
        while total < at_most:
            with aws_errors():
                response = self._client.query(**params, Limit=at_most - total)
            total += int(response.get("Count", 0))
            if "LastEvaluatedKey" not in response:
                break
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return total

    def list(
        self, tenant_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[Schedule], Position | None]:
        pk = schedules_pk(tenant_id)
        check_position(start, {"pk": pk}, KEY_FIELDS)
        params = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        page: Page = query_page(self._client, params, limit=limit, key_fields=KEY_FIELDS, start=start)
        return [self._from(item) for item in page.items], page.next_position

    def update(self, old: Schedule, new: Schedule) -> None:
        """Write `new`'s settings if the schedule is still at `old.revision` (else StaleWrite).

        Only the settings and bookkeeping change: a fire recorded meanwhile is kept.
        """
        names = {f"#{name}": name for name in (*MUTABLE_FIELDS, "updated_at", "revision")}
        values = to_item(
            {
                ":expression": new.expression,
                ":timezone": new.timezone,
                ":inputs": dumps(new.inputs),
                ":enabled": new.enabled,
                ":anchor_at": new.anchor_at,
                ":updated_at": new.updated_at,
                ":revision": new.revision,
                ":read": old.revision,
            }
        )
        assignments = [f"#{name} = :{name}" for name in (*MUTABLE_FIELDS, "updated_at", "revision")]
        remove = ""
        if new.version is None:
            assignments.remove("#version = :version")
            remove = " REMOVE #version"
        else:
            values[":version"] = {"N": str(new.version)}
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(old.tenant_id, old.schedule_id),
                UpdateExpression="SET " + ", ".join(assignments) + remove,
                ConditionExpression="attribute_exists(pk) AND #revision = :read",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise StaleWrite(
                    f"schedule '{old.schedule_id}' changed meanwhile; read it and try again"
                ) from exc
            raise translate(exc) from exc

    def delete(self, tenant_id: str, schedule_id: str) -> None:
        """Delete the item and give its place back; a schedule already gone changes nothing."""
        items = [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": self._key(tenant_id, schedule_id),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": counter_key(tenant_id),
                    "UpdateExpression": "ADD n :minus_one",
                    "ConditionExpression": "attribute_exists(n)",
                    "ExpressionAttributeValues": {":minus_one": {"N": "-1"}},
                }
            },
        ]
        for _ in range(TRANSACTION_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                item, counter = _refusals(exc, 2)
                if item == "ConditionalCheckFailed":
                    return  # deleted already (a retried DELETE): its place was given back then
                if counter == "ConditionalCheckFailed":
                    self._start_counter(tenant_id)
        raise StaleWrite("the tenant's schedules changed meanwhile; try again")

    def _start_counter(self, tenant_id: str) -> None:
        """The counter of a tenant whose schedules predate it: their count, unless another
        writer stored one first (the first one stored is right: no transaction ran before it)."""
        total = self.count(tenant_id, _COUNT_ALL)
        try:
            self._client.put_item(
                TableName=self._table,
                Item={**counter_key(tenant_id), "n": {"N": str(total)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc

    def record_fire(
        self, tenant_id: str, schedule_id: str, scheduled_time: str, fire: Mapping[str, Any]
    ) -> bool:
        """Record a fire's outcome unless a fire as late or later is already recorded."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, schedule_id),
                UpdateExpression="SET last_fire = :fire, last_fire_time = :time",
                ConditionExpression="attribute_exists(pk) AND "
                "(attribute_not_exists(last_fire_time) OR last_fire_time < :time)",
                ExpressionAttributeValues={":fire": {"S": dumps(dict(fire))}, ":time": {"S": scheduled_time}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(exc) from exc
        return True

    # ---- item conversion -------------------------------------------------------------

    @staticmethod
    def _key(tenant_id: str, schedule_id: str) -> dict[str, Any]:
        return {"pk": {"S": schedules_pk(tenant_id)}, "sk": {"S": schedule_id}}

    @staticmethod
    def _item(schedule: Schedule) -> dict[str, Any]:
        values = schedule.model_dump(mode="json")
        for name in _JSON_FIELDS:
            values[name] = dumps(values[name]) if values[name] is not None else None
        values.update(pk=schedules_pk(schedule.tenant_id), sk=schedule.schedule_id)
        return to_item(values)

    @staticmethod
    def _from(item: Mapping[str, Any]) -> Schedule:
        values = from_item(item)
        for name in _JSON_FIELDS:
            values[name] = loads(values.get(name))
        values["inputs"] = values["inputs"] or {}
        return Schedule.model_validate(values)


def _refusals(exc: ClientError, items: int) -> list[str]:
    """Why each item of a cancelled transaction was refused (`None`, `ConditionalCheckFailed`,
    `TransactionConflict`), for a cancellation worth handling; anything else is raised."""
    codes = [str(reason.get("Code")) for reason in cancellation_reasons(exc)]
    if error_code(exc) != "TransactionCanceledException" or len(codes) != items:
        raise translate(exc) from exc
    if any(code not in ("None", "ConditionalCheckFailed", "TransactionConflict") for code in codes):
        raise translate(exc) from exc
    return codes


class EventBridgeSchedules:
    """The schedules as EventBridge Scheduler runs them: one per schedule, in one group."""

    def __init__(
        self, client_factory: Callable[[], Any], *, group: str, role_arn: str, queue_arn: str
    ) -> None:
        self._factory = client_factory
        self._client: Any = None
        self.group = group
        self.role_arn = role_arn
        self.queue_arn = queue_arn

    @property
    def client(self) -> Any:
        # Created on first use: the dispatcher, which never manages schedules, never pays for it.
        if self._client is None:
            self._client = self._factory()
        return self._client

    def target_input(self, schedule: Schedule) -> str:
        message = {
            "v": 1,
            "kind": "start_scheduled",
            "tenant_id": schedule.tenant_id,
            "schedule_id": schedule.schedule_id,
            "scheduled_time": SCHEDULED_TIME_PLACEHOLDER,
        }
        return json.dumps(message, separators=(",", ":"))

    def put(self, schedule: Schedule, *, start_date: datetime | None, create: bool) -> None:
        if not (self.group and self.role_arn and self.queue_arn):
            raise DependencyUnavailable(
                "schedules are not configured here (schedule group, scheduler role, dispatch queue ARN)"
            )
        request: dict[str, Any] = {
            "Name": schedule.schedule_id,
            "GroupName": self.group,
            "ScheduleExpression": schedule.expression,
            "ScheduleExpressionTimezone": schedule.timezone,
            "State": "ENABLED" if schedule.enabled else "DISABLED",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Description": f"workflow {schedule.workflow_id} (tenant {schedule.tenant_id})",
            "Target": {
                "Arn": self.queue_arn,
                "RoleArn": self.role_arn,
                "Input": self.target_input(schedule),
                # A fire older than an hour is dropped rather than delivered: the dispatcher
                # can only promise one run per fire within its deduplication window.
                "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 20},
            },
        }
        if start_date is not None:
            request["StartDate"] = start_date
        with aws_errors():
            if create:
                self.client.create_schedule(ActionAfterCompletion="NONE", **request)
            else:
                self.client.update_schedule(ActionAfterCompletion="NONE", **request)

    def delete(self, schedule_id: str) -> None:
        try:
            self.client.delete_schedule(Name=schedule_id, GroupName=self.group)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise translate(exc) from exc
