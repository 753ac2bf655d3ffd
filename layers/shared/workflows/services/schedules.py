"""Schedules of saved workflows: manage them, and start a run when one fires.

A schedule lives twice: its item in SchedulesTable (what the API shows, including the last
fire's outcome) and an EventBridge Scheduler schedule that sends a `start_scheduled` message to
the dispatch queue at each fire. Writes keep the two in step: the item is written first and
put back if EventBridge refuses the change, so a failed request changes nothing.

A tenant has at most `max_schedules_per_tenant` schedules (a cost guard: each one fires). The
store checks the cap in the write that creates the item, so concurrent creates cannot pass it;
deleting a schedule, or a create undone because EventBridge refused it, gives the place back.

A fire starts at most one run per (schedule, scheduled time): the run is submitted through the
Idempotency-Key mechanism with the key `schedule:<id>:<scheduled time>`, a conditional put
claimed before the run exists. Its records live 24 hours, so a fire whose scheduled time is
more than FIRE_WINDOW old is skipped rather than risk a second run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from workflows.clock import Clock, iso, system_clock
from workflows.domain.jsonlimits import check_size
from workflows.domain.messages import StartScheduledRun
from workflows.domain.paging import Position
from workflows.domain.principal import RUNS_CONTROL, RUNS_READ, Principal
from workflows.domain.run import SCHEDULE_OWNER_PREFIX, Run
from workflows.domain.schedules import (
    ExpressionError,
    Schedule,
    ScheduleExpression,
    parse_expression,
    parse_scheduled_time,
    parse_timezone,
    scheduled_time_text,
)
from workflows.domain.workflows import DELETED
from workflows.errors import LimitExceeded, NotFound, ValidationFailed, WorkflowDeleted
from workflows.observability import logger
from workflows.ports import DefinitionStore, QuotaStore, ScheduleStore, ScheduleTriggers
from workflows.services.access import check_read_definition
from workflows.services.definitions import DefinitionService, check_inputs
from workflows.services.runs import RunService
from workflows.settings import Settings

# Older fires are skipped: the deduplication records (24 h) must outlive every duplicate.
FIRE_WINDOW = timedelta(hours=23)


class _FireBudgetUsed(Exception):
    """The tenant's daily budget of scheduled runs is used up: the fire is skipped."""


@dataclass(frozen=True)
class FireResult:
    result: str  # started | duplicate | skipped
    reason: str | None = None
    run_id: str | None = None


def schedule_principal(tenant_id: str, schedule_id: str) -> Principal:
    """Who a scheduled run belongs to: the schedule (the run's owner_id is `schedule:<id>`)."""
    # It runs what a caller allowed to schedule the workflow set up, so it may read the workflow.
    return Principal(
        tenant_id=tenant_id,
        user_id=f"{SCHEDULE_OWNER_PREFIX}{schedule_id}",
        permissions=frozenset({RUNS_READ, RUNS_CONTROL}),
    )


