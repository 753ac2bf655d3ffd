"""Domain errors. The HTTP edge maps each class to one status in one place (api/errors.py)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class: a stable machine-readable code, a human message, optional details."""

    code = "error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class WorkflowDeleted(Conflict):
    """The definition was soft-deleted: it can be read but no longer run or extended."""

    code = "workflow_deleted"


class IdempotencyKeyReused(Conflict):
    """The Idempotency-Key was already used with a different request body."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    """Another request with the same Idempotency-Key is still being processed."""

    code = "idempotency_in_progress"


class LimitExceeded(Conflict):
    """A fixed per-tenant limit (not a rate) is reached: remove something first."""

    code = "limit_exceeded"


class InvalidState(Conflict):
    """A control action or transition the run's current status does not allow."""

    code = "invalid_state"


class BadRequest(DomainError):
    code = "bad_request"


class InvalidCursor(BadRequest):
    """A pagination cursor that this service did not issue for this query."""

    code = "invalid_cursor"


class MalformedJson(BadRequest):
    """A request body that is not JSON at all."""

    code = "malformed_json"


class ValidationFailed(DomainError):
    code = "validation_error"


class TooDeep(ValidationFailed):
    """A JSON document nested deeper than the service accepts."""

    code = "too_deep"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class WorkflowForbidden(Forbidden):
    """A definition's `workflow` step names a saved workflow the caller may not run."""

    code = "workflow_forbidden"


class StaleWrite(DomainError):
    """A conditional write lost a race: the item changed since it was read."""

    code = "stale_write"


class Throttled(DomainError):
    """AWS throttled us; the caller may retry later."""

    code = "throttled"


class DependencyUnavailable(DomainError):
    """An AWS dependency failed in a way that retrying later may fix."""

    code = "dependency_unavailable"


class ApiKeyUnavailable(DependencyUnavailable):
    """The single-user API key cannot be read (not configured, its secret gone or unreadable):
    the operator's problem, so no caller's key is refused for it."""

    code = "api_key_unavailable"


class QuotaExceeded(DomainError):
    """A per-user submission quota is used up; `headers` say when to come back."""

    code = "quota_exceeded"

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str],
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.headers = headers
