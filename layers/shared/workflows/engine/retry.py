"""Retry policy as a pure function: (policy, error, attempt) -> decision."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from workflows.domain.definition import RetryPolicy
from workflows.domain.failures import StepFailed


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_seconds: float = 0.0


def decide(
    policy: RetryPolicy,
    error: StepFailed,
    attempt: int,
    *,
    rand: Callable[[], float] = random.random,
) -> RetryDecision:
    """`attempt` is the attempt that just failed (1-based)."""
    if not error.retryable or error.code in policy.non_retryable_errors:
        return RetryDecision(retry=False)
    if attempt >= policy.max_attempts:
        return RetryDecision(retry=False)
    ceiling = min(
        policy.max_interval_seconds,
        policy.initial_interval_seconds * policy.backoff_rate ** (attempt - 1),
    )
    delay = ceiling * rand() if policy.jitter == "full" else ceiling
    return RetryDecision(retry=True, delay_seconds=delay)