class ScheduleService:
    def __init__(
        self,
        schedules: ScheduleStore,
        triggers: ScheduleTriggers,
        definitions: DefinitionStore,
        workflows: DefinitionService,
        runs: RunService,
        quotas: QuotaStore,
        settings: Settings,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._schedules = schedules
        self._triggers = triggers
        self._definitions = definitions
        self._workflows = workflows
        self._run_service = runs
        self._quotas = quotas
        self._settings = settings
        self._clock = clock

    # ---- management --------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        *,
        workflow_id: str,
        expression: str,
        timezone: str = "UTC",
        inputs: dict[str, Any] | None = None,
        version: int | None = None,
        enabled: bool = True,
    ) -> Schedule:
        now = self._clock()
        parsed, _ = self._check_timing(expression, timezone, now)
        inputs = inputs or {}
        self._check_target(principal, workflow_id, version, inputs)
        anchor = self._anchor(parsed, now)
        schedule = Schedule(
            schedule_id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            workflow_id=workflow_id,
            expression=parsed.text,
            timezone=timezone,
            inputs=inputs,
            version=version,
            enabled=enabled,
            anchor_at=iso(anchor),
            created_at=iso(now),
            updated_at=iso(now),
            created_by=principal.user_id,
        )
        limit = self._settings.max_schedules_per_tenant
        # The cap is checked by the write itself, so creates racing for the last place cannot
        # both take it; a failure below deletes the item, which gives the place back.
        if not self._schedules.create(schedule, limit=limit):
            raise LimitExceeded(
                f"schedules: the tenant has {limit} schedules, the most allowed; delete one first",
                details=[{"field": "schedules", "message": f"at most {limit} per tenant"}],
            )
        try:
            self._triggers.put(schedule, start_date=self._start_date(schedule, parsed, now), create=True)
        except BaseException:
            self._schedules.delete(schedule.tenant_id, schedule.schedule_id)
            raise
        return schedule

    def update(self, principal: Principal, schedule_id: str, changes: Mapping[str, Any]) -> Schedule:
        """Apply the fields present in `changes` (expression, timezone, inputs, version, enabled)."""
        old: Schedule = self._schedules.get(principal.tenant_id, schedule_id)
        now = self._clock()
        expression = changes.get("expression", old.expression)
        timezone = changes.get("timezone", old.timezone)
        parsed, _ = self._check_timing(
            expression, timezone, now, check_future="expression" in changes or "timezone" in changes
        )
        inputs = changes.get("inputs", old.inputs)
        if inputs is None:
            inputs = {}
        version = changes.get("version", old.version)
        if {"inputs", "version"} & set(changes):
            self._check_target(principal, old.workflow_id, version, inputs)
        retimed = parsed.text != old.expression or timezone != old.timezone
        anchor = iso(self._anchor(parsed, now)) if retimed else old.anchor_at
        new = old.model_copy(
            update={
                "expression": parsed.text,
                "timezone": timezone,
                "inputs": inputs,
                "version": version,
                "enabled": bool(changes.get("enabled", old.enabled)),
                "anchor_at": anchor,
                "updated_at": iso(now),
                "revision": old.revision + 1,
            }
        )
        self._schedules.update(old, new)
        try:
            self._triggers.put(new, start_date=self._start_date(new, parsed, now), create=False)
        except BaseException:
            self._schedules.update(new, old.model_copy(update={"revision": new.revision + 1}))
            raise
        return self._schedules.get(principal.tenant_id, schedule_id)

    def delete(self, principal: Principal, schedule_id: str) -> Schedule:
        schedule: Schedule = self._schedules.get(principal.tenant_id, schedule_id)
        # EventBridge first: if that fails the schedule still exists, whole, and the caller retries.
        self._triggers.delete(schedule_id)
        self._schedules.delete(principal.tenant_id, schedule_id)
        return schedule

    def get(self, principal: Principal, schedule_id: str) -> Schedule:
        schedule: Schedule = self._schedules.get(principal.tenant_id, schedule_id)
        return schedule

    def list(
        self, principal: Principal, *, limit: int, start: Position | None
    ) -> tuple[list[Schedule], Position | None]:
        result: tuple[list[Schedule], Position | None] = self._schedules.list(
            principal.tenant_id, limit=limit, start=start
        )
        return result

    def next_fire_at(self, schedule: Schedule) -> datetime | None:
        """When it fires next, as things stand (None when disabled or an at() already passed)."""
        if not schedule.enabled:
            return None
        now = self._clock()
        parsed = parse_expression(schedule.expression)
        anchor = datetime.fromisoformat(schedule.anchor_at)
        return parsed.next_after(ZoneInfo(schedule.timezone), now, anchor)

    # ---- a fire --------------------------------------------------------------------------

    def fire(self, message: StartScheduledRun) -> FireResult:
        """Start the run this fire asks for, at most once; record the outcome on the schedule.

        Refusals that retrying cannot fix (deleted workflow, inputs that no longer validate) are
        recorded and answered as `skipped`; AWS failures raise so the message is redelivered.
        """
        tenant, schedule_id = message.tenant_id, message.schedule_id
        try:
            schedule: Schedule = self._schedules.get(tenant, schedule_id)
        except NotFound:
            logger.info("fire of a deleted schedule ignored", extra={"schedule_id": schedule_id})
            return FireResult("skipped", "schedule_not_found")
        try:
            scheduled = parse_scheduled_time(message.scheduled_time)
        except ExpressionError:
            return self._skipped(schedule, message.scheduled_time, "invalid_scheduled_time", None)
        scheduled_text = scheduled_time_text(scheduled)
        if not schedule.enabled:
            return self._skipped(schedule, scheduled_text, "schedule_disabled", "the schedule is disabled")
        if self._clock() - scheduled > FIRE_WINDOW:
            return self._skipped(
                schedule, scheduled_text, "too_late", "the fire arrived too late to start a run"
            )
        principal = schedule_principal(tenant, schedule_id)

        def submit() -> Run:
            settings = self._settings
            if settings.auth_mode == "multi_user":
                # Counted only when this fire really starts a run (not for a duplicate message).
                budget = settings.schedule_fires_per_tenant_per_day
                if not self._quotas.count_fire(tenant, budget, self._clock()).allowed:
                    raise _FireBudgetUsed(
                        f"the tenant's schedules started {budget} runs today, the most allowed"
                    )
            return self._workflows.submit_run(
                principal, schedule.workflow_id, schedule.inputs, schedule.version
            )

        request = {"route": "schedules", "schedule_id": schedule_id, "scheduled_time": scheduled_text}
        key = f"schedule:{schedule_id}:{scheduled_text}"
        try:
            run, replayed = self._run_service.submit_once(principal, key, request, submit)
        except _FireBudgetUsed as exc:
            return self._skipped(schedule, scheduled_text, "fire_budget_exhausted", str(exc))
        except WorkflowDeleted as exc:
            return self._skipped(schedule, scheduled_text, "workflow_deleted", exc.message)
        except NotFound as exc:
            fields = {str(d.get("field")) for d in exc.details}
            reason = "version_not_found" if "version" in fields else "workflow_not_found"
            return self._skipped(schedule, scheduled_text, reason, exc.message)
        except ValidationFailed as exc:
            return self._skipped(schedule, scheduled_text, "invalid_inputs", exc.message)
        if replayed:
            return FireResult("duplicate", run_id=run.run_id)
        self._record(schedule, scheduled_text, {"result": "started", "run_id": run.run_id})
        return FireResult("started", run_id=run.run_id)

    # ---- helpers ---------------------------------------------------------------------------

    def _skipped(
        self, schedule: Schedule, scheduled_text: str, reason: str, message: str | None
    ) -> FireResult:
        logger.info("scheduled fire skipped", extra={"schedule_id": schedule.schedule_id, "reason": reason})
        self._record(schedule, scheduled_text, {"result": "skipped", "reason": reason, "message": message})
        return FireResult("skipped", reason)

    def _record(self, schedule: Schedule, scheduled_text: str, outcome: dict[str, Any]) -> None:
        fire = {"scheduled_time": scheduled_text, "at": iso(self._clock()), **outcome}
        self._schedules.record_fire(schedule.tenant_id, schedule.schedule_id, scheduled_text, fire)

    def _check_timing(
        self, expression: str, timezone: str, now: datetime, *, check_future: bool = True
    ) -> tuple[ScheduleExpression, ZoneInfo]:
        details = []
        parsed = zone = None
        try:
            parsed = parse_expression(expression)
        except ExpressionError as exc:
            details.append({"field": "expression", "message": str(exc)})
        try:
            zone = parse_timezone(timezone)
        except ExpressionError as exc:
            details.append({"field": "timezone", "message": str(exc)})
        problem = _never_fires(parsed, zone, now) if parsed and zone and check_future else None
        if problem:
            details.append({"field": "expression", "message": problem})
        if details:
            raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details)
        assert parsed is not None
        assert zone is not None
        return parsed, zone

    def _check_target(
        self, principal: Principal, workflow_id: str, version: int | None, inputs: dict[str, Any]
    ) -> None:
        """The workflow exists for this tenant, is not deleted, has the version, takes the inputs."""
        definitions = self._definitions
        try:
            head = definitions.get_head(principal.tenant_id, workflow_id)
        except NotFound as exc:
            raise NotFound(
                exc.message, details=[{"field": "workflow_id", "message": "no such workflow"}]
            ) from exc
        check_read_definition(principal, head.created_by)
        if head.status == DELETED:
            raise WorkflowDeleted(
                f"workflow '{workflow_id}' is deleted and can no longer be scheduled",
                details=[{"field": "workflow_id", "message": "the workflow is deleted"}],
            )
        wanted = head.latest_version if version is None else version
        try:
            stored = definitions.get_version(principal.tenant_id, workflow_id, wanted)
        except NotFound as exc:
            raise NotFound(
                exc.message, details=[{"field": "version", "message": f"no version {wanted}"}]
            ) from exc
        assert stored.definition is not None
        check_size(inputs, "inputs", self._settings.max_inputs_bytes)
        check_inputs(stored.definition, inputs)

    @staticmethod
    def _anchor(parsed: ScheduleExpression, now: datetime) -> datetime:
        # A rate schedule first fires one interval after it is set up.
        return now + parsed.interval if parsed.interval is not None else now

    @staticmethod
    def _start_date(schedule: Schedule, parsed: ScheduleExpression, now: datetime) -> datetime | None:
        """StartDate for EventBridge: a rate's next grid point (keeping its phase), else now.

        One-time schedules take none (EventBridge ignores it for at()).
        """
        if parsed.kind == "at":
            return None
        if parsed.interval is None:
            return now
        anchor = datetime.fromisoformat(schedule.anchor_at)
        if anchor >= now:
            return anchor
        steps = -((anchor - now) // parsed.interval)  # ceil((now - anchor) / interval)
        return anchor + steps * parsed.interval


def _never_fires(parsed: ScheduleExpression, zone: ZoneInfo, now: datetime) -> str | None:
    """Why a new or changed expression would never fire again, or None if it will."""
    if parsed.kind == "rate" or parsed.next_after(zone, now) is not None:
        return None
    return f"{parsed.text} " + ("is in the past" if parsed.kind == "at" else "never fires after now")
