"""`log`: render a message and record it in the run's events and the function's log."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.observability import logger
from workflows.steps.base import StepContext, StepResult, TemplateField


class LogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=16384, description="Jinja2 template")
    level: Literal["debug", "info", "warning", "error"] = "info"


class LogStep:
    name = "log"
    description = "Render a templated message and record it in the run's events."
    config_model = LogConfig
    example = {"message": "Hello {{ inputs.name }}", "level": "info"}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, LogConfig)
        return [TemplateField("message", config.message)]

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, LogConfig)
        # Imported on first use: jinja2 stays off the cold-start path of functions that never
        # render (the API validates log steps, the DLQ worker never sees them).
        from workflows.templating import render

        message = render(config.message, context.template_context())
        emit = {"debug": logger.debug, "info": logger.info, "warning": logger.warning, "error": logger.error}
        emit[config.level]("workflow log step", extra={"step_id": context.step_id, "message_text": message})
        output = {"message": message, "level": config.level}
        return StepResult(output=output)
