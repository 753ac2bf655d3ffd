"""EventBridge Scheduler expressions: what is accepted, and when each fires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows.domain.schedules import (
    ExpressionError,
    parse_expression,
    parse_scheduled_time,
    parse_timezone,
    scheduled_time_text,
)

UTC_ZONE = parse_timezone("UTC")
START = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # a Thursday


def fires(text: str, *, zone: str = "UTC", days: int = 40, anchor: datetime | None = None) -> list[datetime]:
    expression = parse_expression(text)
    until = START + timedelta(days=days)
    return list(expression.occurrences(parse_timezone(zone), after=START, until=until, anchor=anchor))


def test_rate_fires_every_interval_from_its_anchor() -> None:
    anchor = START + timedelta(minutes=5)
    times = fires("rate(5 minutes)", days=1, anchor=anchor)
    assert times[:3] == [anchor, anchor + timedelta(minutes=5), anchor + timedelta(minutes=10)]
    assert len(times) == 288


def test_rate_occurrences_skip_what_is_already_past() -> None:
    expression = parse_expression("rate(1 hour)")
    after = START + timedelta(minutes=90)
    times = list(
        expression.occurrences(UTC_ZONE, after=after, until=after + timedelta(hours=2), anchor=START)
    )
    assert times == [START + timedelta(hours=2), START + timedelta(hours=3)]


@pytest.mark.parametrize("text", ["rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "rate(2 weeks)"])
def test_rate_units_follow_eventbridge(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(text)


def test_cron_day_of_week_counts_from_sunday_as_one() -> None:
    # 2 = Monday in EventBridge (1 = Sunday).
    times = fires("cron(0 9 ? * 2 *)", days=14)
    assert [t.strftime("%a %H:%M") for t in times] == ["Mon 09:00", "Mon 09:00"]
    assert fires("cron(0 9 ? * MON-FRI *)", days=7)[0] == datetime(2026, 1, 1, 9, tzinfo=UTC)


def test_cron_last_weekday_and_nth_weekday() -> None:
    assert fires("cron(0 8 ? * 6L *)")[0] == datetime(2026, 1, 30, 8, tzinfo=UTC)  # last Friday
    assert fires("cron(0 8 ? * 2#1 *)")[0] == datetime(2026, 1, 5, 8, tzinfo=UTC)  # first Monday
    assert fires("cron(0 8 L * ? *)")[0] == datetime(2026, 1, 31, 8, tzinfo=UTC)  # last day


def test_cron_in_a_time_zone_is_wall_clock_time() -> None:
    times = fires("cron(0 2 * * ? *)", zone="America/New_York", days=2)
    assert times[0] == datetime(2026, 1, 1, 7, tzinfo=UTC)


def test_cron_year_field_limits_fires() -> None:
    expression = parse_expression("cron(0 0 1 1 ? 2026)")
    assert expression.next_after(UTC_ZONE, START - timedelta(seconds=1)) == START
    assert expression.next_after(UTC_ZONE, START) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cron(0 9 * * *)", "6 fields"),
        ("cron(0 9 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 9 ? * ? *)", "exactly one of day-of-month and day-of-week"),
        ("cron(61 9 * * ? *)", "not a valid expression"),
        ("cron(0 9 ? * 8 *)", "day-of-week '8'"),
        ("cron(0 9 31 2 ? *)", "never fires"),
        ("cron(0 9 LW * ? *)", "not supported"),
        ("every day", "expected cron("),
        ("at(2026-02-30T10:00:00)", "not a valid date"),
    ],
)
def test_invalid_expressions_say_why(text: str, says: str) -> None:
    with pytest.raises(ExpressionError, match=None) as caught:
        parse_expression(text)
    assert says in str(caught.value)


def test_at_fires_once_at_wall_clock_time_in_its_zone() -> None:
    times = fires("at(2026-01-10T10:30:00)", zone="Europe/Berlin")
    assert times == [datetime(2026, 1, 10, 9, 30, tzinfo=UTC)]


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ExpressionError, match="IANA"):
        parse_timezone(name)


def test_scheduled_time_round_trips_in_eventbridge_format() -> None:
    moment = datetime(2026, 3, 1, 2, 0, 5, tzinfo=UTC)
    assert scheduled_time_text(moment) == "2026-03-01T02:00:05Z"
    assert parse_scheduled_time("2026-03-01T02:00:05Z") == moment
