"""The run aggregate's record of truth: the run item, its pinned definition, and its event log.

Keys (see docs/storage.md):
- runs table        pk = "<tenant_id>#<run_id>", sk = "RUN" (and "DEFINITION" for runs stored
                    before snapshots were shared); the run item also carries the keys of the
                    table's indexes (run_index.index_keys), written by the same commit
- run events table  pk = "<tenant_id>#<run_id>", event_seq = the LAST sequence number of one
                    commit; the item holds all of that commit's events (first_seq..event_seq).

Beside it: definition snapshots (run_snapshots.py), outputs kept apart (run_outputs.py) and the
index Queries (run_index.py); the item shapes they share are in run_items.py.

The tenant is part of every key, so a read with another tenant's id finds nothing.

A commit is ONE conditional PutItem of the run item (no transaction, which DynamoDB bills
twice). The run item carries `last_event_seq` and, in `pending_events`, the events this commit
appended. The condition names the `last_event_seq` and `version` the writer read, so two
writers that read the same run cannot both commit: sequence numbers have no gaps and no
duplicates, and no write undoes another (a state change may append no events). A state change
that finds only `last_event_seq` moved (someone appended events) reads again and retries; one
that finds `version` moved has lost the race (StaleWrite). An append retries either way.

Events ride in the run item until a later commit copies them: `pending_events` holds every
committed event not yet in the events table, several commits' worth while the item stays within
one billed KB. A commit that would outgrow it first copies them to the events table as one item
(an idempotent conditional put, keyed by the last one's number), then writes the run item with
only its own. The run item is the record of truth until then, and a reader of the events merges
its `pending_events` after the stored ones (taking each number once), so a reader sees every
committed event at once and in order, whenever the copy happens and even when a process
crashed between the two writes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import MAX_ITEM_BYTES, check_owner, item_size
from workflows.adapters.run_index import index_keys
from workflows.adapters.run_items import (
    DEFINITION_SK,
    RUN_SK,
    events_item,
    read_run,
    run_from,
    run_item,
    run_key,
    run_pk,
    stored_events,
)
from workflows.adapters.run_snapshots import DefinitionSnapshots
from workflows.clock import Clock, iso, system_clock
from workflows.domain.backoff import attempts, full_jitter
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.run import EventPage, NewEvent, Run, RunEvent, RunStatus
from workflows.domain.transitions import Commit
from workflows.errors import NotFound, PayloadTooLarge, StaleWrite, Throttled

_MAX_APPEND_TRIES = 60
# Keys of one BatchGetItem.
_BATCH_GET = 100
# Commits this process has seen stored in the events table (pk, last event_seq): a writer that
# committed and copied its events does not check them again before its next commit.
_FLUSHED_MEMORY = 4096
# How far past a page's last event a stored item may end and still complete the page.
_COMMIT_MARGIN = 3
# The run item is billed per started KB: it carries events not yet copied to the events table
# (several commits' worth) while it stays within this.
_CARRY_ITEM_BYTES = 1024


def stored_run_item(run: Run, pending: Sequence[RunEvent] = (), *, expires_at: int) -> dict[str, Any]:
    """The run item as a commit writes it: the run's fields and its latest commit's events
    (run_items.run_item), and the keys the table's indexes read (run_index.index_keys)."""
    return {**run_item(run, pending, expires_at=expires_at), **index_keys(run)}


