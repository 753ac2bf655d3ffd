"""Count every AWS request and DynamoDB capacity unit, with botocore event hooks.

The hooks are registered on boto3's default session before the service builds its clients, so
every client the composition root creates (DynamoDB, SQS, S3, ...) is counted without touching
the service's code. Capacity units follow DynamoDB's on-demand rules, computed from item sizes
(moto's ReturnConsumedCapacity answers fixed values whatever the size, so it is not used):

- write: 1 WRU per started KB of the larger of the old and new item; 2x inside a transaction;
  plus 1 WRU per started KB written to each global secondary index the item is in (a changed
  index key costs a delete and a put there);
- read: 1 RRU per started 4 KB (all items a Query evaluates are summed first) when strongly
  consistent, half when eventually consistent (every index read), 2x inside a transaction; a
  GetItem with a ProjectionExpression is billed on the whole item (read back to size it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

KB = 1024
READ_UNIT = 4 * KB
SQS_CHUNK = 64 * KB
_SIZED_NUMBER = str.maketrans("", "", "-.+eE")


def attribute_size(value: Mapping[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        digits = raw.translate(_SIZED_NUMBER).lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(attribute_size({"N": n}) for n in raw)
    if kind == "BS":
        return sum(len(b) for b in raw)
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in raw)
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in raw.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: Mapping[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / KB))


class Meter:
    """Counters for one measured interval; `reset()` starts a new one."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]], raw_dynamodb: Any) -> None:
        self._tables = tables
        # Tables with a stream: each write of a run item there is a record FollowFunction's event
        # source hands over (its filter lets only `sk = RUN` through).
        self._streamed = {name for name, props in tables.items() if props.get("StreamSpecification")}
        self._raw = raw_dynamodb  # an unhooked client: reads items back to learn their size
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self._paused = False
        self._session: Any = None
        self.counts: defaultdict[str, float] = defaultdict(float)
        self.aws_seconds = 0.0
        self.items_read = 0

    # ---- installation ----------------------------------------------------------------

    def install(self) -> None:
        import boto3

        self._session = boto3._get_default_session()
        self._session.events.register("before-parameter-build", self._before)
        self._session.events.register("after-call", self._after)

    def uninstall(self) -> None:
        if self._session is not None:
            self._session.events.unregister("before-parameter-build", self._before)
            self._session.events.unregister("after-call", self._after)
            self._session = None

    def reset(self) -> None:
        with self._lock:
            self.counts = defaultdict(float)
            self.aws_seconds = 0.0
            self.items_read = 0

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            out: dict[str, float] = dict(self.counts)
            out["aws_seconds"] = self.aws_seconds
            out["items_read"] = self.items_read
            return out

    # ---- hooks -----------------------------------------------------------------------

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if self._paused:
            return
        context["bench_params"] = dict(params)
        context["bench_started"] = time.perf_counter()

    def _after(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        if "bench_params" not in context:
            return
        params = context.pop("bench_params")
        elapsed = time.perf_counter() - context.pop("bench_started")
        service = model.service_model.endpoint_prefix
        operation = model.name
        ok = "Error" not in parsed
        with self._lock:
            self.aws_seconds += elapsed
            self.counts[f"{service}.requests"] += 1
            self.counts[f"{service}.{operation}"] += 1
            if service == "dynamodb":
                self._dynamodb(operation, params, parsed, ok)
            elif service == "sqs":
                self._sqs(operation, params)
            elif service == "s3":
                kind = "get" if operation in ("GetObject", "HeadObject") else "put"
                self.counts[f"s3.{kind}_requests"] += 1

    # ---- DynamoDB ----------------------------------------------------------------------

    def _key(self, table: str, item: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        names = [k["AttributeName"] for k in self._tables[table]["KeySchema"]]
        return table, tuple(str(item.get(n)) for n in names)

    def _indexes(self, table: str) -> list[tuple[list[str], Callable[[Mapping[str, Any]], dict[str, Any]]]]:
        """Each global secondary index: its key names, and what it stores of an item (the
        table's and the index's keys plus the projected attributes)."""
        table_keys = [k["AttributeName"] for k in self._tables[table]["KeySchema"]]
        out = []
        for index in self._tables[table].get("GlobalSecondaryIndexes") or []:
            names = [k["AttributeName"] for k in index["KeySchema"]]
            projection = index.get("Projection") or {}
            kind = projection.get("ProjectionType", "ALL")
            keep = set(table_keys) | set(names) | set(projection.get("NonKeyAttributes") or [])

            def project(item: Mapping[str, Any], kind: str = kind, keep: set[str] = keep) -> dict[str, Any]:
                return dict(item) if kind == "ALL" else {k: v for k, v in item.items() if k in keep}

            out.append((names, project))
        return out

    def _write(
        self,
        table: str,
        key_item: Mapping[str, Any],
        new_item: Mapping[str, Any] | None,
        *,
        factor: int,
        ok: bool,
    ) -> None:
        key = self._key(table, key_item)
        old_item = self._sizes.get(key)
        old, new = item_size(old_item), item_size(new_item)
        self.counts["dynamodb.wru"] += factor * write_units(max(old, new))
        if ok and table in self._streamed and key_item.get("sk", {}).get("S") == "RUN":
            self.counts["dynamodb.stream_records"] += 1
        if not ok:
            return
        for names, project in self._indexes(table):
            had = old_item is not None and all(n in old_item for n in names)
            has = new_item is not None and all(n in new_item for n in names)
            before = project(old_item) if had else None  # type: ignore[arg-type]
            after = project(new_item) if has else None  # type: ignore[arg-type]
            same_key = had and has and all(old_item[n] == new_item[n] for n in names)  # type: ignore[index]
            if same_key:
                # An index is written only when what it stores of the item changes.
                if before != after:
                    self.counts["dynamodb.wru_index"] += write_units(item_size(after))
            else:
                if had:
                    self.counts["dynamodb.wru_index"] += write_units(item_size(before))
                if has:
                    self.counts["dynamodb.wru_index"] += write_units(item_size(after))
        if new_item is None:
            self._sizes.pop(key, None)
        else:
            self._sizes[key] = dict(new_item)

    def _read_back(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._raw.get_item(
            TableName=table, Key=dict(key), ConsistentRead=True
        ).get("Item")
        return item

    def _dynamodb(self, operation: str, params: dict[str, Any], parsed: dict[str, Any], ok: bool) -> None:
        if operation == "PutItem":
            self._write(params["TableName"], params["Item"], params["Item"], factor=1, ok=ok)
        elif operation == "UpdateItem":
            new = self._read_back(params["TableName"], params["Key"]) if ok else None
            self._write(
                params["TableName"],
                params["Key"],
                new if ok else self._sizes.get(self._key(params["TableName"], params["Key"])),
                factor=1,
                ok=ok,
            )
        elif operation == "DeleteItem":
            self._write(params["TableName"], params["Key"], None, factor=1, ok=ok)
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((kind, spec),) = entry.items()
                table = spec["TableName"]
                if kind == "Put":
                    self._write(table, spec["Item"], spec["Item"], factor=2, ok=ok)
                elif kind == "Delete":
                    self._write(table, spec["Key"], None, factor=2, ok=ok)
                elif kind == "Update":
                    new = (
                        self._read_back(table, spec["Key"])
                        if ok
                        else self._sizes.get(self._key(table, spec["Key"]))
                    )
                    self._write(table, spec["Key"], new, factor=2, ok=ok)
                else:  # ConditionCheck: charged like a write of the item's size
                    current = self._sizes.get(self._key(table, spec["Key"]))
                    self.counts["dynamodb.wru"] += 2 * write_units(item_size(current))
        elif operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        self._write(table, item, item, factor=1, ok=ok)
                    else:
                        self._write(table, request["DeleteRequest"]["Key"], None, factor=1, ok=ok)
        elif operation == "GetItem":
            item = parsed.get("Item")
            self.items_read += 1 if item else 0
            if item and "ProjectionExpression" in params:
                # Billed on the whole item, whatever the projection returns.
                item = self._read_back(params["TableName"], params["Key"]) or item
            self._read(item_size(item), consistent=bool(params.get("ConsistentRead")), factor=1)
        elif operation in ("Query", "Scan"):
            items = parsed.get("Items", [])
            size = sum(item_size(i) for i in items)
            scanned = int(parsed.get("ScannedCount", len(items)))
            if items and scanned > len(items):
                size = size * scanned // len(items)
            self.items_read += scanned
            consistent = bool(params.get("ConsistentRead")) and "IndexName" not in params
            self._read(size, consistent=consistent, factor=1)
        elif operation == "TransactGetItems":
            for response in parsed.get("Responses", []):
                self.items_read += 1
                self._read(item_size(response.get("Item")), consistent=True, factor=2)
        elif operation == "BatchGetItem":
            for table, request in params["RequestItems"].items():
                consistent = bool(request.get("ConsistentRead"))
                items = parsed.get("Responses", {}).get(table, [])
                for item in items:
                    self.items_read += 1
                    self._read(item_size(item), consistent=consistent, factor=1)
                # A key with no item is billed the minimum read, like a GetItem that finds nothing.
                unprocessed = len(parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", []))
                for _ in range(len(request["Keys"]) - unprocessed - len(items)):
                    self._read(0, consistent=consistent, factor=1)

    def _read(self, size: int, *, consistent: bool, factor: int) -> None:
        units = max(1, math.ceil(size / READ_UNIT)) * factor
        self.counts["dynamodb.rru"] += units if consistent else units / 2

    # ---- SQS -------------------------------------------------------------------------

    def _sqs(self, operation: str, params: dict[str, Any]) -> None:
        if operation == "SendMessage":
            chunks = max(1, math.ceil(len(params.get("MessageBody", "").encode()) / SQS_CHUNK))
            self.counts["sqs.billed_requests"] += chunks
            self.counts["sqs.messages_sent"] += 1
        elif operation == "SendMessageBatch":
            payload = sum(len(e.get("MessageBody", "").encode()) for e in params.get("Entries", []))
            self.counts["sqs.billed_requests"] += max(1, math.ceil(payload / SQS_CHUNK))
            self.counts["sqs.messages_sent"] += len(params.get("Entries", []))
        else:
            self.counts["sqs.billed_requests"] += 1
