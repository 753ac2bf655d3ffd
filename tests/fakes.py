"""In-memory fakes of every port (workflows.ports), held to the adapters' rules.

The contract suite (tests/contract/test_ports.py) runs the same tests against each fake and
its AWS adapter on moto, so a rule a fake forgets fails there. Engine and service tests run on
these: no emulator to provision, so the suite stays fast.

`fake_parts` builds a composition root whose adapters are all fakes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import threading
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from workflows.adapters.dlq import FORGET_MARGIN_SEC
from workflows.adapters.dynamo import MAX_ITEM_BYTES
from workflows.clock import Clock, iso, system_clock
from workflows.domain.api_keys import ApiKeyRecord
from workflows.domain.approvals import InboxFilter, PendingApproval
from workflows.domain.artifacts import ArtifactMeta
from workflows.domain.corpus import CorpusDocument
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.dlq import DlqRow, truncate_error
from workflows.domain.follow import Connection, Follower, FollowLimits
from workflows.domain.idempotency import COMPLETED, IN_PROGRESS, Claim, IdempotencyRecord
from workflows.domain.ids import check_caller_user_id, check_tenant_id, key_digest
from workflows.domain.messages import QueuedMessage
from workflows.domain.outputs import S3_OUTPUT_BYTES, encode, latest_output, new_output_id, ref, ref_id
from workflows.domain.paging import Position
from workflows.domain.quotas import WindowCount
from workflows.domain.run import EventPage, NewEvent, Run, RunEvent, RunStatus
from workflows.domain.schedules import Schedule
from workflows.domain.secret_refs import Secret, SecretInfo, SecretUnavailable, pack, unpack
from workflows.domain.signals import Signal
from workflows.domain.transitions import Commit
from workflows.domain.workflows import ACTIVE, DELETED, WorkflowHead, WorkflowVersion
from workflows.errors import Conflict, InvalidCursor, LimitExceeded, NotFound, PayloadTooLarge, StaleWrite
from workflows.ports import DlqStore
from workflows.roots.parts import Parts
from workflows.settings import Settings

WINDOWS = {"min": 60, "day": 86_400}


def _page(
    items: list[Any], key: Any, limit: int, start: Position | None, scope: Mapping[str, str]
) -> tuple[list[Any], Position | None]:
    """Items after `start`, `limit` of them, and where to resume. A position names its listing's
    scope (the tenant, the workflow...), and one from another scope is refused, as the adapters
    refuse a position outside the caller's partition."""
    keys = [key(item) for item in items]
    offset = 0
    if start is not None:
        after = start.get("after")
        if dict(start) != {**scope, "after": after} or after not in keys:
            raise InvalidCursor("the cursor does not belong to this listing")
        offset = keys.index(after) + 1
    chosen = items[offset : offset + limit]
    more = offset + limit < len(items)
    return chosen, ({**scope, "after": key(chosen[-1])} if more and chosen else None)


