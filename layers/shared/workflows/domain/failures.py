"""How a step fails: a StepFailed is recorded on the run (and routed by on_failure / on_timeout);
anything else a step raises is transient, and its message is redelivered."""

from __future__ import annotations


class StepFailed(Exception):
    """The step failed. `code` is matched by the retry policy's `non_retryable_errors`."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
