"""The one backoff policy and the one bounded-retry helper the service uses.

Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): a delay drawn uniformly
from [0, min(cap, base * 2 ** attempt)), so contending writers do not retry in lock step. Used by
the webhook DLQ's retries, DynamoDB commits that lost a race for the event sequence, and
BatchGetItem's unprocessed keys.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator


def full_jitter(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """The delay before retry number `attempt` (0 for the first retry), in seconds."""
    return float(rand() * min(cap, base * 2.0 ** max(0, attempt)))


def attempts(
    count: int, delay: Callable[[int], float], *, sleep: Callable[[float], None] = time.sleep
) -> Iterator[int]:
    """0 .. count-1, sleeping `delay(n)` before attempt n + 1 (never before the first or after
    the last): `for attempt in attempts(5, ...): ... break on success`."""
    for attempt in range(count):
        if attempt:
            sleep(delay(attempt - 1))
        yield attempt
