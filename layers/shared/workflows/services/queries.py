"""Reading runs: listings, one run, its events, its pinned definition, the step types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from workflows.domain.definition import WorkflowDefinition
from workflows.domain.paging import Position
from workflows.domain.principal import RUNS_READ, Principal
from workflows.domain.run import EventPage, EventType, Run
from workflows.ports import RunStore
from workflows.services.access import check_read_run, readable_run
from workflows.services.outputs import resolved_events, resolved_run
from workflows.steps.base import StepType
from workflows.steps.registry import StepRegistry


class RunQueries:
    def __init__(self, runs: RunStore, registry: StepRegistry) -> None:
        self._runs = runs
        self._registry = registry

    def list_runs(
        self,
        principal: Principal,
        *,
        workflow_id: str | None,
        statuses: Sequence[str],
        created_after: str | None,
        created_before: str | None,
        limit: int,
        start: Position | None,
    ) -> tuple[list[Run], Position | None]:
        """The tenant's runs, newest first (the caller's own without workflows.runs.read)."""
        runs, position = self._runs.list_runs(
            principal.tenant_id,
            workflow_id=workflow_id,
            statuses=statuses,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            start=start,
            owner_id=None if principal.can(RUNS_READ) else principal.user_id,
        )
        return [resolved_run(self._runs, run) for run in runs], position

    def get(self, principal: Principal, run_id: str) -> Run:
        return resolved_run(self._runs, readable_run(self._runs, principal, run_id))

    def events(
        self, principal: Principal, run_id: str, *, since: int, limit: int, types: Sequence[str]
    ) -> EventPage:
        run = readable_run(self._runs, principal, run_id)  # 404 for a missing or another tenant's run
        page = self._runs.list_events(
            principal.tenant_id, run_id, since=since, limit=limit, types=types, run=run
        )
        return replace(page, events=resolved_events(self._runs, run, page.events))

    def deliveries(self, principal: Principal, run_id: str, *, since: int, limit: int) -> EventPage:
        """The run's `webhook_delivery` events (operators: the route checks the permission)."""
        run = self._runs.get(principal.tenant_id, run_id)
        types = [EventType.WEBHOOK_DELIVERY.value]
        return self._runs.list_events(
            principal.tenant_id, run_id, since=since, limit=limit, types=types, run=run
        )

    def definition(self, principal: Principal, run_id: str) -> WorkflowDefinition:
        """The exact definition snapshot the run executes."""
        run, definition = self._runs.get_with_definition(principal.tenant_id, run_id)
        check_read_run(principal, run)
        return definition

    def step_types(self) -> list[StepType]:
        return self._registry.all()
