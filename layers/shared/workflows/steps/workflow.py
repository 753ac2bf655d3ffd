"""`workflow`: start a saved workflow as a child run and, with `wait: true`, take its outcome as
the step's: its outputs, or its failure. docs/steps.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.domain.ids import UUID_PATTERN
from workflows.steps.base import Spawn, StepContext, StepOutcome, TemplateField


class WorkflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(pattern=UUID_PATTERN, description="The saved workflow to run (its id)")
    version: int | None = Field(default=None, ge=1, description="Its version; unset: the latest")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="The child's inputs; every string is a template (typed values), checked against"
        " the child's inputs_schema",
    )
    wait: bool = Field(
        default=True,
        description="`true`: the step ends with the child run (its outputs, or its failure);"
        " `false`: the step starts it and goes on (output: its `run_id`)",
    )


class WorkflowStep:
    name = "workflow"
    description = "Run a saved workflow as a child run; with wait (the default), its outputs are the step's."
    config_model = WorkflowConfig
    example = {
        "workflow_id": "0b8e3c52-2f4d-4f8e-9a51-7c6d2e1f3a90",
        "inputs": {"order_id": "{{ inputs.order_id }}"},
        "wait": True,
    }
    min_engine_version = "1.1.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, WorkflowConfig)
        from workflows.templating import strings

        return [TemplateField(f"inputs.{path}", source) for path, source in strings(config.inputs)]

    def started_workflow(self, config: BaseModel) -> str | None:
        assert isinstance(config, WorkflowConfig)
        return config.workflow_id

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, WorkflowConfig)
        from workflows.templating import render_values

        inputs = render_values(config.inputs, context.template_context())
        return Spawn(
            kind="workflow",
            workflow_id=config.workflow_id,
            version=config.version,
            inputs=inputs,
            wait=config.wait,
        )
