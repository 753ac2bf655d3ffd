"""The run aggregate: the run item, its pinned definition snapshot, and its event log.

Keys (see docs/storage.md):
- runs table        pk = "<tenant_id>#<run_id>", sk = "RUN" | "DEFINITION"
                    gsi1 (tenant listing)   gsi1pk = "<tenant_id>", gsi1sk = "<created_at>#<run_id>"
                    gsi2 (by workflow)      gsi2pk = "<tenant_id>#<workflow_id>", gsi2sk = gsi1sk
- run events table  pk = "<tenant_id>#<run_id>", event_seq = 1, 2, 3 ...

The tenant is part of every key, so a read with another tenant's id finds nothing.

Event numbering: the run item carries `last_event_seq`. Every write that adds events is one
transaction that moves `last_event_seq` from the value it read to that value + n (a condition)
and puts the n event items (each `attribute_not_exists`). Two writers that read the same value
cannot both succeed, so sequence numbers have no gaps and no duplicates. A state change also
bumps `version`; a writer that finds only `last_event_seq` moved (someone appended events) reads
again and retries, while a writer that finds `version` moved has lost the race (StaleWrite).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from workflows.aws import aws_errors, error_code, translate
from workflows.clock import Clock, iso, system_clock
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import NewEvent, Run, RunEvent, RunStatus
from workflows.errors import NotFound, StaleWrite
from workflows.storage.dynamo import cancellation_reasons, dumps, from_item, loads, to_item
from workflows.storage.paging import Position, check_position, invalid_cursor, query_page

RUN_SK = "RUN"
DEFINITION_SK = "DEFINITION"
# Fields stored as JSON strings.
_JSON_FIELDS = ("inputs", "outputs", "error", "step_outputs", "last_output", "approval")
_MAX_APPEND_TRIES = 60


def run_pk(tenant_id: str, run_id: str) -> str:
    return f"{tenant_id}#{run_id}"


class RunRepository:
    def __init__(
        self,
        client: Any,
        runs_table: str,
        events_table: str,
        *,
        clock: Clock = system_clock,
        retention_days: int = 90,
    ) -> None:
        self._client = client
        self._runs = runs_table
        self._events = events_table
        self._clock = clock
        self._retention = timedelta(days=retention_days)

    # ---- item conversion -------------------------------------------------------------

    def _expires_at(self) -> int:
        return int((self._clock() + self._retention).timestamp())

    def _run_item(self, run: Run) -> dict[str, Any]:
        values = run.model_dump(mode="json")
        for field in _JSON_FIELDS:
            values[field] = dumps(values[field])
        sort_key = f"{run.created_at}#{run.run_id}"
        values.update(
            pk=run_pk(run.tenant_id, run.run_id),
            sk=RUN_SK,
            gsi1pk=run.tenant_id,
            gsi1sk=sort_key,
            gsi2pk=f"{run.tenant_id}#{run.workflow_id}" if run.workflow_id else None,
            gsi2sk=sort_key if run.workflow_id else None,
            expires_at=self._expires_at(),
        )
        return to_item(values)

    @staticmethod
    def _run_from(item: Mapping[str, Any]) -> Run:
        values = from_item(item)
        for field in _JSON_FIELDS:
            values[field] = loads(values.get(field))
        values["step_outputs"] = values["step_outputs"] or {}
        values["inputs"] = values["inputs"] or {}
        return Run.model_validate(values)

    def _event_items(self, run: Run, first_seq: int, events: Sequence[NewEvent]) -> list[dict[str, Any]]:
        now = iso(self._clock())
        expires = self._expires_at()
        return [
            to_item(
                {
                    "pk": run_pk(run.tenant_id, run.run_id),
                    "event_seq": first_seq + offset,
                    "event_type": event.event_type.value,
                    "payload": dumps(event.payload),
                    "step_id": event.step_id,
                    "created_at": now,
                    "expires_at": expires,
                }
            )
            for offset, event in enumerate(events)
        ]

    # ---- writes --------------------------------------------------------------------

    def create(self, run: Run, definition: WorkflowDefinition) -> None:
        """Store a new run and its definition snapshot together, or neither."""
        key = run_pk(run.tenant_id, run.run_id)
        snapshot = to_item(
            {
                "pk": key,
                "sk": DEFINITION_SK,
                "definition": definition.canonical_json(),
                "expires_at": self._expires_at(),
            }
        )
        with aws_errors():
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._runs,
                            "Item": self._run_item(run),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._runs,
                            "Item": snapshot,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )

    def transition(self, run: Run, changes: Mapping[str, Any], events: Sequence[NewEvent]) -> Run:
        """Apply `changes` to the run as read (its `version`) and append `events`, atomically.

        Raises StaleWrite when the run's state changed since `run` was read.
        """
        current = run
        for _ in range(_MAX_APPEND_TRIES):
            updated = current.model_copy(
                update={
                    **changes,
                    "version": current.version + 1,
                    "last_event_seq": current.last_event_seq + len(events),
                    "updated_at": iso(self._clock()),
                }
            )
            # Validate the result as a whole before writing anything.
            updated = Run.model_validate(updated.model_dump())
            old = self._write(current, updated, events, check_version=True)
            if old is None:
                return updated
            if old.version != run.version:
                raise StaleWrite(f"run {run.run_id} changed (version {old.version}, read {run.version})")
            current = old  # only events were appended meanwhile: renumber and retry
            _backoff()
        raise StaleWrite(f"run {run.run_id}: too much contention appending events")

    def append_events(self, tenant_id: str, run_id: str, events: Sequence[NewEvent]) -> list[int]:
        """Append events without changing the run's state; returns their sequence numbers."""
        if not events:
            return []
        current = self.get(tenant_id, run_id)
        for _ in range(_MAX_APPEND_TRIES):
            updated = current.model_copy(update={"last_event_seq": current.last_event_seq + len(events)})
            old = self._write(current, updated, events, check_version=False)
            if old is None:
                first = current.last_event_seq + 1
                return list(range(first, first + len(events)))
            current = old
            _backoff()
        raise StaleWrite(f"run {run_id}: too much contention appending events")

    def _write(
        self, current: Run, updated: Run, events: Sequence[NewEvent], *, check_version: bool
    ) -> Run | None:
        """One transaction; None on success, else the run item as it was when the check failed."""
        condition = "last_event_seq = :seq"
        values: dict[str, Any] = {":seq": {"N": str(current.last_event_seq)}}
        if check_version:
            condition += " AND version = :version"
            values[":version"] = {"N": str(current.version)}
        item = self._run_item(updated)
        # Rewrite the whole item under the condition: the run item is small and a Put keeps the
        # stored shape identical to what `_run_item` produces.
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._runs,
                    "Item": item,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        ]
        first_seq = current.last_event_seq + 1
        for event_item in self._event_items(current, first_seq, events):
            items.append(
                {
                    "Put": {
                        "TableName": self._events,
                        "Item": event_item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        try:
            if len(items) == 1:
                put = items[0]["Put"]
                self._client.put_item(**put)
            else:
                self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                old_item = exc.response.get("Item")
                return self._reread(current, old_item)
            if code == "TransactionCanceledException":
                reasons = cancellation_reasons(exc)
                codes = {r.get("Code") for r in reasons}
                if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
                    old_item = reasons[0].get("Item") if reasons else None
                    return self._reread(current, old_item)
            raise translate(exc) from exc
        return None

    def _reread(self, current: Run, old_item: Mapping[str, Any] | None) -> Run:
        if old_item:
            return self._run_from(old_item)
        return self.get(current.tenant_id, current.run_id)

    # ---- reads ---------------------------------------------------------------------

    def get(self, tenant_id: str, run_id: str) -> Run:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._runs,
                Key={"pk": {"S": run_pk(tenant_id, run_id)}, "sk": {"S": RUN_SK}},
                ConsistentRead=True,
            )
        if "Item" not in response:
            raise NotFound(f"run '{run_id}' not found")
        return self._run_from(response["Item"])

    def get_with_definition(self, tenant_id: str, run_id: str) -> tuple[Run, WorkflowDefinition]:
        """The run and its pinned definition in one strongly consistent Query."""
        with aws_errors():
            response = self._client.query(
                TableName=self._runs,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": run_pk(tenant_id, run_id)}},
                ConsistentRead=True,
            )
        items = {item["sk"]["S"]: item for item in response.get("Items", [])}
        if RUN_SK not in items or DEFINITION_SK not in items:
            raise NotFound(f"run '{run_id}' not found")
        definition = WorkflowDefinition.model_validate_json(items[DEFINITION_SK]["definition"]["S"])
        return self._run_from(items[RUN_SK]), definition

    def list_events(
        self,
        tenant_id: str,
        run_id: str,
        *,
        since: int = 0,
        limit: int = 100,
        types: Sequence[str] = (),
    ) -> EventPage:
        """Events with event_seq > since, ascending. Reads only the page's key range.

        With a type filter, DynamoDB reads at most `limit` items and filters them, so a page may
        hold fewer than `limit` events; `next_since` says where the next page starts either way.
        """
        params: dict[str, Any] = {
            "TableName": self._events,
            "KeyConditionExpression": "pk = :pk AND event_seq > :since",
            "ExpressionAttributeValues": {
                ":pk": {"S": run_pk(tenant_id, run_id)},
                ":since": {"N": str(since)},
            },
            "Limit": limit,
            "ScanIndexForward": True,
        }
        if types:
            placeholders = {f":t{i}": {"S": t} for i, t in enumerate(types)}
            params["FilterExpression"] = f"event_type IN ({', '.join(placeholders)})"
            params["ExpressionAttributeValues"].update(placeholders)
        with aws_errors():
            response = self._client.query(**params)
        events = [self._event_from(item) for item in response.get("Items", [])]
        last_key = response.get("LastEvaluatedKey")
        if last_key:
            next_since = int(last_key["event_seq"]["N"])
        else:
            next_since = events[-1].event_seq if events else since
        return EventPage(events=events, next_since=next_since, has_more=bool(last_key))

    def list_runs(
        self,
        tenant_id: str,
        *,
        workflow_id: str | None = None,
        statuses: Sequence[str] = (),
        created_after: str | None = None,
        created_before: str | None = None,
        limit: int = 50,
        start: Position | None = None,
        owner_id: str | None = None,
    ) -> tuple[list[Run], Position | None]:
        """A tenant's runs (`owner_id`'s only, if given), newest first: a key-range Query on
        `by-tenant` (or `by-workflow`).

        created_after / created_before are exclusive bounds on created_at (RFC 3339 strings as
        `iso` writes them); a status filter is a FilterExpression, so a page may need several
        requests (bounded, see storage.paging).
        """
        if workflow_id is None:
            index, pk_name, sk_name, partition = "by-tenant", "gsi1pk", "gsi1sk", tenant_id
        else:
            index, pk_name, sk_name = "by-workflow", "gsi2pk", "gsi2sk"
            partition = f"{tenant_id}#{workflow_id}"
        key_fields = ("pk", "sk", pk_name, sk_name)
        # Sort keys are "<created_at>#<run_id>": "<t>#~" sorts after every run created at t
        # and "<t>" before every one of them, so both bounds exclude runs created exactly at t.
        lower = f"{created_after}#~" if created_after else None
        upper = created_before
        check_position(start, {pk_name: partition, "pk^": f"{tenant_id}#"}, key_fields)
        if start is not None:
            position = start[sk_name]
            if (lower is not None and position <= lower) or (upper is not None and position >= upper):
                raise invalid_cursor()
        condition = f"{pk_name} = :p"
        values: dict[str, Any] = {":p": {"S": partition}}
        if lower is not None and upper is not None:
            condition += f" AND {sk_name} BETWEEN :lo AND :hi"
            values.update({":lo": {"S": lower}, ":hi": {"S": upper}})
        elif lower is not None:
            condition += f" AND {sk_name} > :lo"
            values[":lo"] = {"S": lower}
        elif upper is not None:
            condition += f" AND {sk_name} < :hi"
            values[":hi"] = {"S": upper}
        params: dict[str, Any] = {
            "TableName": self._runs,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        filters: list[str] = []
        if statuses:
            placeholders = {f":s{i}": {"S": status} for i, status in enumerate(statuses)}
            filters.append(f"#status IN ({', '.join(placeholders)})")
            params["ExpressionAttributeNames"] = {"#status": "status"}
            values.update(placeholders)
        if owner_id is not None:
            filters.append("owner_id = :owner")
            values[":owner"] = {"S": owner_id}
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        page = query_page(self._client, params, limit=limit, key_fields=key_fields, start=start)
        return [self._run_from(item) for item in page.items], page.next_position

    @staticmethod
    def _event_from(item: Mapping[str, Any]) -> RunEvent:
        values = from_item(item)
        return RunEvent(
            event_seq=int(values["event_seq"]),
            event_type=values["event_type"],
            payload=loads(values.get("payload")) or {},
            step_id=values.get("step_id"),
            created_at=values["created_at"],
        )


@dataclass(frozen=True)
class EventPage:
    events: list[RunEvent]
    next_since: int
    has_more: bool


def _backoff() -> None:
    # Full jitter keeps contending writers from retrying in lock step.
    time.sleep(random.uniform(0, 0.02))


__all__ = ["EventPage", "RunRepository", "RunStatus", "run_pk"]