class RunRepository:
    def __init__(
        self,
        client: Any,
        runs_table: str,
        events_table: str,
        *,
        clock: Clock = system_clock,
        retention_days: int = 90,
        carry_item_bytes: int = _CARRY_ITEM_BYTES,
    ) -> None:
        self._client = client
        self._carry_item_bytes = carry_item_bytes
        self._runs = runs_table
        self._events = events_table
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._flushed: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._snapshots = DefinitionSnapshots(client, runs_table, clock=clock, retention_days=retention_days)

    def _expires_at(self) -> int:
        return int((self._clock() + self._retention).timestamp())

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
        digest, snapshot = self._snapshots.item(run.tenant_id, definition)
        run = run.model_copy(update={"definition_hash": digest})
        item = stored_run_item(run, expires_at=self._expires_at())
        # Both sizes are known before either write: a run that cannot be stored leaves nothing.
        for field, checked in (("inputs", item), ("definition", snapshot)):
            size = item_size(checked)
            if size > MAX_ITEM_BYTES:
                raise PayloadTooLarge(
                    f"{field}: the run would be stored as {size} bytes, limit {MAX_ITEM_BYTES}",
                    details=[{"field": field, "message": f"stored as {size} bytes, limit {MAX_ITEM_BYTES}"}],
                )
        self._snapshots.keep(run.tenant_id, digest, definition, snapshot)
        with aws_errors():
            self._client.put_item(
                TableName=self._runs,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )

    def commit(self, commit: Commit) -> Run:
        """Write `commit.run` over the run as read and append the commit's events, atomically.

        Raises StaleWrite when the run's state changed since it was read. Events appended
        meanwhile (`append_events`) are no change of state: the commit's events follow them.
        """
        read = commit.read
        current = read
        for _ in attempts(_MAX_APPEND_TRIES, _contention_delay):
            updated = commit.run.model_copy(
                update={
                    "version": current.version + 1,
                    "last_event_seq": current.last_event_seq + len(commit.events),
                    "updated_at": iso(self._clock()),
                }
            )
            old = self._write(current, updated, commit.events)
            if old is None:
                return updated
            if old.version != read.version:
                raise StaleWrite(f"run {read.run_id} changed (version {old.version}, read {read.version})")
            current = old  # only events were appended meanwhile: renumber and retry
        raise StaleWrite(f"run {read.run_id}: too much contention appending events")

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

        The events not yet in the events table ride in the run item (`pending_events`): the
        commit's own, after those earlier commits left there while the item stays within
        `carry_item_bytes` (one billed KB). When it would not, the earlier ones are copied to the
        events table first, as one item, and the commit keeps only its own. On success
        `updated.latest_events` holds the events the run item now carries.
        """
        condition = "last_event_seq = :seq AND version = :version"
        values: dict[str, Any] = {
            ":seq": {"N": str(current.last_event_seq)},
            ":version": {"N": str(current.version)},
        }
        numbered = self._numbered(current.last_event_seq + 1, events)
        carried = list(current.latest_events)
        item = stored_run_item(updated, [*carried, *numbered], expires_at=self._expires_at())
        if carried and item_size(item) > self._carry_item_bytes:
            # They leave the run item now: they must be stored first.
            self._store_events(current.tenant_id, current.run_id, carried)
            carried = []
            item = stored_run_item(updated, numbered, expires_at=self._expires_at())
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
                return run_from(old_item) if old_item else self.get(current.tenant_id, current.run_id)
            raise translate(exc) from exc
        updated.latest_events = [*carried, *numbered]
        return None

    def _store_events(self, tenant_id: str, run_id: str, events: Sequence[RunEvent]) -> None:
        """Copy committed events to the events table: one item, keyed by the last one's number,
        written once (a writer that lost its commit may have copied a shorter run of the same
        events; readers take each event once, in order: `_extend`)."""
        if not events:
            return
        pk = run_pk(tenant_id, run_id)
        last = events[-1].event_seq
        if (pk, last) in self._flushed:
            return
        item = events_item(pk, events, expires_at=self._expires_at())
        with aws_errors():
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
        return read_run(self._client, self._runs, tenant_id, run_id)

    def get_many(self, tenant_id: str, run_ids: Sequence[str]) -> dict[str, Run]:
        """One BatchGetItem (100 keys at most; keys DynamoDB leaves unprocessed are asked again)."""
        if len(run_ids) > _BATCH_GET:
            raise ValueError(f"at most {_BATCH_GET} runs per read")
        keys = [run_key(tenant_id, run_id) for run_id in dict.fromkeys(run_ids)]
        found: dict[str, Run] = {}
        for attempt in range(_MAX_APPEND_TRIES):
            if not keys:
                break
            if attempt:
                time.sleep(_contention_delay(attempt))
            with aws_errors():
                response = self._client.batch_get_item(
                    RequestItems={self._runs: {"Keys": keys, "ConsistentRead": True}}
                )
            for item in response.get("Responses", {}).get(self._runs, []):
                run = run_from(item)
                check_owner(tenant_id, run.tenant_id, "run")
                found[run.run_id] = run
            keys = response.get("UnprocessedKeys", {}).get(self._runs, {}).get("Keys", [])
        if keys:
            raise Throttled(f"{len(keys)} runs could not be read; try again")
        return found

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
                Key=run_key(tenant_id, run_id),
                ProjectionExpression="last_event_seq, #status, tenant_id",
                ExpressionAttributeNames={"#status": "status"},
            )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"run '{run_id}' not found")
        check_owner(tenant_id, item.get("tenant_id", {}).get("S"), "run")
        return int(item["last_event_seq"]["N"]), RunStatus(item["status"]["S"])

    def get_with_definition(self, tenant_id: str, run_id: str) -> tuple[Run, WorkflowDefinition]:
        """The run and its pinned definition in one strongly consistent Query (and, for a
        snapshot this process has not read yet, one GetItem of it)."""
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
        run = run_from(items[RUN_SK])
        check_owner(tenant_id, run.tenant_id, "run")
        if DEFINITION_SK in items:  # a run stored before snapshots were shared
            return run, WorkflowDefinition.model_validate_json(items[DEFINITION_SK]["definition"]["S"])
        if run.definition_hash is None:
            raise NotFound(f"run '{run_id}' not found")
        return run, self._snapshots.get(run.tenant_id, run.definition_hash)

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


def _extend(
    examined: list[RunEvent], since: int, items: Sequence[Mapping[str, Any]], events: Sequence[RunEvent] = ()
) -> None:
    """Append the events of `items` (then `events`) that continue `examined` without a gap."""
    for event in [e for item in items for e in stored_events(item)] + list(events):
        seen = examined[-1].event_seq if examined else since
        if event.event_seq == seen + 1:
            examined.append(event)


def _contention_delay(_: int) -> float:
    # Full jitter keeps contending writers from retrying in lock step; the window stays small
    # because the loser only renumbers its events and writes again.
    return full_jitter(0, 0.02, 0.02)


__all__ = ["RunRepository", "stored_run_item"]
