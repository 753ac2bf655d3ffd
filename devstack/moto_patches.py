"""Four patches to the emulator: DynamoDB transactions at their real cost, SQS fair queues, SQS
receives at a cost that does not grow with the queue squared, and a Query that reads its own
partition.

## TransactWriteItems costs what the transaction touches, not what the table holds

moto 5 backs up every table a transaction names with `copy.deepcopy(table)` (once per item in
the transaction) so it can roll back on a cancelled transaction. Each transaction then costs
time proportional to everything ever written, and the local stack slows to a crawl as runs
accumulate. This keeps moto's own transaction logic and replaces only the backup: the items the
transaction addresses are copied before it runs and put back (or deleted) if it raises.

Still needed while a definition's version is written in a transaction: on in-process moto,
creating a workflow after 600 others took 186 ms without this (11 ms for the first 50), 2.2 ms
with it (2026-11-28).

Only sound where DynamoDB requests do not interleave: the local stack serialises them
(devstack.moto_server) and the tests wrap their client the same way.

## Standard queues deliver fairly between message groups (SQS fair queues)

On AWS a standard queue whose messages carry a `MessageGroupId` is a fair queue: while one group
(here: one tenant, adapters/queue.py) has a backlog, the other groups' messages are delivered
first. moto accepts the group id on a standard queue but delivers oldest first, so one tenant's
flood would sit in front of everyone else's kicks on the local stack and nowhere else. This
orders a standard queue's visible messages the fair way: groups with fewer messages in flight
first, then one message of each group in turn, each group's messages oldest first.

## A receive reads the retention period once, not every attribute per message

moto checks each message's retention with `get_queue_attributes`, which computes every attribute
of the queue (counting its messages) three times per message: a receive cost grew with the
square of the queue's length, and a map of a thousand items (a backlog of a few hundred
messages) kept the emulator's process at a full core. The check reads the period itself.

## A base-table Query reads its partition, not the whole table

moto answers a Query on the table itself by sorting every item of the table and keeping the
partition's. Each run's read (a Query of its run item and snapshot) then cost time proportional
to every run ever stored: a 10,000-item map slowed down as its children accumulated. A Query on
the table (not an index) now hands moto the queried partition's items only, in the same order;
what it answers is unchanged.
"""

from __future__ import annotations

import copy
import threading
import types
from collections.abc import Callable
from itertools import zip_longest
from typing import Any

from moto.core.utils import unix_time
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.sqs.models import Message, Queue, SQSBackend

_ORIGINAL: Callable[[DynamoDBBackend, list[dict[str, Any]]], None] = DynamoDBBackend.transact_write_items


def _deepcopy_except_tables(value: Any, memo: dict[int, Any] | None = None) -> Any:
    # The whole-table backup is the only deepcopy of a Table in that module.
    if isinstance(value, Table):
        return value
    return copy.deepcopy(value, memo)


def _key_of(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    table_name = op.get("TableName")
    if not table_name or table_name not in backend.tables:
        return None
    if op_type != "Put":
        key = op.get("Key")
        return (table_name, key) if isinstance(key, dict) else None
    table = backend.tables[table_name]
    attrs = op.get("Item") or {}
    key = {table.hash_key_attr: attrs.get(table.hash_key_attr)}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs.get(table.range_key_attr)
    if any(value is None for value in key.values()):
        return None
    return table_name, key


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    for entry in transact_items:
        if len(entry) != 1:
            continue  # moto rejects it before writing anything
        op_type, op = next(iter(entry.items()))
        if op_type == "ConditionCheck":
            continue
        addressed = _key_of(self, op_type, op)
        if addressed is None:
            continue
        table_name, key = addressed
        try:
            current = self.get_item(table_name, key)
        except Exception:  # noqa: BLE001, S112 - a malformed key: moto's own validation reports it
            continue
        undo.append((table_name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
    try:
        _ORIGINAL(self, transact_items)
    except Exception:
        for table_name, key, before in reversed(undo):
            if before is None:
                if self.get_item(table_name, key) is not None:
                    self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before)
        raise


_VISIBLE: Any = Queue.messages


def _fair_messages(queue: Any) -> list[Any]:
    visible: list[Any] = _VISIBLE.fget(queue)
    if queue.fifo_queue or len(visible) < 2:
        return visible
    in_flight: dict[str | None, int] = {}
    # A copy: another request's receive or send may change the set while it is read.
    for message in list(queue.pending_messages):
        if not message.visible:
            in_flight[message.group_id] = in_flight.get(message.group_id, 0) + 1
    groups: dict[str | None, list[Any]] = {}
    for message in visible:
        groups.setdefault(message.group_id, []).append(message)
    if len(groups) < 2:
        return visible
    turns = sorted(groups.values(), key=lambda messages: in_flight.get(messages[0].group_id, 0))
    return [message for turn in zip_longest(*turns) for message in turn if message is not None]


def _within_retention(self: SQSBackend, queue_name: str, message: Message) -> bool:
    # Set from the queue's attributes when it is created or changed (Queue._set_attributes).
    queue: Any = self.get_queue(queue_name)
    retention = int(queue.message_retention_period)
    return bool(retention + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]


_QUERY: Any = Table.query
_ALL_ITEMS: Any = Table.all_items
_PARTITION = threading.local()


def _partition_query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    if index_name or hash_key is None:
        return _QUERY(self, hash_key, *args, **kwargs)
    _PARTITION.where = (self, hash_key)
    try:
        return _QUERY(self, hash_key, *args, **kwargs)
    finally:
        _PARTITION.where = None


def _partition_items(self: Table) -> list[Any]:
    where = getattr(_PARTITION, "where", None)
    if where is None or where[0] is not self:
        return list(_ALL_ITEMS(self))
    found = self.items.get(where[1])
    if found is None:
        return []
    items = list(found.values()) if self.range_key_attr else [found]
    return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


def install() -> None:
    """Idempotent: patch moto's DynamoDB backend and SQS queues in this process."""
    if DynamoDBBackend.transact_write_items is _transact_write_items:
        return
    Queue.messages = property(_fair_messages)  # type: ignore[assignment,method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _within_retention  # type: ignore[method-assign]
    Table.query = _partition_query  # type: ignore[method-assign]
    Table.all_items = _partition_items  # type: ignore[method-assign]
    shim = types.SimpleNamespace(**{name: getattr(copy, name) for name in ("copy", "deepcopy")})
    shim.deepcopy = _deepcopy_except_tables
    dynamodb_models.copy = shim  # type: ignore[assignment,attr-defined]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
