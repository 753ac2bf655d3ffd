"""The run aggregate: the run item, its pinned definition snapshot, and its event log.

Keys (see docs/storage.md):
- runs table        pk = "<tenant_id>#<run_id>", sk = "RUN" (and "DEFINITION" for runs stored
                    before snapshots were shared)
                    pk = "<tenant_id>#def#<sha256>", sk = "DEFINITION": a definition snapshot,
                    stored once per content and tenant, named by the runs' `definition_hash`
                    gsi1 (tenant listing)   gsi1pk = "<tenant_id>", gsi1sk = "<created_at>#<run_id>"
                    gsi2 (by workflow)      gsi2pk = "<tenant_id>#<workflow_id>", gsi2sk = gsi1sk
                    Both indexes project only the keys, `status` and `owner_id`: a commit that
                    changes neither writes nothing to them.
                    active (sparse)     active_shard, active_due: runs the service owes a step
                    approvals (sparse)  approval_tenant = "<tenant_id>", approval_requested =
                                        "<requested_at>#<run_id>": runs waiting for a decision,
                                        projecting what an inbox shows (Run.inbox_key)
- run events table  pk = "<tenant_id>#<run_id>", event_seq = the LAST sequence number of one
                    commit; the item holds all of that commit's events (first_seq..event_seq).

The tenant is part of every key, so a read with another tenant's id finds nothing.

A commit is ONE conditional PutItem of the run item (no transaction, which DynamoDB bills
twice). The run item carries `last_event_seq` and, in `pending_events`, the events this commit
appended. The condition names the `last_event_seq` and `version` the writer read, so two
writers that read the same run cannot both commit: sequence numbers have no gaps and no
duplicates, and no write undoes another (a state change may append no events). A state change
that finds only `last_event_seq` moved (someone appended events) reads again and retries; one
that finds `version` moved has lost the race (StaleWrite). An append retries either way.

After the commit, the commit's events are copied to the events table as one item (an idempotent
conditional put). The run item is the record of truth until then: the next writer makes sure the
previous commit's events are in the events table before it overwrites `pending_events`, and a
reader of the events merges the run item's `pending_events` after the stored ones, so a reader
sees every committed event at once and in order, even when the process crashed between the two
writes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import (
    MAX_ITEM_BYTES,
    check_owner,
    dumps,
    from_item,
    item_size,
    loads,
    to_item,
)
from workflows.adapters.paging import check_position, invalid_cursor, query_page
from workflows.clock import Clock, iso, system_clock
from workflows.domain.approvals import InboxFilter, PendingApproval
from workflows.domain.backoff import attempts, full_jitter
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.outputs import (
    REF,
    S3_OUTPUT_BYTES,
    encode,
    in_s3,
    latest_output,
    new_output_id,
    ref,
    ref_id,
)
from workflows.domain.paging import Position
from workflows.domain.run import ACTIVE_SHARDS, EventPage, NewEvent, Run, RunEvent, RunStatus
from workflows.errors import NotFound, PayloadTooLarge, StaleWrite
from workflows.observability import logger

RUN_SK = "RUN"
DEFINITION_SK = "DEFINITION"
# Sorts before "DEFINITION" and "RUN": the run's Query reads from "DEFINITION" on.
OUTPUT_SK = "#OUTPUT#"
# Stored commits read per Query while looking for an output the run item no longer holds.
_OUTPUT_SEARCH_PAGE = 25
# Fields stored as JSON strings (absent when None).
_JSON_FIELDS = ("inputs", "outputs", "error", "step_outputs", "last_output", "approval")
# The run item is rewritten by every commit and billed per started KB: the two fields that grow
# with the run (every step's output, the latest commit's events) are zlib-compressed binary
# past this many bytes, which keeps a 10-step run's item under 1 KB.
_PACKED_FIELDS = ("step_outputs", "pending_events")
_PACK_ABOVE = 200
_MAX_APPEND_TRIES = 60
# Commits this process has seen stored in the events table (pk, last event_seq): a writer that
# committed and copied its events does not check them again before its next commit.
_FLUSHED_MEMORY = 4096
_BATCH_GET_MAX = 100
# How far past a page's last event a stored commit may end and still complete the page.
_COMMIT_MARGIN = 3
# A shared snapshot outlives every run that names it: whoever writes or reads it makes sure it
# expires no sooner than the retention plus _SNAPSHOT_MARGIN from now, and when it must extend
# it, extends it to the retention plus _SNAPSHOT_EXTRA (so that write is rare).
_SNAPSHOT_MARGIN = timedelta(days=7)
_SNAPSHOT_EXTRA = timedelta(days=30)
# Snapshots this process has read or written (immutable content), most recent last.
_SNAPSHOT_MEMORY = 256
# The sparse index of runs waiting for an approval decision (template.yaml, RunsTable).
APPROVALS_INDEX = "approvals"
_APPROVAL_KEYS = ("pk", "sk", "approval_tenant", "approval_requested")


def run_pk(tenant_id: str, run_id: str) -> str:
    return f"{tenant_id}#{run_id}"


def snapshot_pk(tenant_id: str, digest: str) -> str:
    return f"{tenant_id}#def#{digest}"


class RunRepository:
    def __init__(
        self,
        client: Any,
        runs_table: str,
        events_table: str,
        *,
        clock: Clock = system_clock,
        retention_days: int = 90,
        s3: Callable[[], Any] | None = None,
        bucket: str = "",
    ) -> None:
        self._client = client
        self._runs = runs_table
        self._events = events_table
        # Outputs past S3_OUTPUT_BYTES go to this bucket (a factory: most runs never need S3).
        self._s3 = s3
        self._bucket = bucket
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._flushed: OrderedDict[tuple[str, int], None] = OrderedDict()
        # snapshot pk -> (the definition, its expires_at as last seen)
        self._snapshots: OrderedDict[str, tuple[WorkflowDefinition, int]] = OrderedDict()

    # ---- item conversion -------------------------------------------------------------

    def _expires_at(self) -> int:
        return int((self._clock() + self._retention).timestamp())

    def _run_item(self, run: Run, pending: Sequence[RunEvent] = ()) -> dict[str, Any]:
        values = run.model_dump(mode="json")
        for field in _JSON_FIELDS:
            values[field] = None if values[field] is None else dumps(values[field])
        sort_key = f"{run.created_at}#{run.run_id}"
        values.update(
            pk=run_pk(run.tenant_id, run.run_id),
            sk=RUN_SK,
            gsi1pk=run.tenant_id,
            gsi1sk=sort_key,
            gsi2pk=f"{run.tenant_id}#{run.workflow_id}" if run.workflow_id else None,
            gsi2sk=sort_key if run.workflow_id else None,
            pending_events=_dump_events(pending) if pending else None,
            expires_at=self._expires_at(),
        )
        active = run.sweep_key()
        if active is not None:  # the sparse `active` index: absent once the run ends or pauses
            values.update(active_shard=active[0], active_due=active[1])
        inbox = run.inbox_key()
        if inbox is not None:  # the sparse `approvals` index: only while a decision is awaited
            values.update(approval_tenant=inbox[0], approval_requested=inbox[1])
        item = to_item(values)
        assignees = sorted(set((run.approval or {}).get("assignees") or []))
        if inbox is not None and assignees:  # a set, for `contains` in the inbox's filter
            item["approval_assignees"] = {"SS": assignees}
        for field in _PACKED_FIELDS:
            if field in item and len(item[field]["S"]) > _PACK_ABOVE:
                item[field] = {"B": zlib.compress(item[field]["S"].encode(), 6)}
        return item

    @staticmethod
    def _run_from(item: Mapping[str, Any]) -> Run:
        item = {
            name: {"S": zlib.decompress(value["B"]).decode()} if "B" in value else value
            for name, value in item.items()
        }
        values = from_item(item)
        for field in _JSON_FIELDS:
            values[field] = loads(values.get(field))
        values["step_outputs"] = values["step_outputs"] or {}
        values["inputs"] = values["inputs"] or {}
        pending = _load_events(values.pop("pending_events", None))
        run = Run.model_validate(values)
        run.latest_events = pending
        return run

    def _numbered(self, first_seq: int, events: Sequence[NewEvent]) -> list[RunEvent]:
        now = iso(self._clock())
        return [
            RunEvent(
                event_seq=first_seq + offset,
                event_type=event.event_type.value,
                payload=event.payload,
                step_id=event.step_id,
                created_at=now,
            )
            for offset, event in enumerate(events)
        ]

    # ---- writes --------------------------------------------------------------------

    def create(self, run: Run, definition: WorkflowDefinition) -> None:
        """Make sure the definition's snapshot is stored, then store the run item.

        The snapshot is named by its content's SHA-256 (per tenant), so runs of one definition
        share it: it is written once, not once per run (this process remembers what it has
        stored). Two single-item writes rather than a (twice-billed) transaction: the run item
        is what makes the run exist, and it is written last, so a crash in between leaves only
        a snapshot that a later run may use or that expires.
        """
        body = definition.canonical_json()
        digest = hashlib.sha256(body.encode()).hexdigest()
        run = run.model_copy(update={"definition_hash": digest})
        snapshot = self._snapshot_item(run.tenant_id, digest, body)
        run_item = self._run_item(run)
        # Both sizes are known before either write: a run that cannot be stored leaves nothing.
        for field, item in (("inputs", run_item), ("definition", snapshot)):
            size = item_size(item)
            if size > MAX_ITEM_BYTES:
                raise PayloadTooLarge(
                    f"{field}: the run would be stored as {size} bytes, limit {MAX_ITEM_BYTES}",
                    details=[{"field": field, "message": f"stored as {size} bytes, limit {MAX_ITEM_BYTES}"}],
                )
        self._keep_snapshot(run.tenant_id, digest, definition, snapshot)
        with aws_errors():
            self._client.put_item(
                TableName=self._runs,
                Item=run_item,
                ConditionExpression="attribute_not_exists(pk)",
            )

    def _snapshot_item(self, tenant_id: str, digest: str, body: str) -> dict[str, Any]:
        expires = int((self._clock() + self._retention + _SNAPSHOT_EXTRA).timestamp())
        return to_item(
            {
                "pk": snapshot_pk(tenant_id, digest),
                "sk": DEFINITION_SK,
                "definition": body,
                "expires_at": expires,
            }
        )

    def _keep_snapshot(
        self, tenant_id: str, digest: str, definition: WorkflowDefinition, item: dict[str, Any] | None = None
    ) -> None:
        """Make sure the snapshot is stored and expires no sooner than the retention plus a
        margin from now. `item` (when creating a run) is written if the snapshot is missing."""
        pk = snapshot_pk(tenant_id, digest)
        wanted = int((self._clock() + self._retention + _SNAPSHOT_MARGIN).timestamp())
        known = self._snapshots.get(pk)
        if known is not None and known[1] >= wanted:
            self._snapshots.move_to_end(pk)
            return
        expires: int | None = known[1] if known is not None else None
        if known is None:
            with aws_errors():
                found = self._client.get_item(
                    TableName=self._runs,
                    Key={"pk": {"S": pk}, "sk": {"S": DEFINITION_SK}},
                    ProjectionExpression="expires_at",
                    ConsistentRead=True,
                ).get("Item")
            expires = int(found["expires_at"]["N"]) if found else None
        extended = int((self._clock() + self._retention + _SNAPSHOT_EXTRA).timestamp())
        with aws_errors():
            if expires is None:
                if item is None:
                    raise NotFound(f"definition snapshot {digest} not found")
                # Unconditional: the content is the key, so a concurrent writer writes the same.
                self._client.put_item(TableName=self._runs, Item=item)
            elif expires < wanted:
                self._client.update_item(
                    TableName=self._runs,
                    Key={"pk": {"S": pk}, "sk": {"S": DEFINITION_SK}},
                    UpdateExpression="SET expires_at = :e",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":e": {"N": str(extended)}},
                )
            else:
                extended = expires
        self._snapshots[pk] = (definition, extended)
        while len(self._snapshots) > _SNAPSHOT_MEMORY:
            self._snapshots.popitem(last=False)

    def transition(self, run: Run, changes: Mapping[str, Any], events: Sequence[NewEvent]) -> Run:
        """Apply `changes` to the run as read (its `version`) and append `events`, atomically.

        Raises StaleWrite when the run's state changed since `run` was read.
        """
        current = run
        for _ in attempts(_MAX_APPEND_TRIES, _contention_delay):
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
            old = self._write(current, updated, events)
            if old is None:
                return updated
            if old.version != run.version:
                raise StaleWrite(f"run {run.run_id} changed (version {old.version}, read {run.version})")
            current = old  # only events were appended meanwhile: renumber and retry
        raise StaleWrite(f"run {run.run_id}: too much contention appending events")

    def append_events(self, tenant_id: str, run_id: str, events: Sequence[NewEvent]) -> list[int]:
        """Append events without changing the run's state; returns their sequence numbers."""
        if not events:
            return []
        current = self.get(tenant_id, run_id)
        for _ in attempts(_MAX_APPEND_TRIES, _contention_delay):
            updated = current.model_copy(update={"last_event_seq": current.last_event_seq + len(events)})
            # The condition names the version too: a state change without events (a sweeper's
            # re-kick) leaves last_event_seq as it was, and this put of the whole item must not
            # undo it. Either way the append reads the run again and retries.
            old = self._write(current, updated, events)
            if old is None:
                first = current.last_event_seq + 1
                return list(range(first, first + len(events)))
            current = old
        raise StaleWrite(f"run {run_id}: too much contention appending events")

    def _write(self, current: Run, updated: Run, events: Sequence[NewEvent]) -> Run | None:
        """One conditional PutItem; None on success, else the run as it was when the check failed.

        On success `updated.latest_events` holds the numbered events, copied to the events table.
        """
        # The previous commit's events leave the run item now: they must be stored first.
        self._ensure_stored(current)
        condition = "last_event_seq = :seq AND version = :version"
        values: dict[str, Any] = {
            ":seq": {"N": str(current.last_event_seq)},
            ":version": {"N": str(current.version)},
        }
        numbered = self._numbered(current.last_event_seq + 1, events)
        item = self._run_item(updated, numbered)
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise PayloadTooLarge(
                f"run {current.run_id}: the commit would store {size} bytes, limit {MAX_ITEM_BYTES}",
                details=[{"field": "run", "message": f"{size} bytes, limit {MAX_ITEM_BYTES}"}],
            )
        try:
            self._client.put_item(
                TableName=self._runs,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old_item = exc.response.get("Item")
                return self._run_from(old_item) if old_item else self.get(current.tenant_id, current.run_id)
            raise translate(exc) from exc
        updated.latest_events = numbered
        try:
            self._store_events(updated)
        except ClientError:
            # Committed: the events are durable in the run item; the next writer (or this one's
            # next commit) stores them, and readers merge them meanwhile.
            logger.warning("events not copied yet", extra={"run_id": updated.run_id})
        return None

    def _ensure_stored(self, run: Run) -> None:
        """Make sure the events of the run's latest commit are in the events table."""
        if not run.latest_events:
            return
        pk = run_pk(run.tenant_id, run.run_id)
        last = run.latest_events[-1].event_seq
        if (pk, last) in self._flushed:
            return
        with aws_errors():
            found = self._client.get_item(
                TableName=self._events,
                Key={"pk": {"S": pk}, "event_seq": {"N": str(last)}},
                ProjectionExpression="event_seq",
                ConsistentRead=True,
            )
        if "Item" in found:
            self._remember(pk, last)
            return
        with aws_errors():
            self._store_events(run)

    def _store_events(self, run: Run) -> None:
        """Copy the run's latest commit to the events table: one item, written once."""
        if not run.latest_events:
            return
        pk = run_pk(run.tenant_id, run.run_id)
        last = run.latest_events[-1].event_seq
        item = events_item(pk, run.latest_events, expires_at=self._expires_at())
        try:
            self._client.put_item(
                TableName=self._events, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        self._remember(pk, last)

    def _remember(self, pk: str, last: int) -> None:
        self._flushed[(pk, last)] = None
        while len(self._flushed) > _FLUSHED_MEMORY:
            self._flushed.popitem(last=False)

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
        run = self._run_from(response["Item"])
        check_owner(tenant_id, run.tenant_id, "run")
        return run

    def event_head(self, tenant_id: str, run_id: str) -> tuple[int, RunStatus]:
        """`last_event_seq` and `status` in one eventually consistent GetItem of the run item.

        DynamoDB bills a GetItem on the whole item, projected or not: half a read unit per
        started 4 KB (an ordinary run's item stays under 1 KB). The projection saves the
        transfer and the decoding of the outputs and pending events a waiting read has no use
        for. Eventual consistency may see a commit a moment late, never one that did not happen.
        """
        with aws_errors():
            response = self._client.get_item(
                TableName=self._runs,
                Key={"pk": {"S": run_pk(tenant_id, run_id)}, "sk": {"S": RUN_SK}},
                ProjectionExpression="last_event_seq, #status, tenant_id",
                ExpressionAttributeNames={"#status": "status"},
            )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"run '{run_id}' not found")
        check_owner(tenant_id, item.get("tenant_id", {}).get("S"), "run")
        return int(item["last_event_seq"]["N"]), RunStatus(item["status"]["S"])

    def get_with_definition(self, tenant_id: str, run_id: str) -> tuple[Run, WorkflowDefinition]:
        """The run and its pinned definition in one strongly consistent Query."""
        with aws_errors():
            response = self._client.query(
                TableName=self._runs,
                KeyConditionExpression="pk = :pk AND sk >= :from",
                ExpressionAttributeValues={
                    ":pk": {"S": run_pk(tenant_id, run_id)},
                    ":from": {"S": DEFINITION_SK},
                },
                ConsistentRead=True,
            )
        items = {item["sk"]["S"]: item for item in response.get("Items", [])}
        if RUN_SK not in items:
            raise NotFound(f"run '{run_id}' not found")
        run = self._run_from(items[RUN_SK])
        check_owner(tenant_id, run.tenant_id, "run")
        if DEFINITION_SK in items:  # a run stored before snapshots were shared
            return run, WorkflowDefinition.model_validate_json(items[DEFINITION_SK]["definition"]["S"])
        if run.definition_hash is None:
            raise NotFound(f"run '{run_id}' not found")
        return run, self._snapshot(run.tenant_id, run.definition_hash)

    def _snapshot(self, tenant_id: str, digest: str) -> WorkflowDefinition:
        """A shared snapshot: from this process's memory (its content never changes), else one
        strongly consistent GetItem; kept from expiring while runs still read it."""
        pk = snapshot_pk(tenant_id, digest)
        known = self._snapshots.get(pk)
        if known is None:
            with aws_errors():
                found = self._client.get_item(
                    TableName=self._runs,
                    Key={"pk": {"S": pk}, "sk": {"S": DEFINITION_SK}},
                    ConsistentRead=True,
                ).get("Item")
            if found is None:
                raise NotFound(f"definition snapshot {digest} not found")
            definition = WorkflowDefinition.model_validate_json(found["definition"]["S"])
            self._snapshots[pk] = (definition, int(found["expires_at"]["N"]))
        self._keep_snapshot(tenant_id, digest, self._snapshots[pk][0])
        # A copy: callers get a definition of their own, the memory keeps the stored one.
        return self._snapshots[pk][0].model_copy(deep=True)

    def list_events(
        self,
        tenant_id: str,
        run_id: str,
        *,
        since: int = 0,
        limit: int = 100,
        types: Sequence[str] = (),
        run: Run | None = None,
    ) -> EventPage:
        """Events with event_seq > since, ascending. Reads only the page's key range.

        `run` is the run as just read (read here when not given): its latest commit's events
        complete the page when the events table does not hold them yet, and its
        `last_event_seq` says whether there is more. At most `limit` stored commits are read;
        with a type filter a page may hold fewer than `limit` events, and `next_since` says
        where the next page starts either way.
        """
        if run is None:
            run = self.get(tenant_id, run_id)
        # Stored items are keyed by their commit's last event: the item holding since + limit
        # has a key at most a commit's length beyond it. A commit longer than the margin that
        # straddles the page's end needs a second, one-item Query.
        upper = since + limit + _COMMIT_MARGIN
        pk = run_pk(tenant_id, run_id)
        response = self._query_events(
            pk, "BETWEEN :first AND :upper", {":first": since + 1, ":upper": upper}, limit
        )
        examined: list[RunEvent] = []
        _extend(examined, since, response.get("Items", []))
        if not response.get("LastEvaluatedKey"):
            # The latest commit may not be copied yet: it follows the stored ones directly.
            _extend(examined, since, [], run.latest_events)
            seen = examined[-1].event_seq if examined else since
            if len(examined) < limit and seen < run.last_event_seq:
                # A commit longer than the margin straddles the page's end: read it too.
                straddling = self._query_events(pk, "> :upper", {":upper": upper}, 1)
                _extend(examined, since, straddling.get("Items", []))
        examined = examined[:limit]
        wanted = set(types)
        events = [event for event in examined if not wanted or event.event_type in wanted]
        next_since = examined[-1].event_seq if examined else since
        return EventPage(events=events, next_since=next_since, has_more=next_since < run.last_event_seq)

    def _query_events(self, pk: str, seq_condition: str, bounds: Mapping[str, int], limit: int) -> Any:
        """One ascending Query of a run's stored commits whose `event_seq` meets the condition."""
        values = {":pk": {"S": pk}, **{name: {"N": str(value)} for name, value in bounds.items()}}
        with aws_errors():
            return self._client.query(
                TableName=self._events,
                KeyConditionExpression=f"pk = :pk AND event_seq {seq_condition}",
                ExpressionAttributeValues=values,
                Limit=limit,
                ScanIndexForward=True,
            )

    # ---- outputs kept in items of their own (domain.outputs) ---------------------------

    def put_output(self, tenant_id: str, run_id: str, value: object) -> dict[str, object]:
        """One put of a new item under the run's key (`#OUTPUT#<random id>`), or past
        S3_OUTPUT_BYTES compressed one S3 object (`outputs/<tenant>/<run>/<id>.json.z`; the
        bucket's lifecycle rule expires it with the history): written before the commit that
        records it, so a commit that loses its race leaves something unreferenced that expires."""
        body = encode(value)
        output_id = new_output_id()
        packed = zlib.compress(body, 6)
        if len(packed) > S3_OUTPUT_BYTES and self._s3 is not None:
            with aws_errors():
                self._s3().put_object(
                    Bucket=self._bucket, Key=_output_key(tenant_id, run_id, output_id), Body=packed
                )
            return ref(output_id, body, s3=True)
        item = {
            "pk": {"S": run_pk(tenant_id, run_id)},
            "sk": {"S": f"{OUTPUT_SK}{output_id}"},
            "value": {"B": packed},
            "expires_at": {"N": str(self._expires_at())},
        }
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise PayloadTooLarge(
                f"output of {len(body)} bytes is stored as {size} bytes, limit {MAX_ITEM_BYTES}"
            )
        with aws_errors():
            self._client.put_item(TableName=self._runs, Item=item)
        return ref(output_id, body)

    def read_outputs(self, tenant_id: str, run_id: str, refs: Sequence[Mapping[str, object]]) -> list[object]:
        values: list[object] = []
        pk = run_pk(tenant_id, run_id)
        for reference in refs:
            wanted = dict(reference)
            if in_s3(wanted):
                values.append(self._read_s3_output(tenant_id, run_id, wanted))
                continue
            key = {"pk": {"S": pk}, "sk": {"S": f"{OUTPUT_SK}{ref_id(wanted)}"}}
            with aws_errors():
                found = self._client.get_item(TableName=self._runs, Key=key, ConsistentRead=True).get("Item")
            if found is None:
                raise NotFound(f"run '{run_id}': an output it records is gone")
            values.append(json.loads(zlib.decompress(found["value"]["B"])))
        return values

    def _read_s3_output(self, tenant_id: str, run_id: str, wanted: dict[str, Any]) -> object:
        if self._s3 is None:
            raise NotFound(f"run '{run_id}': an output it records is in S3, which is not configured")
        try:
            response = self._s3().get_object(
                Bucket=self._bucket, Key=_output_key(tenant_id, run_id, ref_id(wanted))
            )
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"run '{run_id}': an output it records is gone") from exc
            raise translate(exc) from exc
        body = zlib.decompress(response["Body"].read())
        if hashlib.sha256(body).hexdigest() != wanted[REF].get("sha256"):
            raise NotFound(f"run '{run_id}': an output it records does not match its digest")
        return json.loads(body)

    def find_step_output(self, tenant_id: str, run_id: str, step_id: str) -> tuple[bool, object]:
        """The run's latest commit, then its stored commits newest first, a page at a time."""
        run = self.get(tenant_id, run_id)
        found = latest_output(run.latest_events, step_id)
        if found[0]:
            return found
        request: dict[str, Any] = {
            "TableName": self._events,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": run_pk(tenant_id, run_id)}},
            "ScanIndexForward": False,
            "Limit": _OUTPUT_SEARCH_PAGE,
        }
        while True:
            with aws_errors():
                page = self._client.query(**request)
            for item in page.get("Items", []):
                found = latest_output(stored_events(item), step_id)
                if found[0]:
                    return found
            if "LastEvaluatedKey" not in page:
                return False, None
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def active(self, due_before: str, limit: int) -> list[tuple[str, str]]:
        """One key-range Query per shard of the `active` index (keys only)."""
        found: list[tuple[str, str]] = []
        for shard in range(ACTIVE_SHARDS):
            start: dict[str, Any] | None = None
            while len(found) < limit:
                request: dict[str, Any] = {
                    "TableName": self._runs,
                    "IndexName": "active",
                    "KeyConditionExpression": "active_shard = :s AND active_due < :d",
                    "ExpressionAttributeValues": {":s": {"S": str(shard)}, ":d": {"S": due_before}},
                    "Limit": limit - len(found),
                }
                if start is not None:
                    request["ExclusiveStartKey"] = start
                with aws_errors():
                    page = self._client.query(**request)
                for item in page.get("Items", []):
                    tenant_id, _, run_id = item["pk"]["S"].rpartition("#")
                    found.append((tenant_id, run_id))
                start = page.get("LastEvaluatedKey")
                if start is None:
                    break
        return found[:limit]

    def list_approvals(
        self, tenant_id: str, keep: InboxFilter, *, limit: int = 50, start: Position | None = None
    ) -> tuple[list[PendingApproval], Position | None]:
        """A key-range Query of the tenant's partition of the sparse `approvals` index, oldest
        request first; the index projects what an inbox shows, so no run item is read. `keep`
        becomes a FilterExpression (a page may then take several requests, bounded)."""
        check_position(start, {"approval_tenant": tenant_id, "pk^": f"{tenant_id}#"}, _APPROVAL_KEYS)
        values: dict[str, Any] = {":t": {"S": tenant_id}}
        params: dict[str, Any] = {
            "TableName": self._runs,
            "IndexName": APPROVALS_INDEX,
            "KeyConditionExpression": "approval_tenant = :t",
            "ExpressionAttributeValues": values,
            "ScanIndexForward": True,
        }
        rules: list[str] = []
        if keep.assignee is not None:
            rules.append("contains(approval_assignees, :assignee)")
            values[":assignee"] = {"S": keep.assignee}
        if keep.unassigned:
            rules.append("attribute_not_exists(approval_assignees)")
        if keep.owner_id is not None:
            rules.append("owner_id = :owner")
            values[":owner"] = {"S": keep.owner_id}
        if rules:
            params["FilterExpression"] = " OR ".join(rules)
        page = query_page(self._client, params, limit=limit, key_fields=_APPROVAL_KEYS, start=start)
        found: list[PendingApproval] = []
        for item in page.items:
            fields = from_item(item)
            check_owner(tenant_id, fields.get("tenant_id"), "run")
            found.append(
                PendingApproval.from_request(
                    loads(fields.get("approval")) or {},
                    run_id=str(fields["pk"]).rpartition("#")[2],
                    tenant_id=tenant_id,
                    owner_id=str(fields.get("owner_id", "")),
                    workflow_id=fields.get("workflow_id"),
                    definition_name=str(fields.get("definition_name", "")),
                )
            )
        return found, page.next_position

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
        `by-tenant` (or `by-workflow`), then the page's run items in one BatchGetItem.

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
        runs = self._batch_get([item["pk"]["S"] for item in page.items])
        for run in runs:
            check_owner(tenant_id, run.tenant_id, "run")
        return runs, page.next_position

    def _batch_get(self, pks: Sequence[str]) -> list[Run]:
        """The run items for `pks`, in that order (a run deleted meanwhile is left out)."""
        found: dict[str, Run] = {}
        for offset in range(0, len(pks), _BATCH_GET_MAX):
            keys = [{"pk": {"S": pk}, "sk": {"S": RUN_SK}} for pk in pks[offset : offset + _BATCH_GET_MAX]]
            request: dict[str, Any] = {self._runs: {"Keys": keys}}
            for _ in attempts(_MAX_APPEND_TRIES, lambda n: full_jitter(n, 0.02, 1.0)):
                with aws_errors():
                    response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._runs, []):
                    found[item["pk"]["S"]] = self._run_from(item)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
        return [found[pk] for pk in pks if pk in found]


