"""Signals and the runs waiting for them, in RunsTable (docs/storage.md, "Signals").

Keys (the tenant is part of every key, so a read with another tenant's id finds nothing):
- `<tenant>#signal-id#<id>`, sk `SIGNAL`: the signal, written once (a conditional put): what
  makes a signal's id idempotent.
- `<tenant>#signal#<name>`, sk `S#<sent_at>#<id>`: the same signal, where a run that begins
  waiting looks back for what was sent before (a key-range Query from the wait's `since`).
- `<tenant>#signal#<name>`, sk `W#<run_id>`: a run waiting for the name, read by the delivery of
  each signal of that name (a page at a time).
All expire with `expires_at` (TTL): a signal a day after it was sent, a waiter after its timeout.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import dumps, loads
from workflows.domain.signals import Signal
from workflows.errors import Conflict

SIGNAL_SK = "SIGNAL"
_SENT = "S#"
_WAITER = "W#"


def _id_pk(tenant_id: str, signal_id: str) -> str:
    return f"{tenant_id}#signal-id#{signal_id}"


def _name_pk(tenant_id: str, name: str) -> str:
    return f"{tenant_id}#signal#{name}"


def _fields(signal: Signal, expires_at: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": {"S": signal.name},
        "signal_id": {"S": signal.signal_id},
        "data": {"S": dumps(signal.data)},
        "sent_at": {"S": signal.sent_at},
        "expires_at": {"N": str(expires_at)},
    }
    if signal.run_id is not None:
        fields["run_id"] = {"S": signal.run_id}
    return fields


def _signal(item: dict[str, Any]) -> Signal:
    return Signal(
        name=item["name"]["S"],
        signal_id=item["signal_id"]["S"],
        data=loads(item["data"]["S"]) or {},
        sent_at=item["sent_at"]["S"],
        run_id=item["run_id"]["S"] if "run_id" in item else None,
    )


class SignalRepository:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def put(self, tenant_id: str, signal: Signal, *, expires_at: int) -> tuple[Signal, bool]:
        """Store the signal unless its id is taken: (the stored signal, whether it is new).
        Conflict when the id names another signal (another name, data or run)."""
        item = {"pk": {"S": _id_pk(tenant_id, signal.signal_id)}, "sk": {"S": SIGNAL_SK}}
        item.update(_fields(signal, expires_at))
        try:
            # An id whose signal expired (TTL deletes late) may name a new one.
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(int(time.time()))}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
            stored = self.get(tenant_id, signal.signal_id)
            if stored is None:  # expired between the two requests: taken again now
                return self.put(tenant_id, signal, expires_at=expires_at)
            if not stored.same_as(signal):
                raise Conflict(
                    f"id: signal '{signal.signal_id}' was sent with another name, data or run",
                    details=[{"field": "id", "message": "already names another signal"}],
                ) from exc
            # A repeat writes the copy again: the first request may have died before it.
            self._put_copy(tenant_id, stored, expires_at)
            return stored, False
        self._put_copy(tenant_id, signal, expires_at)
        return signal, True

    def _put_copy(self, tenant_id: str, signal: Signal, expires_at: int) -> None:
        """The copy a run that begins waiting looks back through (by name, in time order)."""
        copy = {
            "pk": {"S": _name_pk(tenant_id, signal.name)},
            "sk": {"S": f"{_SENT}{signal.sent_at}#{signal.signal_id}"},
        }
        copy.update(_fields(signal, expires_at))
        with aws_errors():
            self._client.put_item(TableName=self._table, Item=copy)

    def get(self, tenant_id: str, signal_id: str) -> Signal | None:
        key = {"pk": {"S": _id_pk(tenant_id, signal_id)}, "sk": {"S": SIGNAL_SK}}
        with aws_errors():
            found = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if found is None or int(found["expires_at"]["N"]) < int(time.time()):
            return None  # expired: TTL deletes it later
        return _signal(found)

    def recent(self, tenant_id: str, name: str, since: str, limit: int) -> list[Signal]:
        """Signals of `name` sent at or after `since`, oldest first, at most `limit`."""
        with aws_errors():
            page = self._client.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": {"S": _name_pk(tenant_id, name)},
                    ":lo": {"S": f"{_SENT}{since}"},
                    ":hi": {"S": f"{_SENT}~"},
                },
                ConsistentRead=True,
                Limit=limit,
            )
        return [_signal(item) for item in page.get("Items", [])]

    def add_waiter(self, tenant_id: str, name: str, run_id: str, *, expires_at: int) -> None:
        item = {
            "pk": {"S": _name_pk(tenant_id, name)},
            "sk": {"S": f"{_WAITER}{run_id}"},
            "expires_at": {"N": str(expires_at)},
        }
        with aws_errors():
            self._client.put_item(TableName=self._table, Item=item)

    def waiters(
        self, tenant_id: str, name: str, *, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """Runs waiting for `name`, a page at a time: (run ids, where the next page starts)."""
        values = {":pk": {"S": _name_pk(tenant_id, name)}, ":w": {"S": _WAITER}}
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :w)",
            "ExpressionAttributeValues": values,
            "ProjectionExpression": "sk",
            "Limit": limit,
        }
        if after is not None:
            request["ExclusiveStartKey"] = {"pk": values[":pk"], "sk": {"S": f"{_WAITER}{after}"}}
        with aws_errors():
            page = self._client.query(**request)
        runs = [item["sk"]["S"].removeprefix(_WAITER) for item in page.get("Items", [])]
        more = page.get("LastEvaluatedKey")
        return runs, (runs[-1] if more and runs else None)

    def remove_waiter(self, tenant_id: str, name: str, run_id: str) -> None:
        key = {"pk": {"S": _name_pk(tenant_id, name)}, "sk": {"S": f"{_WAITER}{run_id}"}}
        with aws_errors():
            self._client.delete_item(TableName=self._table, Key=key)
