"""Errors a step raises. A StepFailed is recorded on the run; anything else is transient."""

from __future__ import annotations


class StepFailed(Exception):
    """The step failed. `code` is matched by the retry policy's `non_retryable_errors`."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
