"""Idempotency records: a claim on (caller, Idempotency-Key) and the run it reserves.

The claim names its run id before the run exists, so whoever finds the claim (a retry after
an ambiguous answer, a request racing the first) can only create or find that one run.
"""

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
    # The run id the key stands for: ours when won, the holder's (if it named one) otherwise.
    run_id: str | None = None
