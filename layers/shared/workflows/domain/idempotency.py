"""Idempotency records: a claim on (caller, Idempotency-Key) and what it led to."""

from __future__ import annotations

from dataclasses import dataclass

IN_PROGRESS = "in_progress"
COMPLETED = "completed"


@dataclass(frozen=True)
class IdempotencyRecord:
    status: str
    body_hash: str
    token: str
    run_id: str | None = None


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: `won` with our token, or the record someone else holds."""

    won: bool
    token: str
    existing: IdempotencyRecord | None = None
