"""Reading runs: listings, one run, its events (at once or waiting for them), its pinned
definition, the step types."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta

from workflows.clock import Clock, system_clock
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.paging import Position
from workflows.domain.principal import RUNS_READ, Principal
from workflows.domain.run import TERMINAL, EventPage, EventType, Run
from workflows.errors import ValidationFailed
from workflows.ports import RunIndex, RunLog, RunOutputStore
from workflows.services.access import check_read_run, readable_run
from workflows.services.outputs import resolved_events, resolved_run
from workflows.steps.base import StepType
from workflows.steps.registry import StepRegistry

# The longest wait of an events read: API Gateway ends an integration after 30 s and the API
# function's timeout is 29 s, which leaves the last check and the answer room to finish.
MAX_WAIT_SECONDS = 25
# The pauses between a waiting read's checks of the run item: quick in the first second (a
# client that just submitted a run or sent a control action expects its events soon), then
# one a second, so a wait costs at most one small read per second after its first.
FIRST_POLLS = (0.1, 0.2, 0.3, 0.4)
POLL_INTERVAL = 1.0

Sleep = Callable[[float], Awaitable[None]]


def poll_delays(wait: float) -> list[float]:
    """The pauses before each check of a `wait`-second read; they add up to `wait`, so the
    last check is at the end of the wait."""
    delays: list[float] = []
    elapsed = 0.0
    while wait - elapsed > 1e-6:  # what float sums leave over is no pause
        step = FIRST_POLLS[len(delays)] if len(delays) < len(FIRST_POLLS) else POLL_INTERVAL
        step = min(step, wait - elapsed)
        delays.append(step)
        elapsed += step
    return delays


def event_types(values: Sequence[str]) -> list[str]:
    """The `types` filter as given (comma-separated, repeated or both): the distinct names,
    sorted. A name that is no event type answers 422 naming `types` and the valid names."""
    wanted = sorted({name.strip() for value in values for name in value.split(",") if name.strip()})
    valid = [kind.value for kind in EventType]
    unknown = [name for name in wanted if name not in valid]
    if unknown:
        shown = ", ".join(f"'{name[:64]}'" for name in unknown[:5])
        message = f"unknown event type {shown}; valid types: {', '.join(valid)}"
        raise ValidationFailed(f"types: {message}", details=[{"field": "types", "message": message}])
    return wanted


class RunQueries:
    def __init__(
        self,
        runs: RunLog,
        index: RunIndex,
        outputs: RunOutputStore,
        registry: StepRegistry,
        *,
        clock: Clock = system_clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._runs = runs
        self._index = index
        self._outputs = outputs
        self._registry = registry
        self._clock = clock
        self._sleep = sleep

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
        runs, position = self._index.list_runs(
            principal.tenant_id,
            workflow_id=workflow_id,
            statuses=statuses,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            start=start,
            owner_id=None if principal.can(RUNS_READ) else principal.user_id,
        )
        return [resolved_run(self._outputs, run) for run in runs], position

    def get(self, principal: Principal, run_id: str) -> Run:
        return resolved_run(self._outputs, readable_run(self._runs, principal, run_id))

    def events(
        self, principal: Principal, run_id: str, *, since: int, limit: int, types: Sequence[str]
    ) -> EventPage:
        return self._events(principal, run_id, since, limit, types)[1]

    def _events(
        self, principal: Principal, run_id: str, since: int, limit: int, types: Sequence[str]
    ) -> tuple[Run, EventPage]:
        run = readable_run(self._runs, principal, run_id)  # 404 for a missing or another tenant's run
        page = self._runs.list_events(
            principal.tenant_id, run_id, since=since, limit=limit, types=types, run=run
        )
        return run, replace(page, events=resolved_events(self._outputs, run, page.events))

    async def wait_for_events(
        self,
        principal: Principal,
        run_id: str,
        *,
        since: int,
        limit: int,
        types: Sequence[str],
        wait: float,
    ) -> EventPage:
        """`events`, waiting up to `wait` seconds for one after `since` (docs/engine.md).

        The first read is the non-waiting one, permission check included. It answers at once
        with an event to show, more to page through, or an ended run (nothing more will come
        unless a retry or a redelivered notification appends some; the next request finds
        those). Otherwise the run item's `last_event_seq` is checked on the `poll_delays`
        schedule, and the events are read again (checks and all) only once it moved. Events
        that the `types` filter leaves out move the page's `next_since` on and the wait goes
        on; when the wait ends without an event, the answer is an empty page at `next_since`.

        Storage calls block, so they run in a worker thread; the waiting itself is `sleep`
        (asyncio's), which holds no thread: many waiting reads share one event loop.
        """
        run, page = await asyncio.to_thread(self._events, principal, run_id, since, limit, types)
        deadline = self._clock() + timedelta(seconds=wait)
        for delay in poll_delays(wait):
            if page.events or page.has_more or run.is_terminal:
                break
            # The schedule bounds the number of checks, the clock the time they take.
            remaining = (deadline - self._clock()).total_seconds()
            if remaining <= 0:
                break
            await self._sleep(min(delay, remaining))
            last_seq, status = await asyncio.to_thread(self._runs.event_head, principal.tenant_id, run_id)
            if last_seq > page.next_since:
                run, page = await asyncio.to_thread(
                    self._events, principal, run_id, page.next_since, limit, types
                )
            elif status in TERMINAL:
                break
        return page

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
