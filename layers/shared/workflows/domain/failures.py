"""How a step fails: a StepFailed is recorded on the run (and routed by on_failure / on_timeout,
under the step's retry policy). Anything else a step raises is recorded the same way as an
`internal_error` step failure with a correlation id (docs/engine.md, "How runs end")."""

from __future__ import annotations


class StepFailed(Exception):
    """The step failed. `code` is matched by the retry policy's `non_retryable_errors`."""

    def __init__(
        self, code: str, message: str, *, retryable: bool = True, correlation_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        # Set for an internal error: the key to the log lines that say what went wrong.
        self.correlation_id = correlation_id