class FakeRunLog:
    """RunLog: runs, their pinned definitions and their events. FakeRunOutputs and FakeRunIndex
    read the same runs and events, as the adapters read one table."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self.lock = threading.RLock()
        self.runs: dict[tuple[str, str], Run] = {}
        self.definitions: dict[tuple[str, str], WorkflowDefinition] = {}
        self.events: dict[tuple[str, str], list[RunEvent]] = {}

    def create(self, run: Run, definition: WorkflowDefinition) -> None:
        key = (run.tenant_id, run.run_id)
        with self.lock:
            if key in self.runs:
                raise StaleWrite("the item changed since it was read")
            self.definitions[key] = definition.model_copy(deep=True)
            self.runs[key] = run.model_copy(deep=True)
            self.events[key] = []

    def _numbered(self, first: int, events: Sequence[NewEvent]) -> list[RunEvent]:
        now = iso(self._clock())
        return [
            RunEvent(
                event_seq=first + offset,
                event_type=event.event_type.value,
                payload=copy.deepcopy(event.payload),
                step_id=event.step_id,
                created_at=now,
            )
            for offset, event in enumerate(events)
        ]

    def commit(self, commit: Commit) -> Run:
        run, events = commit.read, commit.events
        key = (run.tenant_id, run.run_id)
        with self.lock:
            stored = self.runs.get(key)
            if stored is None or stored.version != run.version:
                version = None if stored is None else stored.version
                raise StaleWrite(f"run {run.run_id} changed (version {version}, read {run.version})")
            numbered = self._numbered(stored.last_event_seq + 1, events)
            updated = commit.run.model_copy(
                update={
                    "version": stored.version + 1,
                    "last_event_seq": stored.last_event_seq + len(events),
                    "updated_at": iso(self._clock()),
                }
            )
            # The adapter's limit: one item holds the run and this commit's events.
            size = len(json.dumps([updated.model_dump(mode="json"), [e.model_dump() for e in numbered]]))
            if size > MAX_ITEM_BYTES:
                raise PayloadTooLarge(f"run {run.run_id}: the commit would store {size} bytes")
            self.runs[key] = updated
            self.events[key].extend(numbered)
            result = updated.model_copy(deep=True)
            result.latest_events = numbered
            return result

    def append_events(self, tenant_id: str, run_id: str, events: Sequence[NewEvent]) -> list[int]:
        key = (tenant_id, run_id)
        with self.lock:
            stored = self.runs.get(key)
            if stored is None:
                raise NotFound(f"run '{run_id}' not found")
            numbered = self._numbered(stored.last_event_seq + 1, events)
            self.runs[key] = stored.model_copy(update={"last_event_seq": stored.last_event_seq + len(events)})
            self.events[key].extend(numbered)
            return [event.event_seq for event in numbered]

    def get(self, tenant_id: str, run_id: str) -> Run:
        with self.lock:
            stored = self.runs.get((tenant_id, run_id))
            if stored is None:
                raise NotFound(f"run '{run_id}' not found")
            return stored.model_copy(deep=True)

    def get_many(self, tenant_id: str, run_ids: Sequence[str]) -> dict[str, Run]:
        with self.lock:
            found = (self.runs.get((tenant_id, run_id)) for run_id in run_ids)
            return {run.run_id: run.model_copy(deep=True) for run in found if run is not None}

    def event_head(self, tenant_id: str, run_id: str) -> tuple[int, RunStatus]:
        with self.lock:
            stored = self.runs.get((tenant_id, run_id))
            if stored is None:
                raise NotFound(f"run '{run_id}' not found")
            return stored.last_event_seq, stored.status

    def get_with_definition(self, tenant_id: str, run_id: str) -> tuple[Run, WorkflowDefinition]:
        with self.lock:
            run = self.get(tenant_id, run_id)
            return run, self.definitions[(tenant_id, run_id)].model_copy(deep=True)

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
        with self.lock:
            current = run if run is not None else self.get(tenant_id, run_id)
            examined = [e for e in self.events.get((tenant_id, run_id), []) if e.event_seq > since][:limit]
            wanted = set(types)
            events = [e.model_copy(deep=True) for e in examined if not wanted or e.event_type in wanted]
            next_since = examined[-1].event_seq if examined else since
            return EventPage(
                events=events, next_since=next_since, has_more=next_since < current.last_event_seq
            )


class FakeRunOutputs:
    """RunOutputStore: outputs kept apart, beside the runs of `log`."""

    def __init__(self, log: FakeRunLog) -> None:
        self._log = log
        self.outputs: dict[tuple[str, str, str], object] = {}

    def put_output(self, tenant_id: str, run_id: str, value: object) -> dict[str, object]:
        body = encode(value)
        packed = len(zlib.compress(body, 6))
        if packed > MAX_ITEM_BYTES and packed <= S3_OUTPUT_BYTES:
            raise PayloadTooLarge(f"an output of {len(body)} bytes cannot be stored")
        output_id = new_output_id()
        with self._log.lock:
            self.outputs[(tenant_id, run_id, output_id)] = copy.deepcopy(value)
        return ref(output_id, body, s3=packed > S3_OUTPUT_BYTES)

    def read_outputs(self, tenant_id: str, run_id: str, refs: Sequence[Mapping[str, object]]) -> list[object]:
        with self._log.lock:
            try:
                return [copy.deepcopy(self.outputs[(tenant_id, run_id, ref_id(dict(r)))]) for r in refs]
            except KeyError:
                raise NotFound(f"run '{run_id}': an output it records is gone") from None

    def find_step_output(self, tenant_id: str, run_id: str, step_id: str) -> tuple[bool, object]:
        with self._log.lock:
            found, output = latest_output(self._log.events.get((tenant_id, run_id), []), step_id)
        return found, copy.deepcopy(output)


class FakeRunIndex:
    """RunIndex: the runs of `log` as the table's indexes find them."""

    def __init__(self, log: FakeRunLog) -> None:
        self._log = log

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
        scope = {"tenant_id": tenant_id, "workflow_id": workflow_id or ""}
        after = None
        if start is not None:
            # A key-range position, as the index's: the run it names may be gone since, and one
            # outside the listing's time range is refused, as the adapter refuses it.
            after = start.get("after")
            if dict(start) != {**scope, "after": after} or not after:
                raise InvalidCursor("the cursor does not belong to this listing")
            if (created_after is not None and after <= f"{created_after}#~") or (
                created_before is not None and after >= created_before
            ):
                raise InvalidCursor("the cursor does not belong to this listing")
        with self._log.lock:
            keyed = sorted(
                (
                    (f"{run.created_at}#{run.run_id}", run)
                    for (tenant, _), run in self._log.runs.items()
                    if tenant == tenant_id
                    and (workflow_id is None or run.workflow_id == workflow_id)
                    and (not statuses or run.status.value in statuses)
                    and (created_after is None or run.created_at > created_after)
                    and (created_before is None or run.created_at < created_before)
                    and (owner_id is None or run.owner_id == owner_id)
                ),
                key=lambda entry: entry[0],
                reverse=True,
            )
            listed = [(key, run) for key, run in keyed if after is None or key < after]
            page = listed[:limit]
            position = {**scope, "after": page[-1][0]} if len(listed) > limit else None
            return [run.model_copy(deep=True) for _, run in page], position

    def active(self, due_before: str, limit: int, *, due_after: str | None = None) -> list[tuple[str, str]]:
        with self._log.lock:
            # As the sparse index holds them: runs owed a step, due at once ("0") or at the
            # deadline of a long wait.
            due = [
                (run.long_wait_deadline() or "0", key) for key, run in self._log.runs.items() if run.owed_step
            ]
        low = due_after if due_after is not None else ""
        high_ok = (
            (lambda when: when <= due_before) if due_after is not None else (lambda when: when < due_before)
        )
        return [key for when, key in due if low <= when and high_ok(when)][:limit]

    def list_approvals(
        self, tenant_id: str, keep: InboxFilter, *, limit: int = 50, start: Position | None = None
    ) -> tuple[list[PendingApproval], Position | None]:
        with self._log.lock:
            # As the sparse index holds them: only runs waiting for a decision, oldest request
            # first (then by run id).
            keyed = sorted(
                (
                    (f"{requested}#{run.run_id}", run)
                    for (tenant, _), run in self._log.runs.items()
                    if tenant == tenant_id and (requested := run.decision_requested_at()) is not None
                ),
                key=lambda entry: entry[0],
            )
        scope = {"tenant_id": tenant_id, "keep": "|".join(keep.scope())}
        after = ""
        if start is not None:
            # A key-range position, as DynamoDB's: the approval it names may be decided since.
            if set(start) != {*scope, "after"} or any(start[k] != v for k, v in scope.items()):
                raise InvalidCursor("the cursor does not belong to this listing")
            after = start["after"]
        waiting = [
            (sort_key, pending)
            for sort_key, run in keyed
            if sort_key > after
            and keep.keeps((pending := PendingApproval.of_run(run)).assignees, run.owner_id)
        ]
        page = waiting[:limit]
        more = len(waiting) > limit
        return [pending for _, pending in page], ({**scope, "after": page[-1][0]} if more else None)


