"""The `log` step records its message in the run's events; the function's log carries the text
only at DEBUG, so CloudWatch Logs does not ingest every message a second time."""

from __future__ import annotations

import json
import logging

import pytest

from workflows.observability import logger
from workflows.steps.base import StepContext
from workflows.steps.log import LogConfig, LogStep

SECRETISH = "the quarterly numbers are 42"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _run(level: str, at: int) -> tuple[object, list[logging.LogRecord]]:
    context = StepContext(
        run_id="r1",
        tenant_id="t1",
        workflow_id=None,
        step_id="say",
        attempt=1,
        inputs={},
        step_outputs={},
        last=None,
    )
    collect = Collect()
    std = logger._logger  # the Powertools logger's standard logger
    previous = std.level
    std.addHandler(collect)
    std.setLevel(at)
    try:
        result = LogStep().execute(LogConfig(message=SECRETISH, level=level), context)  # type: ignore[arg-type]
    finally:
        std.removeHandler(collect)
        std.setLevel(previous)
    return result.output, collect.records


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_the_message_reaches_the_function_log_only_at_debug(level: str) -> None:
    output, at_info = _run(level, logging.INFO)
    _, at_debug = _run(level, logging.DEBUG)
    assert output == {"message": SECRETISH, "level": level}  # the run's record keeps it
    assert all(SECRETISH not in json.dumps(record.__dict__, default=str) for record in at_info)
    # A warning or an error still leaves a line at its level (without the text).
    expected = [level.upper()] if level in ("warning", "error") else []
    assert [record.levelname for record in at_info] == expected
    assert any(getattr(record, "message_text", None) == SECRETISH for record in at_debug)
