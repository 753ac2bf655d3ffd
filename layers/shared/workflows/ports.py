"""The ports: what the engine and the services need from the outside world, as Protocols.

Each has an AWS adapter in `workflows.adapters` (DynamoDB, SQS, EventBridge Scheduler, S3,
SSM, HTTP) and an in-memory fake in `tests/fakes.py`; one parametrised contract suite
(`tests/contract/test_ports.py`) holds both to the same rules. The composition roots in
`workflows.roots` choose which one a function gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: a function imports the domain modules it uses itself
    from workflows.domain.api_keys import ApiKeyRecord
    from workflows.domain.approvals import InboxFilter, PendingApproval
    from workflows.domain.artifacts import ArtifactMeta
    from workflows.domain.corpus import CorpusDocument
    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.delivery import DeliveryResult
    from workflows.domain.dlq import DlqRow
    from workflows.domain.follow import Connection, Follower, FollowLimits
    from workflows.domain.idempotency import Claim, IdempotencyRecord
    from workflows.domain.json import JsonObject, JsonValue
    from workflows.domain.messages import QueuedMessage
    from workflows.domain.paging import Position
    from workflows.domain.quotas import WindowCount
    from workflows.domain.run import EventPage, NewEvent, Run, RunStatus
    from workflows.domain.schedules import Schedule
    from workflows.domain.secret_refs import Secret, SecretInfo
    from workflows.domain.signals import Signal
    from workflows.domain.transitions import Commit
    from workflows.domain.workflows import WorkflowHead, WorkflowVersion


class RunLog(Protocol):
    """A run's record of truth: the run item with its pinned definition and its event log, moved
    on by one conditional commit at a time (docs/storage.md)."""

    def create(self, run: Run, definition: WorkflowDefinition) -> None: ...

    def commit(self, commit: Commit) -> Run:
        """Store `commit.run` over the run as read (`commit.read`) with its events, in one
        conditional write; the run as stored (its new version, its events numbered). StaleWrite
        if the run moved since it was read (events appended meanwhile are no move: the commit's
        events follow them)."""

    def append_events(self, tenant_id: str, run_id: str, events: Sequence[NewEvent]) -> list[int]: ...

    def get(self, tenant_id: str, run_id: str) -> Run: ...

    def get_with_definition(self, tenant_id: str, run_id: str) -> tuple[Run, WorkflowDefinition]: ...

    def get_many(self, tenant_id: str, run_ids: Sequence[str]) -> dict[str, Run]:
        """The runs found among `run_ids` (at most 100), by id, read consistently."""

    def list_events(
        self,
        tenant_id: str,
        run_id: str,
        *,
        since: int = 0,
        limit: int = 100,
        types: Sequence[str] = (),
        run: Run | None = None,
    ) -> EventPage: ...

    def event_head(self, tenant_id: str, run_id: str) -> tuple[int, RunStatus]:
        """The run's `last_event_seq` and status, from its item alone: what a waiting events
        read checks between reads (eventually consistent: it may lag a commit briefly, never
        run ahead of one). NotFound as `get`."""
        ...


class RunOutputStore(Protocol):
    """Step outputs too big for the run item, kept apart and named by references
    (domain.outputs), and the outputs of steps the run item no longer remembers."""

    def put_output(self, tenant_id: str, run_id: str, value: object) -> dict[str, object]:
        """Store an output too big for the run item in an item of its own, before the commit
        that records it; returns the reference to record instead (domain.outputs.ref).
        PayloadTooLarge when it cannot be stored at all."""
        ...

    def read_outputs(self, tenant_id: str, run_id: str, refs: Sequence[Mapping[str, object]]) -> list[object]:
        """The outputs the references name, in order (NotFound if one is gone)."""
        ...

    def find_step_output(self, tenant_id: str, run_id: str, step_id: str) -> tuple[bool, object]:
        """The latest output the run's events record for `step_id` (maybe a reference), for a
        step the run item no longer remembers: (found, output)."""
        ...


class RunIndex(Protocol):
    """Runs found without naming them: a tenant's listings, the runs owed a step, the approvals
    inbox. Each is kept by the commits of the runs it holds (RunLog.commit)."""

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
    ) -> tuple[list[Run], Position | None]: ...

    def active(self, due_before: str, limit: int, *, due_after: str | None = None) -> list[tuple[str, str]]:
        """(tenant_id, run_id) of up to `limit` runs the service owes a next step
        (`Run.owed_step`) that are due before `due_before` (and, given `due_after`, not before
        it): at once, or in a long wait, at its deadline (`Run.long_wait_deadline`). A sparse
        index of such runs only, so what ended long ago is never read."""
        ...

    def list_approvals(
        self, tenant_id: str, keep: InboxFilter, *, limit: int = 50, start: Position | None = None
    ) -> tuple[list[PendingApproval], Position | None]:
        """The tenant's runs waiting for an approval decision that `keep` keeps, oldest request
        first (`Run.decision_requested_at`, then the run id): a sparse index of waiting runs
        only, so ended and running runs are never read. A filtered page may be short with a
        position (as `list_runs`)."""
        ...


class DispatchQueue(Protocol):
    """Where kicks go; a delay is at most SQS's 900 s (longer waits chain)."""

    def send(self, message: QueuedMessage, *, delay_seconds: int = 0) -> None: ...


