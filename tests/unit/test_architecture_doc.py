"""What docs/architecture.md says holds: its quick check of the rooms finds nothing, and its guide
to a new step type says what the engine does with an error the step raises that is not a
`StepFailed` (recorded as the step's `internal_error` with the delivery's correlation id, not left
to SQS to deliver again)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tests.conftest import FakeClock, make_fake
from tests.faults import registry_with
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.domain.run import RunStatus
from workflows.steps.base import StepContext, StepResult, TemplateField

ROOT = Path(__file__).parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CALLER = Principal("default", "admin", ALL_PERMISSIONS)


class BuggyConfig(BaseModel):
    pass


class BuggyStep:
    """A step type with a bug: it raises an error that is not one of its failures."""

    name = "buggy"
    description = "test step"
    config_model = BuggyConfig
    example: dict[str, object] = {}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        raise KeyError("a bug in the step")


def _section(title: str) -> str:
    text = ARCHITECTURE.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match is not None, title
    return " ".join(match.group(1).split())


def test_the_guide_says_an_error_a_step_raises_is_recorded_as_internal_error() -> None:
    guide = _section("Where a new step type goes")
    assert "`internal_error`" in guide
    assert "correlation id" in guide
    assert "retried by SQS" not in guide


def test_an_error_a_step_raises_is_recorded_as_its_internal_error_with_the_correlation_id(
    clock: FakeClock,
) -> None:
    parts = make_fake(clock).give(registry=registry_with(BuggyStep()))
    definition = WorkflowDefinition.model_validate(
        {"name": "buggy", "steps": [{"id": "s1", "type": "buggy", "config": {}}]}
    )
    run = parts.run_service.submit(CALLER, definition, {})
    [kick] = parts.queue.receive()

    outcome = parts.engine.process(kick, correlation_id="msg-1")

    assert outcome.action == "advanced"  # recorded, not raised for SQS to deliver again
    failed = parts.runs.get("default", run.run_id)
    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert (failed.error["code"], failed.error["step_id"]) == ("internal_error", "s1")
    assert failed.error["correlation_id"] == "msg-1"


def test_the_quick_check_of_services_and_engine_finds_nothing() -> None:
    text = " ".join(ARCHITECTURE.read_text().split())
    match = re.search(r"A quick check anyone can run: `(grep [^`]+)` finds nothing", text)
    assert match is not None
    found = subprocess.run(["bash", "-c", match.group(1)], cwd=ROOT, capture_output=True, text=True)
    assert (found.returncode, found.stdout) == (1, "")  # grep: no line matched