@dataclass
class _Queued:
    message: QueuedMessage
    visible_at: datetime


class FakeSignalStore:
    """SignalStore in memory: signals by id and by name in time order, waiters by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.signals: dict[tuple[str, str], Signal] = {}
        self.waiting: dict[tuple[str, str], dict[str, int]] = {}

    def put(self, tenant_id: str, signal: Signal, *, expires_at: int) -> tuple[Signal, bool]:
        with self._lock:
            stored = self.signals.get((tenant_id, signal.signal_id))
            if stored is None:
                self.signals[(tenant_id, signal.signal_id)] = signal
                return signal, True
        if not stored.same_as(signal):
            raise Conflict(
                f"id: signal '{signal.signal_id}' was sent with another name, data or run",
                details=[{"field": "id", "message": "already names another signal"}],
            )
        return stored, False

    def get(self, tenant_id: str, signal_id: str) -> Signal | None:
        with self._lock:
            return self.signals.get((tenant_id, signal_id))

    def recent(self, tenant_id: str, name: str, since: str, limit: int) -> list[Signal]:
        with self._lock:
            found = [
                signal
                for (tenant, _), signal in self.signals.items()
                if tenant == tenant_id and signal.name == name and signal.sent_at >= since
            ]
        return sorted(found, key=lambda signal: (signal.sent_at, signal.signal_id))[:limit]

    def add_waiter(self, tenant_id: str, name: str, run_id: str, *, expires_at: int) -> None:
        with self._lock:
            self.waiting.setdefault((tenant_id, name), {})[run_id] = expires_at

    def waiters(
        self, tenant_id: str, name: str, *, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        with self._lock:
            runs = sorted(
                run for run in self.waiting.get((tenant_id, name), {}) if after is None or run > after
            )
        page = runs[:limit]
        return page, (page[-1] if len(runs) > limit else None)

    def remove_waiter(self, tenant_id: str, name: str, run_id: str) -> None:
        with self._lock:
            self.waiting.get((tenant_id, name), {}).pop(run_id, None)


class FakeQueue:
    """The dispatch queue: messages become visible after their delay, by the store's clock."""

    MAX_DELAY_SECONDS = 900

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.messages: list[_Queued] = []

    def send(self, message: QueuedMessage, *, delay_seconds: int = 0) -> None:
        delay = max(0, min(int(delay_seconds), self.MAX_DELAY_SECONDS))
        with self._lock:
            self.messages.append(_Queued(message, self._clock() + timedelta(seconds=delay)))

    def receive(self) -> list[QueuedMessage]:
        """Take every visible message (the caller processes and so deletes them)."""
        with self._lock:
            now = self._clock()
            ready = [q for q in self.messages if q.visible_at <= now]
            self.messages = [q for q in self.messages if q.visible_at > now]
        return [q.message for q in ready]

    def depth(self) -> int:
        return len(self.messages)


@dataclass
class _IdempotencyItem:
    tenant_id: str
    user_id: str
    status: str
    body_hash: str
    token: str
    expiration: int
    lease_expires_ms: int | None
    run_id: str | None = None


class FakeIdempotencyStore:
    def __init__(self, *, clock: Clock = system_clock, ttl: timedelta = timedelta(hours=24)) -> None:
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self.items: dict[str, _IdempotencyItem] = {}

    @staticmethod
    def _id(tenant_id: str, user_id: str, key: str) -> str:
        return f"{tenant_id}#{user_id}#{key_digest(key)}"

    def claim(self, tenant_id: str, user_id: str, key: str, body_hash: str, run_id: str) -> Claim:
        now = self._clock()
        now_s, now_ms = int(now.timestamp()), int(now.timestamp() * 1000)
        token = str(uuid.uuid4())
        with self._lock:
            existing = self.items.get(self._id(tenant_id, user_id, key))
            claimable = (
                existing is None
                or existing.expiration < now_s
                or (
                    existing.status == IN_PROGRESS
                    and existing.lease_expires_ms is not None
                    and existing.lease_expires_ms < now_ms
                )
            )
            if not claimable:
                assert existing is not None
                return Claim(won=False, token=token, existing=self._record(existing), run_id=existing.run_id)
            self.items[self._id(tenant_id, user_id, key)] = _IdempotencyItem(
                tenant_id,
                user_id,
                IN_PROGRESS,
                body_hash,
                token,
                int((now + self._ttl).timestamp()),
                None,
                run_id,
            )
            return Claim(won=True, token=token, run_id=run_id)

    def complete(self, tenant_id: str, user_id: str, key: str, body_hash: str, run_id: str) -> None:
        with self._lock:
            item = self.items.get(self._id(tenant_id, user_id, key))
            if item is None:
                expiration = int((self._clock() + self._ttl).timestamp())
                item = _IdempotencyItem(
                    tenant_id, user_id, COMPLETED, body_hash, "", expiration, None, run_id
                )
                self.items[self._id(tenant_id, user_id, key)] = item
            if item.run_id == run_id:
                item.status = COMPLETED

    def release(self, tenant_id: str, user_id: str, key: str, run_id: str) -> None:
        with self._lock:
            item = self.items.get(self._id(tenant_id, user_id, key))
            if item is not None and item.run_id == run_id and item.status == IN_PROGRESS:
                del self.items[self._id(tenant_id, user_id, key)]

    def get(self, tenant_id: str, user_id: str, key: str) -> IdempotencyRecord | None:
        with self._lock:
            item = self.items.get(self._id(tenant_id, user_id, key))
            if item is None or item.expiration < int(self._clock().timestamp()):
                return None
            return self._record(item)

    @staticmethod
    def _record(item: _IdempotencyItem) -> IdempotencyRecord:
        return IdempotencyRecord(
            status=item.status, body_hash=item.body_hash, token=item.token, run_id=item.run_id
        )


