"""Schedule expressions in EventBridge Scheduler syntax, and when they fire.

Supported (the same strings EventBridge Scheduler takes, so a schedule means the same thing
deployed and on the local stack):

- `cron(minutes hours day-of-month month day-of-week year)`: six fields; exactly one of
  day-of-month and day-of-week is `?`. Day-of-week counts 1-7 from Sunday (or SUN-SAT);
  `,` `-` `*` `/` everywhere, `L` and `W` in day-of-month (`L`, `15W`), `L` and `#` in
  day-of-week (`6L` last Friday, `2#1` first Monday). Years 1970-2099. Not supported: `LW`.
- `rate(N unit)`: unit `minute` | `hour` | `day` when N is 1, `minutes` | `hours` | `days`
  otherwise. Fires every N units, the first time one interval after its anchor.
- `at(yyyy-mm-ddThh:mm:ss)`: once, at that wall-clock time.

Times are wall-clock times in the schedule's IANA time zone. Parsing and iteration of cron
fields is croniter's; this module only translates EventBridge's dialect into croniter's
(day-of-week numbering, `?`, the year as the seventh field) and refuses what it cannot map.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

SCHEDULED_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
# croniter's year range is 1970-2099: a search may need to span all of it.
_YEARS = 130
_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELD_NAMES = ("minutes", "hours", "day-of-month", "month", "day-of-week", "year")
_FIELD_CHARS = (
    r"[0-9,\-*/]+",
    r"[0-9,\-*/]+",
    r"[0-9,\-*/?LW]+",
    r"[0-9A-Z,\-*/]+",
    r"[0-9A-Z,\-*?L#/]+",
    r"[0-9,\-*/]+",
)


class ExpressionError(ValueError):
    """An expression or time zone this service does not accept; the message says why."""


@dataclass(frozen=True)
class ScheduleExpression:
    kind: Literal["cron", "rate", "at"]
    text: str
    cron: str | None = None  # croniter's form: min hour dom month dow second year
    interval: timedelta | None = None
    at: datetime | None = None  # naive wall-clock time in the schedule's zone

    def occurrences(
        self, zone: ZoneInfo, *, after: datetime, until: datetime, anchor: datetime | None = None
    ) -> Iterator[datetime]:
        """Fire times t (UTC) with after < t <= until, in order.

        `anchor` is a rate schedule's first fire time (required for rate, unused otherwise).
        """
        after, until = after.astimezone(UTC), until.astimezone(UTC)
        if self.kind == "at":
            assert self.at is not None
            moment = self.at.replace(tzinfo=zone).astimezone(UTC)
            if after < moment <= until:
                yield moment
            return
        if self.kind == "rate":
            assert self.interval is not None
            if anchor is None:
                raise ValueError("a rate schedule needs its anchor")
            anchor = anchor.astimezone(UTC)
            step = self.interval
            k = 0 if after < anchor else (after - anchor) // step + 1
            moment = anchor + k * step
            while moment <= until:
                yield moment
                moment += step
            return
        assert self.cron is not None
        from croniter import CroniterError, croniter  # off the cold-start path

        iterator = croniter(self.cron, after.astimezone(zone), max_years_between_matches=_YEARS)
        while True:
            try:
                moment = iterator.get_next(datetime).astimezone(UTC)
            except CroniterError:  # no further match (e.g. past the last year named)
                return
            if moment > until:
                return
            yield moment

    def next_after(self, zone: ZoneInfo, moment: datetime, anchor: datetime | None = None) -> datetime | None:
        """The first fire time strictly after `moment`, or None when it never fires again."""
        horizon = moment + timedelta(days=366 * 80)
        return next(iter(self.occurrences(zone, after=moment, until=horizon, anchor=anchor)), None)


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ExpressionError(f"'{name}' is not a known IANA time zone (e.g. UTC, Europe/Berlin)") from exc


def parse_expression(text: str) -> ScheduleExpression:
    text = text.strip()
    if match := _RATE.match(text):
        return _parse_rate(text, int(match.group(1)), match.group(2))
    if match := _AT.match(text):
        try:
            moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
        except ValueError as exc:
            raise ExpressionError(f"'{match.group(1)}' is not a valid date and time") from exc
        return ScheduleExpression(kind="at", text=text, at=moment)
    if match := _CRON.match(text):
        return ScheduleExpression(kind="cron", text=text, cron=_to_croniter(match.group(1)))
    raise ExpressionError(
        "expected cron(min hour day-of-month month day-of-week year), rate(N minutes|hours|days) "
        "or at(yyyy-mm-ddThh:mm:ss)"
    )


def _parse_rate(text: str, value: int, unit: str) -> ScheduleExpression:
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ExpressionError(f"rate unit '{unit}' is not one of minute(s), hour(s), day(s)")
    if value < 1:
        raise ExpressionError("a rate must be a positive whole number")
    if value == 1 and unit != singular:
        raise ExpressionError(f"use the singular unit with 1: rate(1 {singular})")
    if value > 1 and unit == singular:
        raise ExpressionError(f"use the plural unit with {value}: rate({value} {singular}s)")
    return ScheduleExpression(kind="rate", text=text, interval=timedelta(seconds=value * _UNITS[singular]))


def _to_croniter(body: str) -> str:
    fields = body.split()
    if len(fields) != 6:
        raise ExpressionError(
            f"cron needs 6 fields (minutes hours day-of-month month day-of-week year), got {len(fields)}"
        )
    fields = [f.upper() for f in fields]
    for name, value, chars in zip(_FIELD_NAMES, fields, _FIELD_CHARS, strict=True):
        if not re.fullmatch(chars, value):
            raise ExpressionError(f"cron {name} field '{value}' has characters it does not allow")
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ExpressionError("cron: exactly one of day-of-month and day-of-week must be '?'")
    if ("?" in dom and dom != "?") or ("?" in dow and dow != "?"):
        raise ExpressionError("cron: '?' stands alone in its field")
    if "LW" in dom:
        raise ExpressionError("cron day-of-month 'LW' is not supported; use 'L' or a day with 'W'")
    dom = "*" if dom == "?" else dom
    dow = "*" if dow == "?" else ",".join(_dow_item(item) for item in dow.split(","))
    expression = f"{minutes} {hours} {dom} {month} {dow} 0 {year}"
    from croniter import CroniterError, croniter  # off the cold-start path

    try:
        # Building the iterator checks ranges; one step checks that it can fire at all.
        first = croniter(expression, datetime(1970, 1, 1, tzinfo=UTC), max_years_between_matches=_YEARS)
        first.get_next(datetime)
    except CroniterError as exc:
        raise ExpressionError(f"cron({body}) is not a valid expression or never fires: {exc}") from exc
    return expression


def _dow_item(item: str) -> str:
    """One day-of-week list item: EventBridge counts 1-7 from Sunday, croniter 0-6."""
    if item == "*" or item.startswith("*/"):
        return item
    if match := re.fullmatch(r"([0-9A-Z]+)L", item):
        return f"L{_dow_value(match.group(1))}"
    if match := re.fullmatch(r"([0-9A-Z]+)#([1-5])", item):
        return f"{_dow_value(match.group(1))}#{match.group(2)}"
    if match := re.fullmatch(r"([0-9A-Z]+)(?:-([0-9A-Z]+))?(/\d+)?", item):
        start, end, step = match.groups()
        out = _dow_value(start) + (f"-{_dow_value(end)}" if end else "")
        return out + (step or "")
    raise ExpressionError(f"cron day-of-week item '{item}' is not supported")


def _dow_value(value: str) -> str:
    if value in _DOW_NAMES:
        return value
    if value.isdigit() and 1 <= int(value) <= 7:
        return str(int(value) - 1)
    raise ExpressionError(f"cron day-of-week '{value}' is not 1-7 or SUN-SAT")


def scheduled_time_text(moment: datetime) -> str:
    """How EventBridge Scheduler writes <aws.scheduler.scheduled-time>: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime(SCHEDULED_TIME_FORMAT)


def parse_scheduled_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ExpressionError(f"'{text}' is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Schedule(BaseModel):
    schedule_id: str
    tenant_id: str
    workflow_id: str
    expression: str
    timezone: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = None
    enabled: bool = True
    # rate: the first fire time (later fires are on its grid); cron, at: when the expression was set.
    anchor_at: str
    created_at: str
    updated_at: str
    created_by: str
    revision: int = 1
    last_fire: dict[str, Any] | None = None