class SignalStore(Protocol):
    """Signals, kept a day for the runs that look back, and the runs waiting for each name."""

    def put(self, tenant_id: str, signal: Signal, *, expires_at: int) -> tuple[Signal, bool]:
        """Store the signal unless its id is taken: (the stored signal, whether it is new).
        Conflict when the id names another signal."""
        ...

    def get(self, tenant_id: str, signal_id: str) -> Signal | None: ...

    def recent(self, tenant_id: str, name: str, since: str, limit: int) -> list[Signal]:
        """Signals of `name` sent at or after `since`, oldest first, at most `limit`."""
        ...

    def add_waiter(self, tenant_id: str, name: str, run_id: str, *, expires_at: int) -> None: ...

    def waiters(
        self, tenant_id: str, name: str, *, after: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """Runs waiting for `name`, a page at a time: (run ids, the last of them if more follow)."""
        ...

    def remove_waiter(self, tenant_id: str, name: str, run_id: str) -> None: ...


class IdempotencyStore(Protocol):
    def claim(self, tenant_id: str, user_id: str, key: str, body_hash: str, run_id: str) -> Claim:
        """Claim the key for a request with `body_hash` and name the run it will create."""
        ...

    def complete(self, tenant_id: str, user_id: str, key: str, body_hash: str, run_id: str) -> None:
        """Mark the key's claim naming `run_id` completed, writing it again if it was released."""
        ...

    def release(self, tenant_id: str, user_id: str, key: str, run_id: str) -> None: ...

    def get(self, tenant_id: str, user_id: str, key: str) -> IdempotencyRecord | None: ...


class DefinitionStore(Protocol):
    def create(
        self, tenant_id: str, user_id: str, workflow_id: str, definition: WorkflowDefinition
    ) -> WorkflowHead: ...

    def add_version(
        self, head: WorkflowHead, user_id: str, definition: WorkflowDefinition
    ) -> WorkflowHead: ...

    def mark_deleted(self, tenant_id: str, workflow_id: str) -> WorkflowHead: ...

    def get_head(self, tenant_id: str, workflow_id: str) -> WorkflowHead: ...

    def get_version(self, tenant_id: str, workflow_id: str, version: int) -> WorkflowVersion: ...

    def list_heads(
        self,
        tenant_id: str,
        *,
        include_deleted: bool,
        limit: int,
        start: Position | None,
        created_by: str | None = None,
    ) -> tuple[list[WorkflowHead], Position | None]: ...

    def list_versions(
        self, tenant_id: str, workflow_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[WorkflowVersion], Position | None]: ...


class QuotaStore(Protocol):
    """Atomic counters: submission windows, scheduled-run budgets, execution slots."""

    def count(self, tenant_id: str, user_id: str, window: str, limit: int, now: datetime) -> WindowCount: ...

    def count_fire(self, tenant_id: str, limit: int, now: datetime) -> WindowCount: ...

    def count_signal(self, tenant_id: str, limit: int, now: datetime) -> WindowCount: ...

    def uncount(self, tenant_id: str, user_id: str, window: str, now: datetime) -> None: ...

    def take_slot(self, tenant_id: str, run_id: str, limit: int) -> bool:
        """Take one of the tenant's `limit` slots for the run; True if it holds one (idempotent)."""

    def release_slot(self, tenant_id: str, run_id: str) -> None:
        """Give back the run's slot (idempotent; a no-op if it holds none)."""

    def slot_holders(self, tenant_id: str) -> tuple[int, set[str]]:
        """(the slots counted, the runs listed as holding one)."""

    def recount_slots(self, tenant_id: str, counted: int, holding: int) -> bool:
        """Set the count to `holding` if it is still `counted`."""

    def healed_at(self, tenant_id: str) -> int | None: ...

    def mark_healed(self, tenant_id: str, previous: int | None, now: int) -> bool: ...


class ShareStore(Protocol):
    """Each tenant's share of the dispatcher (domain.shares): a step-rate clock and call permits."""

    def reserve(self, key: str, cost_seconds: float, now: float) -> float:
        """Move the key's clock to `max(clock, now) + cost_seconds`; the `max(clock, now)` it
        started from, which is when the reserved work is due."""

    def charge(self, key: str, cost_seconds: float, now: float) -> None:
        """Add work done beyond what was reserved to the key's clock (negative: give back
        reserved work that was not done)."""

    def acquire(self, pool: str, holder: str, limit: int, lease_until: float, now: float) -> bool:
        """Hold one of the pool's `limit` permits until `lease_until` (idempotent per holder);
        expired leases do not count. False when every permit is held."""

    def release(self, pool: str, holder: str) -> None: ...


class ScheduleStore(Protocol):
    def create(self, schedule: Schedule, *, limit: int) -> bool:
        """Store a new schedule unless its tenant has `limit` already (then False), atomically:
        concurrent creates never leave a tenant with more than `limit`."""

    def get(self, tenant_id: str, schedule_id: str) -> Schedule: ...

    def list(
        self, tenant_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[Schedule], Position | None]: ...

    def update(self, old: Schedule, new: Schedule) -> None: ...

    def delete(self, tenant_id: str, schedule_id: str) -> None:
        """Remove the schedule and give its place back (a schedule already gone: nothing)."""

    def record_fire(
        self, tenant_id: str, schedule_id: str, scheduled_time: str, fire: Mapping[str, object]
    ) -> bool:
        """Record a fire's outcome unless one as late or later is recorded already."""


class ScheduleTriggers(Protocol):
    """What fires schedules (EventBridge Scheduler): one trigger per schedule."""

    def put(self, schedule: Schedule, *, start_date: datetime | None, create: bool) -> None: ...

    def delete(self, schedule_id: str) -> None: ...


class ArtifactStore(Protocol):
    def save(
        self, tenant_id: str, run_id: str, *, step_id: str, name: str, content: bytes, mime_type: str
    ) -> ArtifactMeta: ...

    def list(self, tenant_id: str, run_id: str) -> list[ArtifactMeta]: ...

    def get(self, tenant_id: str, run_id: str, artifact_id: str) -> ArtifactMeta: ...

    def presigned_url(self, meta: ArtifactMeta, expires_in: int = ...) -> str: ...

    def read(self, meta: ArtifactMeta, *, max_bytes: int = ...) -> bytes: ...


class CorpusStore(Protocol):
    def add(
        self, tenant_id: str, content: str, metadata: JsonObject, doc_id: str | None = None
    ) -> CorpusDocument: ...

    def get(self, tenant_id: str, doc_id: str) -> CorpusDocument: ...

    def delete(self, tenant_id: str, doc_id: str) -> None: ...

    def page(
        self, tenant_id: str, *, limit: int, after: str | None = None
    ) -> tuple[list[CorpusDocument], str | None]: ...

    def all_for_search(self, tenant_id: str) -> list[CorpusDocument]: ...


class DlqStore(Protocol):
    """The webhook DLQ table: rows, their leases and outcomes.

    Pending rows are kept per tenant: a registry lists the tenants that may have some, and each
    tenant's due rows are read on their own, so one tenant's backlog never hides another's.
    """

    def add(self, row: DlqRow) -> None: ...

    def get(self, tenant_id: str, row_id: str) -> DlqRow: ...

    def pending_tenants(self) -> list[str]:
        """Tenants that may have pending rows, sorted (a superset: never missing one)."""
        ...

    def due(self, tenant_id: str, limit: int) -> list[DlqRow]:
        """The tenant's pending rows whose next attempt is due, oldest first (leased ones too)."""
        ...

    def forget_if_empty(self, tenant_id: str) -> bool:
        """Unlist a tenant with no pending row at all, unless a row was added to it lately."""
        ...

    def list_for_tenant(
        self,
        tenant_id: str,
        *,
        statuses: Sequence[str] = (),
        run_id: str | None = None,
        limit: int = 50,
        start: Position | None = None,
    ) -> tuple[list[DlqRow], Position | None]: ...

    def claim(self, row: DlqRow, lease_seconds: float) -> DlqRow | None: ...

    def claim_for_replay(self, tenant_id: str, row_id: str, lease_seconds: float) -> DlqRow: ...

    def mark_delivered(self, row: DlqRow) -> DlqRow: ...

    def reschedule(self, row: DlqRow, next_attempt_at: float, error: str) -> DlqRow: ...

    def mark_exhausted(self, row: DlqRow, error: str) -> DlqRow: ...


class TokenVerifier(Protocol):
    """Checks a bearer token's signature, issuer, audience and expiry; its claims, or
    Unauthenticated saying what is wrong."""

    def verify(self, token: str) -> Mapping[str, JsonValue]: ...


class ApiKeyStore(Protocol):
    def create(
        self,
        tenant_id: str,
        user_id: str,
        roles: Sequence[str],
        *,
        name: str | None = None,
        created_by: str | None = None,
        expires_at: int | None = None,
    ) -> tuple[str, ApiKeyRecord]: ...

    def lookup(self, key: str) -> ApiKeyRecord | None: ...

    def get(self, tenant_id: str, key_id: str) -> ApiKeyRecord: ...

    def revoke(self, tenant_id: str, key_id: str, revoked_by: str) -> ApiKeyRecord: ...

    def list_for_tenant(
        self, tenant_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[ApiKeyRecord], Position | None]: ...


class SecretStore(Protocol):
    """Tenants' secrets for `{{ secrets.NAME }}`: values go in, only names (and the hosts each
    may be sent to) come out."""

    def get(self, tenant_id: str, name: str) -> Secret: ...

    def put(
        self, tenant_id: str, name: str, value: str, allowed_hosts: tuple[str, ...] | None = None
    ) -> None: ...

    def delete(self, tenant_id: str, name: str) -> None: ...

    def listing(self, tenant_id: str) -> list[SecretInfo]: ...


class Deliverer(Protocol):
    """Sends one signed webhook through the egress policy (HttpDeliverer)."""

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        method: str = "POST",
        timeout: float | None = None,
        secret_hosts: Mapping[str, Sequence[str]] | None = None,
    ) -> DeliveryResult: ...


