"""Operators and webhook deliveries: the tenant's DLQ rows, and replaying one now."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from workflows.domain.dlq import DlqRow
from workflows.domain.paging import Position
from workflows.domain.principal import Principal
from workflows.ports import DlqStore

if TYPE_CHECKING:
    # Annotations only: the worker brings the delivery code, which only a replay needs.
    from workflows.services.webhooks.worker import Attempt, DlqWorker


class DeliveryOperations:
    """`worker` is a factory: only a replay needs the delivery code (httpx, egress, signing)."""

    def __init__(self, dlq: DlqStore, worker: Callable[[], DlqWorker]) -> None:
        self._dlq = dlq
        self._worker = worker

    def list(
        self,
        principal: Principal,
        *,
        statuses: Sequence[str],
        run_id: str | None,
        limit: int,
        start: Position | None,
    ) -> tuple[list[DlqRow], Position | None]:
        return self._dlq.list_for_tenant(
            principal.tenant_id, statuses=statuses, run_id=run_id, limit=limit, start=start
        )

    def get(self, principal: Principal, row_id: str) -> DlqRow:
        return self._dlq.get(principal.tenant_id, row_id)

    def replay(self, principal: Principal, row_id: str) -> Attempt:
        return self._worker().replay(principal.tenant_id, row_id)