def events_item(pk: str, events: Sequence[RunEvent], *, expires_at: int) -> dict[str, Any]:
    """The events table item of one commit: keyed by its last sequence number, so a Query for
    `event_seq > since` starts with the commit that holds `since + 1`. The events are
    zlib-compressed binary past a few hundred bytes, as in the run item: the history is stored
    (and backed up) for the whole retention, and read and written by the KB."""
    body = _dump_events(events)
    item = to_item(
        {
            "pk": pk,
            "event_seq": events[-1].event_seq,
            "first_seq": events[0].event_seq,
            "events": body,
            "expires_at": expires_at,
        }
    )
    if len(body) > _PACK_ABOVE:
        item["events"] = {"B": zlib.compress(body.encode(), 6)}
    return item


def stored_events(item: Mapping[str, Any]) -> list[RunEvent]:
    """The events of one events-table item (compressed or, as stored before, plain JSON)."""
    value = item["events"]
    return _load_events(zlib.decompress(value["B"]).decode() if "B" in value else value["S"])


def _extend(
    examined: list[RunEvent], since: int, items: Sequence[Mapping[str, Any]], events: Sequence[RunEvent] = ()
) -> None:
    """Append the events of `items` (then `events`) that continue `examined` without a gap."""
    for event in [e for item in items for e in stored_events(item)] + list(events):
        seen = examined[-1].event_seq if examined else since
        if event.event_seq == seen + 1:
            examined.append(event)


def _output_key(tenant_id: str, run_id: str, output_id: str) -> str:
    return f"outputs/{tenant_id}/{run_id}/{output_id}.json.z"


def _dump_events(events: Sequence[RunEvent]) -> str:
    return dumps([event.model_dump(mode="json") for event in events])


def _load_events(value: str | None) -> list[RunEvent]:
    return [RunEvent.model_validate(event) for event in loads(value) or []]


def _contention_delay(_: int) -> float:
    # Full jitter keeps contending writers from retrying in lock step; the window stays small
    # because the loser only renumbers its events and writes again.
    return full_jitter(0, 0.02, 0.02)


__all__ = ["RunRepository", "events_item", "run_pk"]