class FakeDefinitionStore:
    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.heads: dict[tuple[str, str], WorkflowHead] = {}
        self.versions: dict[tuple[str, str, int], WorkflowVersion] = {}
        self.names: set[tuple[str, str, int]] = set()

    def create(
        self, tenant_id: str, user_id: str, workflow_id: str, definition: WorkflowDefinition
    ) -> WorkflowHead:
        now = iso(self._clock())
        head = WorkflowHead(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            name=definition.name,
            description=definition.description,
            tags=definition.tags,
            latest_version=definition.version,
            status=ACTIVE,
            created_at=now,
            updated_at=now,
            created_by=user_id,
        )
        with self._lock:
            if (tenant_id, workflow_id) in self.heads:
                raise StaleWrite(f"workflow {workflow_id} changed while writing")
            self._write(head, definition, now, user_id)
        return head

    def add_version(self, head: WorkflowHead, user_id: str, definition: WorkflowDefinition) -> WorkflowHead:
        now = iso(self._clock())
        new = head.model_copy(
            update={
                "name": definition.name,
                "description": definition.description,
                "tags": definition.tags,
                "latest_version": definition.version,
                "updated_at": now,
            }
        )
        with self._lock:
            stored = self.heads.get((head.tenant_id, head.workflow_id))
            if stored is None or stored.latest_version != head.latest_version or stored.status != ACTIVE:
                raise StaleWrite(f"workflow {head.workflow_id} changed while writing")
            self._write(new, definition, now, user_id)
        return new

    def _write(self, head: WorkflowHead, definition: WorkflowDefinition, now: str, user_id: str) -> None:
        guard = (head.tenant_id, definition.name, definition.version)
        if guard in self.names:
            raise Conflict(
                f"a workflow named '{definition.name}' version {definition.version} already exists",
                details=[{"field": "name", "message": "name and version already taken"}],
            )
        self.names.add(guard)
        self.heads[(head.tenant_id, head.workflow_id)] = head
        self.versions[(head.tenant_id, head.workflow_id, definition.version)] = WorkflowVersion(
            workflow_id=head.workflow_id,
            version=definition.version,
            name=definition.name,
            description=definition.description,
            created_at=now,
            created_by=user_id,
            definition=definition.model_copy(deep=True),
        )

    def mark_deleted(self, tenant_id: str, workflow_id: str) -> WorkflowHead:
        now = iso(self._clock())
        with self._lock:
            head = self.heads.get((tenant_id, workflow_id))
            if head is None:
                raise NotFound(f"workflow '{workflow_id}' not found")
            if head.status == DELETED:
                return head
            deleted = head.model_copy(update={"status": DELETED, "deleted_at": now, "updated_at": now})
            self.heads[(tenant_id, workflow_id)] = deleted
            return deleted

    def get_head(self, tenant_id: str, workflow_id: str) -> WorkflowHead:
        head = self.heads.get((tenant_id, workflow_id))
        if head is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        return head

    def get_version(self, tenant_id: str, workflow_id: str, version: int) -> WorkflowVersion:
        stored = self.versions.get((tenant_id, workflow_id, version))
        if stored is None:
            raise NotFound(f"workflow '{workflow_id}' has no version {version}")
        return stored

    def list_heads(
        self,
        tenant_id: str,
        *,
        include_deleted: bool,
        limit: int,
        start: Position | None,
        created_by: str | None = None,
    ) -> tuple[list[WorkflowHead], Position | None]:
        heads = [
            head
            for (tenant, _), head in self.heads.items()
            if tenant == tenant_id
            and (include_deleted or head.status == ACTIVE)
            and (created_by is None or head.created_by == created_by)
        ]
        heads.sort(key=lambda h: (h.created_at, h.workflow_id), reverse=True)
        return _page(
            heads, lambda h: f"{h.created_at}#{h.workflow_id}", limit, start, {"tenant_id": tenant_id}
        )

    def list_versions(
        self, tenant_id: str, workflow_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[WorkflowVersion], Position | None]:
        self.get_head(tenant_id, workflow_id)
        versions = [
            v.model_copy(update={"definition": None})
            for (tenant, wid, _), v in self.versions.items()
            if tenant == tenant_id and wid == workflow_id
        ]
        versions.sort(key=lambda v: v.version, reverse=True)
        scope = {"tenant_id": tenant_id, "workflow_id": workflow_id}
        return _page(versions, lambda v: str(v.version), limit, start, scope)


class FakeQuotaStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        # Execution slots as the table keeps them: a count, and the runs listed as holding one.
        self.slot_counts: dict[str, int] = {}
        self.slots: dict[str, set[str]] = {}
        self.healed: dict[str, int] = {}

    def _count(self, counter: str, window: str, limit: int, now: datetime) -> WindowCount:
        length = WINDOWS[window]
        moment = int(now.timestamp())
        start = moment - moment % length
        reset = start + length - moment
        key = f"{counter}#{window}#{start}"
        with self._lock:
            used = self.counters.get(key, 0)
            if used >= limit:
                return WindowCount(False, limit, limit, reset)
            self.counters[key] = used + 1
            return WindowCount(True, limit, used + 1, reset)

    def count(self, tenant_id: str, user_id: str, window: str, limit: int, now: datetime) -> WindowCount:
        return self._count(f"submit#{tenant_id}#{user_id}", window, limit, now)

    def count_fire(self, tenant_id: str, limit: int, now: datetime) -> WindowCount:
        return self._count(f"fires#{tenant_id}", "day", limit, now)

    def count_signal(self, tenant_id: str, limit: int, now: datetime) -> WindowCount:
        return self._count(f"signals#{tenant_id}", "min", limit, now)

    def uncount(self, tenant_id: str, user_id: str, window: str, now: datetime) -> None:
        length = WINDOWS[window]
        moment = int(now.timestamp())
        key = f"submit#{tenant_id}#{user_id}#{window}#{moment - moment % length}"
        with self._lock:
            if self.counters.get(key, 0) > 0:
                self.counters[key] -= 1

    def take_slot(self, tenant_id: str, run_id: str, limit: int) -> bool:
        with self._lock:
            holders = self.slots.setdefault(tenant_id, set())
            if run_id in holders:
                return True
            if self.slot_counts.get(tenant_id, 0) >= limit:
                return False
            self.slot_counts[tenant_id] = self.slot_counts.get(tenant_id, 0) + 1
            holders.add(run_id)
            return True

    def release_slot(self, tenant_id: str, run_id: str) -> None:
        with self._lock:
            holders = self.slots.setdefault(tenant_id, set())
            if run_id in holders:
                holders.discard(run_id)
                self.slot_counts[tenant_id] = self.slot_counts.get(tenant_id, 0) - 1

    def slot_holders(self, tenant_id: str) -> tuple[int, set[str]]:
        with self._lock:
            return self.slot_counts.get(tenant_id, 0), set(self.slots.get(tenant_id, set()))

    def recount_slots(self, tenant_id: str, counted: int, holding: int) -> bool:
        with self._lock:
            if self.slot_counts.get(tenant_id, 0) != counted:
                return False
            self.slot_counts[tenant_id] = holding
            return True

    def healed_at(self, tenant_id: str) -> int | None:
        return self.healed.get(tenant_id)

    def mark_healed(self, tenant_id: str, previous: int | None, now: int) -> bool:
        with self._lock:
            if self.healed.get(tenant_id) != previous:
                return False
            self.healed[tenant_id] = now
            return True


