"""The cost benchmark's attribution of the sweeper to long waits, its schedule and its table rows
(no emulator is started here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bench import report, waits
from bench.prices import PRICES

IDLE = {"dynamodb.requests": 16, "dynamodb.Query": 16, "dynamodb.rru": 8}
MOMENT = datetime(2026, 12, 6, tzinfo=UTC)


def _sweep(counts: dict[str, float], seconds: float, **report: int) -> waits.Sweep:
    return waits.Sweep(MOMENT, counts, seconds, {"candidates": 0, "woken": 0, **report})


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(5 minutes)", 300), ("rate(1 minute)", 60), ("rate(2 hours)", 7200), ("rate(1 day)", 86_400)],
)
def test_a_rate_schedule_gives_the_sweepers_period(expression: str, seconds: int) -> None:
    assert waits.rate_seconds(expression) == seconds


def test_a_cron_schedule_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="rate"):
        waits.rate_seconds("cron(0/5 * * * ? *)")


def test_idle_sweeps_are_shared_by_the_waiting_runs_and_a_wake_is_charged_in_full() -> None:
    # Given ten idle sweeps and one that woke the run (a read, a commit and its kick)
    wake = {
        **IDLE,
        "dynamodb.requests": 18,
        "dynamodb.GetItem": 1,
        "dynamodb.PutItem": 1,
        "dynamodb.rru": 9,
        "dynamodb.wru": 1,
        "dynamodb.wru_index": 2,
        "sqs.requests": 1,
        "sqs.SendMessage": 1,
        "sqs.billed_requests": 1,
    }
    sweeps = [_sweep(dict(IDLE), 0.020) for _ in range(10)] + [_sweep(wake, 0.030, woken=1)]

    # When they are charged to a run among 1,000 waiting
    charged = waits.attribute(sweeps, scale=1.0, waiting_runs=1000, memory_mb=512)

    # Then each of the 11 invocations' idle cost is shared, and what the wake did beyond it is the run's
    gb_second = 512 / 1024 * PRICES["lambda_per_gb_second_arm64"]
    shared = (
        11 * 8 / 1000 * PRICES["dynamodb_per_million_rru"] / 1e6
        + 11 / 1000 * PRICES["lambda_per_million_requests"] / 1e6
        + 11 * 0.020 / 1000 * gb_second
    )
    own = (
        3 * PRICES["dynamodb_per_million_wru"] / 1e6
        + 1 * PRICES["dynamodb_per_million_rru"] / 1e6
        + 1 * PRICES["sqs_per_million_requests"] / 1e6
        + 0.010 * gb_second
    )
    assert charged["sweeps"] == 11
    assert charged["shared_usd"] == pytest.approx(shared)
    assert charged["own_usd"] == pytest.approx(own)
    assert charged["beyond_idle"]["requests"] == {"GetItem": 1, "PutItem": 1, "SendMessage": 1}
    assert charged["requests_own"] == 3


def test_a_stand_in_wait_scales_only_the_shared_sweeps() -> None:
    sweeps = [_sweep(dict(IDLE), 0.020) for _ in range(23)] + [
        _sweep({**IDLE, "dynamodb.rru": 9}, 0.021, woken=1)
    ]

    short = waits.attribute(sweeps, scale=1.0, waiting_runs=1000, memory_mb=512)
    day = waits.attribute(sweeps, scale=12.0, waiting_runs=1000, memory_mb=512)

    assert day["sweeps"] == 288
    assert day["shared_usd"] == pytest.approx(12 * short["shared_usd"])
    assert day["own_usd"] == pytest.approx(short["own_usd"])


def test_a_delayed_message_becomes_visible_when_the_clock_reaches_it() -> None:
    clock = waits.MovedClock(MOMENT)
    delays = waits.DelaysOnClock(clock)
    params: dict[str, Any] = {"QueueUrl": "q", "MessageBody": "{}", "DelaySeconds": 660}
    context: dict[str, Any] = {}

    delays._before(params=params, context=context)
    delays._after(parsed={"MessageId": "m-1"}, context=context)

    assert params["DelaySeconds"] == 0  # moto would wait it in real time
    assert delays.visible_at["m-1"] == MOMENT + timedelta(seconds=660)


def _cost_results() -> dict[str, Any]:
    wait = {
        "status": "succeeded",
        "sweeper": {"sweeps": 288},
        "usd_per_million_steps_by_part": {"dynamodb_write": 6.0, "sweeper_dynamodb_read": 0.5},
    }
    return {
        "cost": {
            "webhook_usd_per_million_steps": 11.0,
            "webhook_instant_usd_per_million_steps": 10.0,
            "webhook_ratio_to_instant": 1.1,
            "prompt_usd_per_million_steps": 16.0,
            "prompt_instant_usd_per_million_steps": 10.0,
            "prompt_ratio_to_instant": 1.6,
            "calls": {
                "target_ratio": 1.5,
                "webhook_answer_seconds": 0.2,
                "prompt_answer_seconds": 2.0,
                "scenarios": {
                    "webhook_slow": {"status": "succeeded", "steps": 30},
                    "prompt_slow": {"status": "succeeded", "steps": 30},
                },
            },
            "waits": {
                "waiting_runs_assumed": 1000,
                "targets": {"delay_1d_usd_per_million_steps": 6.0, "approval_7d_usd_per_million_steps": 12.0},
                "delay_1d": wait,
                "delay_1d_usd_per_million_steps": 6.5,
                "delay_1d_marginal_usd_per_million_steps": 6.5,
                "delay_1d_whole_run_usd_per_million_runs": 10.5,
                "approval_7d": {**wait, "status": "failed", "error_code": "approval_rejected"},
                "approval_7d_usd_per_million_steps": 11.0,
                "approval_7d_marginal_usd_per_million_steps": 11.0,
                "approval_7d_whole_run_usd_per_million_runs": 15.0,
            },
        }
    }


def test_slow_calls_are_held_to_their_ratio_to_the_same_step_answering_at_once() -> None:
    rows = {row[0]: row for row in report._call_rows(_cost_results()["cost"])}

    webhook = next(row for name, row in rows.items() if "webhook" in name)
    prompt = next(row for name, row in rows.items() if "prompt" in name)

    assert (webhook[3], webhook[5]) == ("1.10", "met")
    assert (prompt[3], prompt[5]) == ("1.60", "MISSED")


def test_long_waits_are_held_to_their_per_step_targets_with_the_whole_run_and_sweepers_part_shown() -> None:
    rows = report._wait_rows(_cost_results()["cost"]["waits"])

    verdicts = [(row[1], row[5]) for row in rows if row[4] != "(info)"]
    sweeper = [row for row in rows if "sweeper's part" in row[0]]

    assert verdicts == [("6.50", "MISSED"), ("11.00", "met")]
    assert [row[2] for row in rows if row[4] != "(info)"] == [
        "whole one-step run 10.50",
        "whole one-step run 15.00",
    ]
    assert "approval_rejected" in rows[2][0]
    assert [row[1] for row in sweeper] == ["0.50", "0.50"]


def test_the_slot_rows_hold_1000_running_to_the_ratio_and_show_4000_for_information() -> None:
    slots = {
        "target_ratio": 1.25,
        "running_10": {"wru_per_run": 21.0},
        "running_1000": {"wru_per_run": 27.0},
        "running_1000_vs_10_wru_per_run": 27 / 21,
        "running_4000": {"wru_per_run": 23.0},
        "running_4000_vs_10_wru_per_run": 23 / 21,
    }
    rows = report._slot_rows(slots)
    assert [(row[1], row[3], row[5]) for row in rows] == [("27.0", "1.29", "MISSED"), ("23.0", "1.10", "-")]
    slots["running_1000"] = {"wru_per_run": 21.0}
    slots["running_1000_vs_10_wru_per_run"] = 1.0
    assert report._slot_rows(slots)[0][5] == "met"
