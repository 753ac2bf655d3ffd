"""Following a run live over a WebSocket (docs/engine.md, "Following a run live").

The protocol:

1. `$connect` with `run_id` and `since` in the query string and a credential (below): the
   caller is authenticated as on the HTTP API and must be allowed to read the run's events
   (404 for another tenant's run, 403 for another user's without `workflows.runs.read`); the
   connection is recorded as a follower of the run at `since`, not yet ready.
2. The client sends `{"action": "follow"}`. Only then is it ready (API Gateway cannot post to a
   connection during `$connect`), and it is sent every event after `since` at once: the
   catch-up.
3. Every commit of the run reaches this service through the runs table's stream; each
   ready follower is sent the events after its `since`, which then moves on.
4. Once the run has ended and its last event was sent, an `end` frame follows and the service
   closes the connection.

Nothing is sent twice or skipped: a delivery to a connection first takes its lease (a
conditional write on the follower's `since`), reads and posts the events after `since`, then
moves `since` on and frees the lease in one conditional write. A catch-up reads the run again
after freeing the lease, so a commit whose stream record found the lease taken is sent by the
catch-up; a stream record that finds it free delivers itself. A delivery that dies after
posting and before moving `since` on leaves the lease to expire (30 s): the next delivery sends
those events again, and the client drops what it has seen by `event_seq`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from workflows.clock import Clock, system_clock
from workflows.domain.follow import (
    CONNECTION_TTL_SECONDS,
    LEASE_SECONDS,
    MAX_MESSAGE_BYTES,
    PAGE_EVENTS,
    PAGES_PER_DELIVERY,
    Follower,
    FollowLimits,
    end_frame,
    error_frame,
    event_frames,
)
from workflows.domain.ids import is_uuid
from workflows.domain.principal import Principal
from workflows.domain.run import Run, RunEvent
from workflows.errors import NotFound, ValidationFailed
from workflows.ports import ConnectionPoster, FollowerStore, RunLog, RunOutputStore
from workflows.services.access import readable_run
from workflows.services.outputs import resolved_events

# The subprotocol a browser offers beside its credential (Sec-WebSocket-Protocol), and the one
# the service answers with.
SUBPROTOCOL = "workflows.v1"
MAX_SINCE = 2**53
Outcome = Literal["sent", "busy", "gone", "ended", "moved", "expired", "not_ready"]


@dataclass(frozen=True)
class Credential:
    kind: Literal["key", "bearer"]
    value: str
    # The subprotocol to answer with: set when the client offered any (a browser closes a
    # connection whose answer names none of those it offered).
    subprotocol: str | None = None


def presented_credential(headers: Mapping[str, str]) -> Credential | None:
    """The credential of a `$connect`: `X-API-KEY` or `Authorization: Bearer` as on the HTTP
    API; or, from a browser (which cannot set headers on a WebSocket), in the
    Sec-WebSocket-Protocol header: `workflows.v1, key.<api key>` or `workflows.v1,
    bearer.<jwt>`. Never from the query string, which access logs and proxies record."""
    lower = {k.lower(): v for k, v in headers.items()}
    offered = [p.strip() for p in lower.get("sec-websocket-protocol", "").split(",") if p.strip()]
    answer = SUBPROTOCOL if offered else None
    if lower.get("x-api-key"):
        return Credential("key", lower["x-api-key"], answer)
    authorization = lower.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return Credential("bearer", authorization[7:].strip(), answer)
    for item in offered:
        kind, _, value = item.partition(".")
        if kind in ("key", "bearer") and value:
            return Credential(kind, value, answer)  # type: ignore[arg-type]
    return None


def follow_target(query: Mapping[str, str] | None) -> tuple[str, int]:
    """`run_id` (required) and `since` (default 0) of a `$connect`'s query string, checked."""
    query = query or {}
    run_id = query.get("run_id", "")
    if not is_uuid(run_id):
        raise ValidationFailed(
            "run_id: a run id is required", details=[{"field": "run_id", "message": "not a run id"}]
        )
    raw = query.get("since", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16 and int(raw) <= MAX_SINCE):
        raise ValidationFailed(
            f"since: an integer from 0 to {MAX_SINCE}",
            details=[{"field": "since", "message": f"an integer from 0 to {MAX_SINCE}"}],
        )
    return run_id, int(raw)


