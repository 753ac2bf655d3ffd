"""EventBridge Scheduler for the local stack.

moto stores the schedules the API creates (create_schedule, update_schedule, delete_schedule
behave as on AWS) but never fires them. `LocalScheduler` fires them: it reads the schedule
group, works out which fire times fell due since it last looked (with the same expression code
the service validates with), and sends each target's Input to its queue with
`<aws.scheduler.scheduled-time>` filled in, as EventBridge Scheduler does. The dispatcher then
receives exactly the message it receives on AWS.

Time comes from a clock, so tests move time instead of waiting; `tick()` does one pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from workflows.adapters.schedules import SCHEDULED_TIME_PLACEHOLDER
from workflows.clock import Clock, system_clock
from workflows.domain.schedules import ExpressionError, parse_expression, parse_timezone, scheduled_time_text

# A schedule that fell far behind (a stopped process, a test that jumps a day) sends at most
# this many fires per pass; EventBridge would have sent them all, one by one, on time.
MAX_FIRES_PER_PASS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JUST_BEFORE = timedelta(microseconds=1)


class LocalScheduler:
    def __init__(
        self,
        scheduler: Any,
        sqs: Any,
        *,
        group: str,
        clock: Clock = system_clock,
        period: float = 1.0,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self._scheduler = scheduler
        self._sqs = sqs
        self._group = group
        self._clock = clock
        self._period = period
        self._on_error = on_error
        # Per schedule name: the time up to which its fires have been sent.
        self._cursors: dict[str, datetime] = {}
        self._first_seen: dict[str, datetime] = {}
        self._queue_urls: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="LocalScheduler", daemon=True)

    # ---- one pass ------------------------------------------------------------------------

    def tick(self) -> list[str]:
        """Send every fire due since the last pass; returns the message bodies sent."""
        now = self._clock()
        sent: list[str] = []
        names = self._names()
        for name in names:
            schedule = self._scheduler.get_schedule(Name=name, GroupName=self._group)
            sent += self._fire_due(name, schedule, now)
        for gone in set(self._cursors) - set(names):
            self._cursors.pop(gone, None)
            self._first_seen.pop(gone, None)
        return sent

    def _names(self) -> list[str]:
        names: list[str] = []
        for page in self._scheduler.get_paginator("list_schedules").paginate(GroupName=self._group):
            schedules = page.get("Schedules", [])
            names += [s["Name"] for s in schedules if s.get("GroupName", self._group) == self._group]
        return names

    def _fire_due(self, name: str, schedule: dict[str, Any], now: datetime) -> list[str]:
        first_seen = self._first_seen.setdefault(name, now)
        cursor = self._cursors.get(name)
        self._cursors[name] = now
        if schedule.get("State") != "ENABLED":
            return []  # a disabled schedule does not catch up when it is enabled again
        try:
            expression = parse_expression(schedule["ScheduleExpression"])
            zone = parse_timezone(schedule.get("ScheduleExpressionTimezone") or "UTC")
        except ExpressionError as exc:
            self._on_error(exc)
            return []
        start = schedule.get("StartDate")
        start = start.astimezone(UTC) if isinstance(start, datetime) else None
        if expression.kind == "at":
            # One-time: due once, whenever this scheduler first finds it due.
            after = cursor or _EPOCH
        else:
            after = cursor or (start - _JUST_BEFORE if start else first_seen)
            if start is not None and after < start:
                after = start - _JUST_BEFORE
        anchor = start or first_seen
        times = expression.occurrences(zone, after=after, until=now, anchor=anchor)
        bodies = []
        target = schedule["Target"]
        for moment in islice(times, MAX_FIRES_PER_PASS):
            when = scheduled_time_text(moment)
            body = str(target.get("Input", "{}")).replace(SCHEDULED_TIME_PLACEHOLDER, when)
            self._sqs.send_message(QueueUrl=self._queue_url(target["Arn"]), MessageBody=body)
            bodies.append(body)
        return bodies

    def _queue_url(self, arn: str) -> str:
        if arn not in self._queue_urls:
            parts = arn.split(":")
            response = self._sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
            self._queue_urls[arn] = response["QueueUrl"]
        return self._queue_urls[arn]

    # ---- thread --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - keeps firing after one bad pass, as the service does
                self._on_error(exc)
            self._stop.wait(self._period)


def ensure_scheduling(scheduler: Any, iam: Any, sqs: Any, *, stack: str, queue_url: str) -> dict[str, str]:
    """The schedule group and scheduler role template.yaml declares (moto's CloudFormation skips
    AWS::Scheduler::*), as the WORKFLOWS_* environment the API reads them from."""
    group = f"{stack}-runs"
    existing = {g["Name"] for g in scheduler.list_schedule_groups().get("ScheduleGroups", [])}
    if group not in existing:
        scheduler.create_schedule_group(Name=group)
    role_name = f"{stack}-scheduler"
    try:
        role_arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        trust = (
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
            '"Principal":{"Service":"scheduler.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
        )
        role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return {
        "WORKFLOWS_SCHEDULE_GROUP": group,
        "WORKFLOWS_SCHEDULER_ROLE_ARN": role_arn,
        "WORKFLOWS_DISPATCH_QUEUE_ARN": attributes["QueueArn"],
    }
