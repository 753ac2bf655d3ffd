"""Quota windows: the outcome of counting one submission."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowCount:
    """The outcome of counting one submission in one window."""

    allowed: bool
    limit: int
    used: int
    reset_seconds: int  # until the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)