def client_action(body: str | None) -> str:
    """The `action` of a client's message; ValidationFailed for anything but a small JSON
    object naming one."""
    if body is None or len(body) > MAX_MESSAGE_BYTES:
        raise ValidationFailed(f"a message is a JSON object of at most {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ValidationFailed('a message is a JSON object: {"action": "follow"}') from exc
    action = message.get("action") if isinstance(message, dict) else None
    if action != "follow":
        raise ValidationFailed('unknown action: send {"action": "follow"}')
    return "follow"


class RunFollowing:
    def __init__(
        self,
        runs: RunLog,
        outputs: RunOutputStore,
        followers: FollowerStore,
        poster: ConnectionPoster,
        limits: FollowLimits,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._runs = runs
        self._outputs = outputs
        self._followers = followers
        self._poster = poster
        self._limits = limits
        self._clock = clock

    def _now(self) -> float:
        return self._clock().timestamp()

    # ---- the connection's life --------------------------------------------------------

    def connect(self, principal: Principal, connection_id: str, run_id: str, since: int) -> Follower:
        """Record the connection as a follower of the run (not ready until its `follow`)."""
        readable_run(self._runs, principal, run_id)  # 404 another tenant's, 403 another user's
        follower = Follower(
            connection_id=connection_id,
            tenant_id=principal.tenant_id,
            run_id=run_id,
            user_id=principal.user_id,
            since=since,
            expires_at=int(self._now()) + CONNECTION_TTL_SECONDS,
        )
        self._followers.add(follower, self._limits, now=self._now())
        return follower

    def disconnect(self, connection_id: str) -> None:
        self._followers.remove(connection_id)

    def follow(self, connection_id: str) -> Outcome:
        """The client's `follow`: ready from now on, and caught up at once."""
        follower = self._follower(connection_id)
        if not self._followers.ready(follower):
            raise NotFound("the connection follows no run")
        follower = replace(follower, ready=True)
        outcome: Outcome = "busy"
        # A few rounds: each reads the run again after freeing the lease, for the commits whose
        # stream records found it taken.
        run = self._runs.get(follower.tenant_id, follower.run_id)
        for _ in range(PAGES_PER_DELIVERY):
            outcome, since = self._deliver(follower, run, {})
            if outcome != "sent":
                return outcome
            follower = replace(follower, since=since, lease_until=0.0)
            run = self._runs.get(follower.tenant_id, follower.run_id)  # consistent, after the lease
            if run.last_event_seq <= since:
                return outcome
        return outcome

    def refuse(self, connection_id: str, code: str, message: str) -> None:
        """Answer a client's message with an error frame (the connection stays open)."""
        self._poster.post(connection_id, error_frame(code, message))

    def _follower(self, connection_id: str) -> Follower:
        connection = self._followers.connection(connection_id)
        if connection is not None:
            for follower in self._followers.followers(connection.tenant_id, connection.run_id):
                if follower.connection_id == connection_id:
                    return follower
        raise NotFound("the connection follows no run")

    # ---- commits, from the runs table's stream ------------------------------------------

    def followed(self, runs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Follower]]:
        """Which of these runs (tenant, run id) anyone follows: one cheap read per run."""
        return self._followers.followed(runs)

    def push(self, tenant_id: str, run_id: str) -> dict[str, Outcome]:
        """A commit of a followed run: every ready follower is sent what it has not seen."""
        # Read again, consistently: the batch's read may be a moment behind a `since` a
        # catch-up has just moved on or a `ready` it has just set.
        followers = [f for f in self._followers.followers(tenant_id, run_id) if f.ready]
        if not followers:
            return {}
        run = self._runs.get(tenant_id, run_id)
        pages: dict[int, tuple[list[RunEvent], int]] = {}
        return {f.connection_id: self._deliver(f, run, pages)[0] for f in followers}

    # ---- one delivery ------------------------------------------------------------------

    def _deliver(
        self, follower: Follower, run: Run, pages: dict[int, tuple[list[RunEvent], int]]
    ) -> tuple[Outcome, int]:
        now = self._now()
        if follower.expires_at < now:
            self._followers.remove(follower.connection_id)
            return "expired", follower.since
        if not self._followers.claim(follower, now=now, until=now + LEASE_SECONDS):
            return "busy", follower.since
        try:
            if follower.since not in pages:
                pages[follower.since] = self._read(run, follower.since)
            events, next_since = pages[follower.since]
            for frame in event_frames(run.run_id, events, next_since):
                if not self._poster.post(follower.connection_id, frame):
                    self._followers.remove(follower.connection_id)
                    return "gone", follower.since
        except BaseException:
            # Free the lease where it was (a frame posted before the error comes again), so the
            # retry of this stream batch, or the next catch-up, delivers at once.
            self._followers.advance(follower, follower.since)
            raise
        if not self._followers.advance(follower, next_since):
            return "moved", follower.since
        if run.is_terminal and next_since >= run.last_event_seq:
            self._poster.post(follower.connection_id, end_frame(run.run_id, run.status.value, next_since))
            self._poster.close(follower.connection_id)
            self._followers.remove(follower.connection_id)
            return "ended", next_since
        return "sent", next_since

    def _read(self, run: Run, since: int) -> tuple[list[RunEvent], int]:
        """The events after `since`, as the HTTP events route reads them, a few pages at most."""
        events: list[RunEvent] = []
        for _ in range(PAGES_PER_DELIVERY):
            page = self._runs.list_events(run.tenant_id, run.run_id, since=since, limit=PAGE_EVENTS, run=run)
            events += resolved_events(self._outputs, run, page.events)
            since = page.next_since
            if not page.has_more:
                break
        return events, since
