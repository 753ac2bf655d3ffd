"""Webhook DLQ rows: a webhook that failed at least once and waits to be (re)delivered."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.clock import iso

_MAX_ERROR_CHARS = 1000

DlqStatus = Literal["pending", "delivered", "exhausted"]


class DlqRow(BaseModel):
    """One webhook that failed at least once and is waiting to be (re)delivered."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    tenant_id: str = Field(min_length=1)
    run_id: str
    url: str = Field(min_length=1)
    body_json: str
    attempts: int = Field(default=0, ge=0)
    next_attempt_at: float
    last_error: str | None = None
    created_at: str
    updated_at: str
    status: DlqStatus = "pending"
    # Stable across retries: receivers dedupe on it (the Standard Webhooks `webhook-id`).
    webhook_id: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    lease_expires_at: float | None = None
    # Set when the URL, headers or body hold `{{ secrets.NAME }}` placeholders of this nonce:
    # the values are put in at each attempt, never stored (domain.secret_refs).
    secret_nonce: str | None = None

    @classmethod
    def new(
        cls,
        *,
        tenant_id: str,
        run_id: str,
        url: str,
        body_json: str,
        now: datetime,
        webhook_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        last_error: str | None = None,
        attempts: int = 0,
        next_attempt_at: float | None = None,
        secret_nonce: str | None = None,
    ) -> DlqRow:
        """A pending row, due at `next_attempt_at` (default: now)."""
        stamp = iso(now)
        return cls(
            id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            run_id=run_id,
            url=url,
            body_json=body_json,
            attempts=attempts,
            next_attempt_at=now.timestamp() if next_attempt_at is None else next_attempt_at,
            last_error=truncate_error(last_error),
            created_at=stamp,
            updated_at=stamp,
            webhook_id=webhook_id or f"msg_{uuid.uuid4().hex}",
            headers=dict(headers or {}),
            secret_nonce=secret_nonce,
        )


def truncate_error(error: str | None) -> str | None:
    return None if error is None else error[:_MAX_ERROR_CHARS]
