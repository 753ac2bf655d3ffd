"""Following a run over a WebSocket (docs/engine.md, "Following a run live"): who follows
which run from which event, the bounds, and the frames a follower is sent.

A follower is one WebSocket connection following one run of one tenant. Its `since` is the
last event sequence number it was sent; the service advances it only after the frames that
carry those events were posted. `ready` is set by the client's first `{"action": "follow"}`
message: API Gateway cannot post to a connection during its `$connect`, so nothing is pushed
before the client says it listens. `lease_until` is a short claim that keeps two deliveries to
one connection (the stream's and a catch-up's) from sending the same events twice or out of
order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from workflows.domain.run import RunEvent

# Connections that may follow one run, and one tenant's runs, at once.
MAX_FOLLOWERS_PER_RUN = 100
MAX_FOLLOWERS_PER_TENANT = 1000
# API Gateway closes a WebSocket connection after 2 hours; a follower record lives that long,
# plus a margin for the $disconnect that removes it (the table's TTL removes what is left).
CONNECTION_SECONDS = 2 * 3600
CONNECTION_TTL_SECONDS = CONNECTION_SECONDS + 600
# A delivery's claim on a connection; longer than one delivery takes (a few reads and posts).
LEASE_SECONDS = 30
# API Gateway's WebSocket frames are at most 128 KB and messages are billed per 32 KB: a frame
# carries events up to this many bytes, so an ordinary frame is one billed message.
FRAME_BYTES = 32 * 1024
# One event larger than this is sent without its payload (`payload_omitted`), to read over HTTP.
MAX_EVENT_BYTES = 120 * 1024
# Events read per page (the HTTP route's default) and pages per delivery; a follower further
# behind is caught up by the next delivery (the next commit, or its next `follow` message).
PAGE_EVENTS = 100
PAGES_PER_DELIVERY = 10
# A client message: `{"action": "follow"}` and nothing large.
MAX_MESSAGE_BYTES = 1024
# API Gateway's connection ids: 16 characters of base64 today; bounded and checked anyway,
# since they become parts of keys and attribute names.
CONNECTION_ID = re.compile(r"^[A-Za-z0-9+/=_-]{1,128}$")


def is_connection_id(value: object) -> bool:
    return isinstance(value, str) and CONNECTION_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Follower:
    connection_id: str
    tenant_id: str
    run_id: str
    user_id: str
    since: int
    expires_at: int
    ready: bool = False
    lease_until: float = 0.0


@dataclass(frozen=True)
class Connection:
    """What $disconnect (and a gone connection) needs to find its follower."""

    connection_id: str
    tenant_id: str
    run_id: str


@dataclass(frozen=True)
class FollowLimits:
    per_run: int
    per_tenant: int


def _event_json(event: RunEvent) -> dict[str, Any]:
    shown: dict[str, Any] = event.model_dump(mode="json")
    if len(json.dumps(shown, separators=(",", ":"))) > MAX_EVENT_BYTES:
        shown["payload"] = {}
        shown["payload_omitted"] = True
    return shown


def event_frames(run_id: str, events: Sequence[RunEvent], next_since: int) -> Iterator[bytes]:
    """`{"type": "events", ...}` frames carrying `events` in order, each at most FRAME_BYTES
    unless one event alone is larger (never more than MAX_EVENT_BYTES plus the envelope, inside
    API Gateway's 128 KB)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        shown = _event_json(event)
        length = len(json.dumps(shown, separators=(",", ":"))) + 1
        if batch and size + length > FRAME_BYTES - 256:
            yield _frame(run_id, batch, batch[-1]["event_seq"])
            batch, size = [], 0
        batch.append(shown)
        size += length
    if batch:
        yield _frame(run_id, batch, next_since)


def _frame(run_id: str, events: list[dict[str, Any]], next_since: int) -> bytes:
    body = {"type": "events", "run_id": run_id, "events": events, "next_since": next_since}
    return json.dumps(body, separators=(",", ":")).encode()


def end_frame(run_id: str, status: str, next_since: int) -> bytes:
    body = {"type": "end", "run_id": run_id, "status": status, "next_since": next_since}
    return json.dumps(body, separators=(",", ":")).encode()


def error_frame(code: str, message: str) -> bytes:
    return json.dumps({"type": "error", "code": code, "message": message}, separators=(",", ":")).encode()
