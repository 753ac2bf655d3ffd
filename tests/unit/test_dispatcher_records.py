"""The records of one dispatcher batch, worked side by side (roots/dispatcher.py): each logs with
its own keys only, and each counts what it did under one metric name, its outcome a dimension."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import FakeClock, log_definition, make_fake
from tests.faults import Faulty
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.messages import StartScheduledRun
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.observability import count, logger, metrics
from workflows.roots import dispatcher
from workflows.roots.parts import Parts

ADA = Principal(tenant_id="t1", user_id="ada", permissions=ALL_PERMISSIONS)


class _Context:
    function_name = "DispatcherFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dispatcher"
    aws_request_id = "batch-1"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


def _record(body: str, n: int) -> dict[str, Any]:
    return {
        "messageId": f"m{n}",
        "receiptHandle": f"r{n}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dispatch",
        "awsRegion": "us-east-1",
    }


@dataclass
class Batch:
    event: dict[str, Any]
    schedule_id: str
    run_id: str


@pytest.fixture
def parts(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Parts:
    """Fake parts whose schedule and run stores can be made to wait (`meet_in_flight`)."""
    c = make_fake(clock)
    c.give(schedules=Faulty(c.schedules), runs=Faulty(c.runs))
    monkeypatch.setattr(dispatcher, "parts", lambda: c)
    return c


def meet_in_flight(parts: Parts) -> None:
    """From now on the fire reads its schedule, and the kick its run, only once the other record
    has started too: the two records are in flight at the same time."""
    both_started = threading.Barrier(2, timeout=10)

    def meet(*args: object, **kwargs: object) -> None:
        both_started.wait()

    for store, method in ((parts.schedules, "get"), (parts.runs, "get_with_definition")):
        assert isinstance(store, Faulty)
        store.hook(method, meet)


@pytest.fixture
def batch(parts: Parts, clock: FakeClock) -> Batch:
    """A batch of a schedule's fire and a run's kick, both of tenant t1."""
    head, _ = parts.definition_service.create(ADA, WorkflowDefinition.model_validate(log_definition("fired")))
    schedule = parts.schedule_service.create(ADA, workflow_id=head.workflow_id, expression="rate(1 hour)")
    run = parts.run_service.submit(ADA, WorkflowDefinition.model_validate(log_definition("kicked")), {})
    [kick] = parts.queue.receive()
    fire = StartScheduledRun(
        tenant_id="t1",
        schedule_id=schedule.schedule_id,
        scheduled_time=clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    event = {"Records": [_record(fire.to_body(), 0), _record(kick.to_body(), 1)]}
    meet_in_flight(parts)
    return Batch(event, schedule.schedule_id, run.run_id)


class Written:
    """What the logger writes while the test runs (INFO and above), as JSON lines."""

    def __init__(self) -> None:
        self.text = io.StringIO()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def written() -> Iterator[Written]:
    capture = Written()
    handler = logging.StreamHandler(capture.text)
    handler.setFormatter(logger.registered_formatter)
    level = logger.log_level
    logger.addHandler(handler)
    logger.setLevel("INFO")
    try:
        yield capture
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


def _emf(out: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format lines among what was printed."""
    return [line for line in map(_json, out.splitlines()) if line and "_aws" in line]


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _names(line: dict[str, Any]) -> list[str]:
    return [m["Name"] for block in line["_aws"]["CloudWatchMetrics"] for m in block["Metrics"]]


def _dimensions(line: dict[str, Any]) -> list[list[str]]:
    return [list(dims) for block in line["_aws"]["CloudWatchMetrics"] for dims in block["Dimensions"]]


def test_a_batchs_fire_and_kick_log_neither_ones_keys_on_the_others_lines(
    batch: Batch, written: Written
) -> None:
    # When one batch holds a schedule's fire and a run's kick, worked at the same time
    response = dispatcher.handle(batch.event, _Context())
    assert response == {"batchItemFailures": []}
    log_lines = written.lines

    # Then the fire's lines carry its schedule, never the kicked run, and the kick's lines the
    # other way round
    fired = [line for line in log_lines if line.get("message") == "schedule fired"]
    kicked = [line for line in log_lines if line.get("message") == "kick processed"]
    assert len(fired) == len(kicked) == 1
    assert fired[0]["schedule_id"] == batch.schedule_id
    assert kicked[0]["run_id"] == batch.run_id
    fire_lines = [line for line in log_lines if line.get("schedule_id") == batch.schedule_id]
    kick_lines = [line for line in log_lines if line.get("run_id") == batch.run_id]
    assert fire_lines
    assert kick_lines
    assert all(line.get("run_id") != batch.run_id for line in fire_lines)
    assert all("schedule_id" not in line for line in kick_lines)


def test_each_record_counts_its_outcome_as_a_dimension_of_one_metric(
    batch: Batch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    dispatcher.handle(batch.event, _Context())
    lines = _emf(capsys.readouterr().out)

    # One metric per kind of record, its outcome a dimension beside the service's
    by_name = {name: line for line in lines for name in _names(line)}
    assert by_name["Kicks"]["action"] == "advanced"
    assert by_name["ScheduleFires"]["result"] == "started"
    assert _dimensions(by_name["Kicks"]) == [["action", "service"]]
    assert _dimensions(by_name["ScheduleFires"]) == [["result", "service"]]
    assert by_name["Kicks"]["service"] == by_name["ScheduleFires"]["service"] == "workflows"
    assert by_name["Kicks"]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Workflows"
    # No metric is named after a value, and no other metric took the records' dimensions
    names = [name for line in lines for name in _names(line)]
    assert not [name for name in names if "_" in name]
    for line in lines:
        if "Kicks" not in _names(line) and "ScheduleFires" not in _names(line):
            assert "action" not in line
            assert "result" not in line


def test_a_count_without_dimensions_joins_the_invocations_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    count("Probes", 3)
    assert capsys.readouterr().out == ""  # written when the handler flushes its metrics
    metrics.flush_metrics()
    [line] = _emf(capsys.readouterr().out)
    assert "Probes" in _names(line)
    assert line["Probes"] == [3.0]
    assert _dimensions(line) == [["service"]]