# (tenant_id, name) -> the secret (its value, where it may go); raises SecretUnavailable.
SecretLookup = Callable[[str, str], "Secret"]


class FollowerStore(Protocol):
    """The WebSocket connections that follow runs (FollowersRepository): per run, its followers
    and their positions; per connection, the run it follows; per tenant, a count. Bounded per
    run and per tenant (`add` raises LimitExceeded)."""

    def add(self, follower: Follower, limits: FollowLimits, *, now: float) -> None: ...

    def remove(self, connection_id: str) -> Connection | None:
        """Forget the connection (idempotent): the connection it was, or None if unknown."""
        ...

    def connection(self, connection_id: str) -> Connection | None: ...

    def followers(self, tenant_id: str, run_id: str, *, consistent: bool = True) -> list[Follower]: ...

    def followed(self, runs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Follower]]:
        """The followers of each of these runs (tenant, run id) that has any: one eventually
        consistent read per run, batched; runs nobody follows are left out."""
        ...

    def ready(self, follower: Follower) -> bool:
        """Mark the follower ready for pushes; False if it is gone."""
        ...

    def claim(self, follower: Follower, *, now: float, until: float) -> bool:
        """Take the connection's delivery lease if it is free and `since` is still the
        follower's; False otherwise."""
        ...

    def advance(self, follower: Follower, since: int) -> bool:
        """Move `since` on from the follower's and free the lease; False if it moved meanwhile."""
        ...


class ConnectionPoster(Protocol):
    """API Gateway's management API for a WebSocket stage (PostToConnection, DeleteConnection)."""

    def post(self, connection_id: str, data: bytes) -> bool:
        """Send one frame; False if the connection is gone."""
        ...

    def close(self, connection_id: str) -> None: ...