class FakeShareStore:
    """The quotas table's fair-share items (adapters.quotas): step-rate clocks and permits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clocks: dict[str, float] = {}
        self.permits: dict[str, dict[str, float]] = {}
        self.refused: list[tuple[str, str]] = []

    def reserve(self, key: str, cost_seconds: float, now: float) -> float:
        with self._lock:
            start = max(self.clocks.get(key, now), now)
            self.clocks[key] = start + cost_seconds
            return start

    def charge(self, key: str, cost_seconds: float, now: float) -> None:
        with self._lock:
            self.clocks[key] = self.clocks.get(key, now) + cost_seconds

    def acquire(self, pool: str, holder: str, limit: int, lease_until: float, now: float) -> bool:
        with self._lock:
            held = self.permits.setdefault(pool, {})
            if holder not in held and len(held) >= limit:
                for name in [name for name, until in held.items() if until <= now]:
                    del held[name]
            if holder in held or len(held) < limit:
                held[holder] = lease_until
                return True
            self.refused.append((pool, holder))
            return False

    def release(self, pool: str, holder: str) -> None:
        with self._lock:
            self.permits.setdefault(pool, {}).pop(holder, None)


class FakeScheduleStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[tuple[str, str], Schedule] = {}
        self.fire_times: dict[tuple[str, str], str] = {}

    def create(self, schedule: Schedule, *, limit: int) -> bool:
        with self._lock:
            if (schedule.tenant_id, schedule.schedule_id) in self.items:
                raise StaleWrite("the item changed since it was read")
            if sum(1 for tenant, _ in self.items if tenant == schedule.tenant_id) >= limit:
                return False
            self.items[(schedule.tenant_id, schedule.schedule_id)] = schedule.model_copy(deep=True)
            return True

    def get(self, tenant_id: str, schedule_id: str) -> Schedule:
        stored = self.items.get((tenant_id, schedule_id))
        if stored is None:
            raise NotFound(f"schedule '{schedule_id}' not found")
        return stored.model_copy(deep=True)

    def list(
        self, tenant_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[Schedule], Position | None]:
        schedules = sorted(
            (s for (t, _), s in self.items.items() if t == tenant_id), key=lambda s: s.schedule_id
        )
        return _page(schedules, lambda s: s.schedule_id, limit, start, {"tenant_id": tenant_id})

    def update(self, old: Schedule, new: Schedule) -> None:
        with self._lock:
            stored = self.items.get((old.tenant_id, old.schedule_id))
            if stored is None or stored.revision != old.revision:
                raise StaleWrite(f"schedule '{old.schedule_id}' changed since it was read")
            # Only the settings and bookkeeping change: a fire recorded meanwhile is kept.
            self.items[(new.tenant_id, new.schedule_id)] = new.model_copy(
                update={"last_fire": stored.last_fire}
            )

    def delete(self, tenant_id: str, schedule_id: str) -> None:
        with self._lock:
            self.items.pop((tenant_id, schedule_id), None)

    def record_fire(
        self, tenant_id: str, schedule_id: str, scheduled_time: str, fire: Mapping[str, object]
    ) -> bool:
        with self._lock:
            stored = self.items.get((tenant_id, schedule_id))
            recorded = self.fire_times.get((tenant_id, schedule_id))
            if stored is None or (recorded is not None and recorded > scheduled_time):
                return False
            self.fire_times[(tenant_id, schedule_id)] = scheduled_time
            self.items[(tenant_id, schedule_id)] = stored.model_copy(update={"last_fire": dict(fire)})
            return True


class FakeScheduleTriggers:
    def __init__(self) -> None:
        self.triggers: dict[str, tuple[Schedule, datetime | None]] = {}

    def put(self, schedule: Schedule, *, start_date: datetime | None, create: bool) -> None:
        if create and schedule.schedule_id in self.triggers:
            raise Conflict(f"schedule '{schedule.schedule_id}' already exists")
        if not create and schedule.schedule_id not in self.triggers:
            raise NotFound(f"schedule '{schedule.schedule_id}' not found")
        self.triggers[schedule.schedule_id] = (schedule, start_date)

    def delete(self, schedule_id: str) -> None:
        self.triggers.pop(schedule_id, None)


class FakeArtifactStore:
    def __init__(self, *, clock: Clock = system_clock, retention_days: int = 90) -> None:
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self.metas: dict[tuple[str, str, str], ArtifactMeta] = {}
        self.contents: dict[str, bytes] = {}

    def save(
        self,
        tenant_id: str,
        run_id: str,
        *,
        step_id: str | None,
        name: str,
        content: bytes,
        mime_type: str | None = "application/octet-stream",
        artifact_id: str | None = None,
    ) -> ArtifactMeta:
        artifact_id = artifact_id or str(uuid.uuid4())
        key = (tenant_id, run_id, artifact_id)
        if key in self.metas:
            return self.metas[key]
        now = self._clock()
        meta = ArtifactMeta(
            artifact_id=artifact_id,
            tenant_id=tenant_id,
            run_id=run_id,
            step_id=step_id,
            name=name,
            size_bytes=len(content),
            mime_type=mime_type or "application/octet-stream",
            sha256=hashlib.sha256(content).hexdigest(),
            created_at=iso(now),
            s3_key=f"{tenant_id}/{run_id}/{artifact_id}",
            expires_at=int((now + self._retention).timestamp()),
        )
        self.metas[key] = meta
        self.contents[meta.s3_key] = content
        return meta

    def list(self, tenant_id: str, run_id: str) -> list[ArtifactMeta]:
        found = [m for (t, r, _), m in self.metas.items() if t == tenant_id and r == run_id]
        return sorted(found, key=lambda m: (m.created_at, m.artifact_id))

    def get(self, tenant_id: str, run_id: str, artifact_id: str) -> ArtifactMeta:
        meta = self.metas.get((tenant_id, run_id, artifact_id))
        if meta is None:
            raise NotFound(f"artifact '{artifact_id}' not found")
        return meta

    def presigned_url(self, meta: ArtifactMeta, expires_in: int = 300) -> str:
        return f"http://127.0.0.1:9/fake-s3/{meta.s3_key}?X-Amz-Expires={expires_in}"

    def read(self, meta: ArtifactMeta, *, max_bytes: int = 10 * 1024 * 1024) -> bytes:
        return self.contents[meta.s3_key][:max_bytes]


class FakeCorpusStore:
    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self.documents: dict[tuple[str, str], CorpusDocument] = {}

    def add(
        self, tenant_id: str, content: str, metadata: dict[str, Any], doc_id: str | None = None
    ) -> CorpusDocument:
        document = CorpusDocument(
            doc_id=doc_id or str(uuid.uuid4()),
            content=content,
            metadata=metadata,
            created_at=iso(self._clock()),
        )
        self.documents[(tenant_id, document.doc_id)] = document
        return document

    def get(self, tenant_id: str, doc_id: str) -> CorpusDocument:
        document = self.documents.get((tenant_id, doc_id))
        if document is None:
            raise NotFound(f"document '{doc_id}' not found")
        return document

    def delete(self, tenant_id: str, doc_id: str) -> None:
        if self.documents.pop((tenant_id, doc_id), None) is None:
            raise NotFound(f"document '{doc_id}' not found")

    def page(
        self, tenant_id: str, *, limit: int, after: str | None = None
    ) -> tuple[list[CorpusDocument], str | None]:
        ids = sorted(d for (t, d) in self.documents if t == tenant_id and (after is None or d > after))
        chosen = ids[:limit]
        more = len(ids) > limit
        return [self.documents[(tenant_id, d)] for d in chosen], (chosen[-1] if more and chosen else None)

    def all_for_search(self, tenant_id: str) -> list[CorpusDocument]:
        return [d for (t, _), d in sorted(self.documents.items()) if t == tenant_id]


def due_rows(store: DlqStore, limit: int = 100) -> list[DlqRow]:
    """Every listed tenant's due rows, tenant by tenant (what a test expects to be due)."""
    return [row for tenant_id in store.pending_tenants() for row in store.due(tenant_id, limit)]


