"""Backoff, in one place: the service's own retries and a step's retry policy.

Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): a delay drawn uniformly
from [0, min(cap, base * 2 ** attempt)), so contending writers do not retry in lock step. Used by
the webhook DLQ's retries, DynamoDB commits that lost a race for the event sequence,
BatchGetItem's unprocessed keys and approvers racing each other. A step's retry policy
(`step_retry_delay`) is the same curve with the definition's own base, rate and cap, jittered or
not as the definition says.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from workflows.domain.definition import RetryPolicy
from workflows.domain.failures import StepFailed


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


def step_retry_delay(
    policy: RetryPolicy, error: StepFailed, attempt: int, *, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds before a failed step's next attempt under its retry policy, or None: not retried
    (the error is not retryable, or `attempt`, the one that just failed, counting from 1, was
    the last)."""
    if not error.retryable or error.code in policy.non_retryable_errors:
        return None
    if attempt >= policy.max_attempts:
        return None
    ceiling = min(
        policy.max_interval_seconds,
        policy.initial_interval_seconds * policy.backoff_rate ** (attempt - 1),
    )
    return ceiling * rand() if policy.jitter == "full" else ceiling
