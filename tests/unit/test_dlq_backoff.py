"""backoff_seconds: exponential growth, a ceiling, and full jitter below the cap."""

from __future__ import annotations

import random

import pytest

from workflows.services.webhooks.worker import backoff_seconds


def _top() -> float:
    return 1.0


def _half() -> float:
    return 0.5


def _zero() -> float:
    return 0.0


@pytest.mark.parametrize(
    ("attempts", "cap"),
    [(1, 30), (2, 60), (3, 120), (4, 240), (7, 1920), (8, 3600), (20, 3600)],
)
def test_cap_doubles_per_attempt_up_to_the_maximum(attempts: int, cap: float) -> None:
    assert backoff_seconds(attempts, 30, 3600, _top) == cap


def test_jitter_scales_the_cap() -> None:
    assert backoff_seconds(3, 30, 3600, _half) == 60
    assert backoff_seconds(3, 30, 3600, _zero) == 0


def test_stays_within_zero_and_the_cap_for_random_draws() -> None:
    rng = random.Random(7)
    for attempts in range(1, 40):
        cap = min(3600.0, 30 * 2.0 ** (attempts - 1))
        for _ in range(50):
            delay = backoff_seconds(attempts, 30, 3600, rng.random)
            assert 0 <= delay <= cap


def test_jitter_spreads_delays() -> None:
    rng = random.Random(1)
    delays = {round(backoff_seconds(5, 30, 3600, rng.random), 3) for _ in range(100)}

    assert len(delays) > 90


def test_cap_never_decreases_with_more_attempts() -> None:
    caps = [backoff_seconds(n, 1.5, 1000, _top) for n in range(1, 100)]

    assert caps == sorted(caps)
    assert max(caps) == 1000


@pytest.mark.parametrize("attempts", [0, -3])
def test_no_attempts_yet_counts_as_the_first(attempts: int) -> None:
    assert backoff_seconds(attempts, 30, 3600, _top) == 30


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert backoff_seconds(10**9, 30, 3600, _top) == 3600


def test_default_rand_is_random() -> None:
    assert 0 <= backoff_seconds(2, 30, 3600) < 60