class FakeDlqStore:
    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.rows: dict[str, DlqRow] = {}
        # As the adapter's registry item: tenant -> when a row of it was last made pending.
        self.registry: dict[str, float] = {}

    def _register(self, tenant_id: str) -> None:
        self.registry[tenant_id] = self._clock().timestamp()

    def add(self, row: DlqRow) -> None:
        with self._lock:
            if row.status == "pending":
                self._register(row.tenant_id)
            if row.id in self.rows:
                raise Conflict(f"webhook dlq row '{row.id}' already exists")
            self.rows[row.id] = row.model_copy(deep=True)

    def get(self, tenant_id: str, row_id: str) -> DlqRow:
        row = self.rows.get(row_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"webhook dlq row '{row_id}' not found")
        return row.model_copy(deep=True)

    def pending_tenants(self) -> list[str]:
        return sorted(self.registry)

    def due(self, tenant_id: str, limit: int) -> list[DlqRow]:
        now = self._clock().timestamp()
        due = [
            r
            for r in self.rows.values()
            if r.tenant_id == tenant_id and r.status == "pending" and r.next_attempt_at <= now
        ]
        return [r.model_copy(deep=True) for r in sorted(due, key=lambda r: r.next_attempt_at)[:limit]]

    def forget_if_empty(self, tenant_id: str) -> bool:
        with self._lock:
            if any(r.tenant_id == tenant_id and r.status == "pending" for r in self.rows.values()):
                return False
            touched = self.registry.get(tenant_id)
            if touched is None or touched >= self._clock().timestamp() - FORGET_MARGIN_SEC:
                return False
            del self.registry[tenant_id]
            return True

    def list_for_tenant(
        self,
        tenant_id: str,
        *,
        statuses: Sequence[str] = (),
        run_id: str | None = None,
        limit: int = 50,
        start: Position | None = None,
    ) -> tuple[list[DlqRow], Position | None]:
        rows = [
            r
            for r in self.rows.values()
            if r.tenant_id == tenant_id
            and (not statuses or r.status in statuses)
            and (run_id is None or r.run_id == run_id)
        ]
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return _page(rows, lambda r: r.id, limit, start, {"tenant_id": tenant_id})

    def _lease_free(self, row: DlqRow, now: float) -> bool:
        return row.lease_expires_at is None or row.lease_expires_at < now

    def claim(self, row: DlqRow, lease_seconds: float) -> DlqRow | None:
        now = self._clock()
        with self._lock:
            stored = self.rows.get(row.id)
            if (
                stored is None
                or stored.status != "pending"
                or not self._lease_free(stored, now.timestamp())
                or stored.attempts != row.attempts
            ):
                return None
            claimed = stored.model_copy(
                update={"lease_expires_at": round(now.timestamp() + lease_seconds, 3), "updated_at": iso(now)}
            )
            self.rows[row.id] = claimed
            return claimed.model_copy(deep=True)

    def claim_for_replay(self, tenant_id: str, row_id: str, lease_seconds: float) -> DlqRow:
        now = self._clock()
        with self._lock:
            self._register(tenant_id)
            stored = self.get(tenant_id, row_id)
            if not self._lease_free(stored, now.timestamp()):
                raise Conflict(f"webhook dlq row '{row_id}' is being delivered right now")
            claimed = stored.model_copy(
                update={
                    "status": "pending",
                    "lease_expires_at": round(now.timestamp() + lease_seconds, 3),
                    "updated_at": iso(now),
                }
            )
            self.rows[row_id] = claimed
            return claimed.model_copy(deep=True)

    def _update(self, row: DlqRow, **changes: Any) -> DlqRow:
        with self._lock:
            stored = self.rows.get(row.id)
            if stored is None or stored.lease_expires_at != row.lease_expires_at:
                # As the adapter: its conditional update fails and is translated to StaleWrite.
                raise StaleWrite(f"webhook dlq row '{row.id}' lease was lost")
            updated = stored.model_copy(
                update={**changes, "lease_expires_at": None, "updated_at": iso(self._clock())}
            )
            self.rows[row.id] = updated
            return updated.model_copy(deep=True)

    def mark_delivered(self, row: DlqRow) -> DlqRow:
        return self._update(row, status="delivered", attempts=row.attempts + 1, last_error=None)

    def reschedule(self, row: DlqRow, next_attempt_at: float, error: str) -> DlqRow:
        return self._update(
            row, attempts=row.attempts + 1, next_attempt_at=next_attempt_at, last_error=truncate_error(error)
        )

    def mark_exhausted(self, row: DlqRow, error: str) -> DlqRow:
        return self._update(
            row, status="exhausted", attempts=row.attempts + 1, last_error=truncate_error(error)
        )


class FakeApiKeyStore:
    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self.records: dict[str, ApiKeyRecord] = {}

    def create(
        self,
        tenant_id: str,
        user_id: str,
        roles: Sequence[str],
        *,
        name: str | None = None,
        created_by: str | None = None,
        expires_at: int | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        check_tenant_id(tenant_id)
        check_caller_user_id(user_id)
        key = "wfk_" + secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            key_id=hashlib.sha256(key.encode()).hexdigest(),
            tenant_id=tenant_id,
            user_id=user_id,
            roles=tuple(roles),
            created_at=iso(self._clock()),
            name=name,
            created_by=created_by,
            expires_at=expires_at,
        )
        self.records[record.key_id] = record
        return key, record

    def lookup(self, key: str) -> ApiKeyRecord | None:
        return self.records.get(hashlib.sha256(key.encode()).hexdigest())

    def get(self, tenant_id: str, key_id: str) -> ApiKeyRecord:
        record = self.records.get(key_id)
        if record is None or record.tenant_id != tenant_id:
            raise NotFound(f"API key '{key_id}' not found")
        return record

    def revoke(self, tenant_id: str, key_id: str, revoked_by: str) -> ApiKeyRecord:
        record = self.get(tenant_id, key_id)
        if record.revoked_at is None:
            from dataclasses import replace

            record = replace(record, revoked_at=iso(self._clock()), revoked_by=revoked_by)
            self.records[key_id] = record
        return record

    def list_for_tenant(
        self, tenant_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[ApiKeyRecord], Position | None]:
        records = sorted(
            (r for r in self.records.values() if r.tenant_id == tenant_id),
            key=lambda r: (r.created_at, r.key_id),
            reverse=True,
        )
        return _page(records, lambda r: r.key_id, limit, start, {"tenant_id": tenant_id})


@dataclass
class FakeSecretStore:
    # As SSM holds them: the stored form, host limits and value together.
    values: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, tenant_id: str, name: str) -> Secret:
        found = self.values.get((tenant_id, name))
        if found is None:
            raise SecretUnavailable(name)
        return unpack(found)

    def put(
        self, tenant_id: str, name: str, value: str, allowed_hosts: tuple[str, ...] | None = None
    ) -> None:
        self.values[(tenant_id, name)] = pack(Secret(value, allowed_hosts))

    def delete(self, tenant_id: str, name: str) -> None:
        if self.values.pop((tenant_id, name), None) is None:
            raise NotFound(f"secret '{name}' not found")

    def listing(self, tenant_id: str) -> list[SecretInfo]:
        return [
            SecretInfo(name, unpack(stored).allowed_hosts)
            for (tenant, name), stored in sorted(self.values.items())
            if tenant == tenant_id
        ]


class FakeFollowers:
    """FollowerStore: the same bounds and conditions as FollowersRepository, in memory."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.runs: dict[tuple[str, str], dict[str, Follower]] = {}
        self.connections: dict[str, Connection] = {}
        self.tenants: dict[str, int] = {}
        self.batch_reads: list[int] = []

    def add(self, follower: Follower, limits: FollowLimits, *, now: float) -> None:
        key = (follower.tenant_id, follower.run_id)
        with self.lock:
            if self.tenants.get(follower.tenant_id, 0) >= limits.per_tenant:
                raise LimitExceeded("the tenant follows runs over too many connections already")
            followers = self.runs.setdefault(key, {})
            if len(followers) >= limits.per_run or follower.connection_id in followers:
                raise LimitExceeded("the run has too many followers already")
            if follower.connection_id in self.connections:
                raise Conflict("the connection follows a run already")
            followers[follower.connection_id] = follower
            self.connections[follower.connection_id] = Connection(
                follower.connection_id, follower.tenant_id, follower.run_id
            )
            self.tenants[follower.tenant_id] = self.tenants.get(follower.tenant_id, 0) + 1

    def remove(self, connection_id: str) -> Connection | None:
        with self.lock:
            connection = self.connections.pop(connection_id, None)
            if connection is None:
                return None
            self.runs.get((connection.tenant_id, connection.run_id), {}).pop(connection_id, None)
            self.tenants[connection.tenant_id] = max(0, self.tenants.get(connection.tenant_id, 0) - 1)
            return connection

    def connection(self, connection_id: str) -> Connection | None:
        return self.connections.get(connection_id)

    def followers(self, tenant_id: str, run_id: str, *, consistent: bool = True) -> list[Follower]:
        with self.lock:
            return sorted(self.runs.get((tenant_id, run_id), {}).values(), key=lambda f: f.connection_id)

    def followed(self, runs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Follower]]:
        with self.lock:
            wanted = list(dict.fromkeys(runs))
            self.batch_reads.append(len(wanted))
            return {key: self.followers(*key) for key in wanted if self.runs.get(key)}

    def _update(self, follower: Follower, **changes: Any) -> bool:
        followers = self.runs.get((follower.tenant_id, follower.run_id), {})
        current = followers.get(follower.connection_id)
        if current is None:
            return False
        followers[follower.connection_id] = replace(current, **changes)
        return True

    def ready(self, follower: Follower) -> bool:
        with self.lock:
            return self._update(follower, ready=True)

    def claim(self, follower: Follower, *, now: float, until: float) -> bool:
        with self.lock:
            current = self.runs.get((follower.tenant_id, follower.run_id), {}).get(follower.connection_id)
            if current is None or current.since != follower.since or current.lease_until >= now:
                return False
            if not current.ready:
                return False
            return self._update(follower, lease_until=until)

    def advance(self, follower: Follower, since: int) -> bool:
        with self.lock:
            current = self.runs.get((follower.tenant_id, follower.run_id), {}).get(follower.connection_id)
            if current is None or current.since != follower.since:
                return False
            return self._update(follower, since=since, lease_until=0.0)


class FakeConnections:
    """ConnectionPoster: the frames posted to each connection, decoded; `gone` connections
    refuse them as API Gateway does (GoneException)."""

    def __init__(self) -> None:
        self.frames: dict[str, list[dict[str, Any]]] = {}
        self.gone: set[str] = set()
        self.closed: list[str] = []
        self.on_post: Any = None

    def post(self, connection_id: str, data: bytes) -> bool:
        if connection_id in self.gone:
            return False
        assert len(data) <= 128 * 1024
        self.frames.setdefault(connection_id, []).append(json.loads(data))
        if self.on_post is not None:
            hook, self.on_post = self.on_post, None
            hook()
        return True

    def close(self, connection_id: str) -> None:
        self.closed.append(connection_id)
        self.gone.add(connection_id)

    def seqs(self, connection_id: str) -> list[int]:
        return [
            event["event_seq"]
            for frame in self.frames.get(connection_id, [])
            if frame["type"] == "events"
            for event in frame["events"]
        ]


class NoAws:
    """Stands for a boto3 client in a root on fakes: any use is a test bug, and must never
    become a request to AWS (tests send packets to loopback only)."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a test on fakes used the {self._service} client ({name}); use moto_container")


def fake_parts(settings: Settings, *, clock: Clock = system_clock) -> Parts:
    """A composition root whose adapters are all in-memory fakes (the HTTP deliverer stays
    real: webhook tests send to receivers on 127.0.0.1)."""
    clients = {name: NoAws(name) for name in ("dynamodb", "sqs", "s3", "ssm")}
    parts = Parts(settings, clock=clock, **clients)
    parts.give(scheduler_client=NoAws("scheduler"))
    runs = FakeRunLog(clock=clock)
    fakes = {
        "runs": runs,
        "run_outputs": FakeRunOutputs(runs),
        "run_index": FakeRunIndex(runs),
        "queue": FakeQueue(clock=clock),
        "idempotency": FakeIdempotencyStore(clock=clock),
        "definitions": FakeDefinitionStore(clock=clock),
        "quotas": FakeQuotaStore(),
        "share_store": FakeShareStore(),
        "schedules": FakeScheduleStore(),
        "scheduler": FakeScheduleTriggers(),
        "artifacts": FakeArtifactStore(clock=clock, retention_days=settings.run_retention_days),
        "corpus": FakeCorpusStore(clock=clock),
        "dlq": FakeDlqStore(clock=clock),
        "api_keys": FakeApiKeyStore(clock=clock),
        "secrets": FakeSecretStore(),
        "signals": FakeSignalStore(),
        "followers": FakeFollowers(),
        "connections": FakeConnections(),
    }
    parts.give(**fakes)
    return parts
