"""`log`: render a message and record it in the run's events (in the function's log at DEBUG)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.observability import logger
from workflows.steps.base import StepContext, StepResult, TemplateField


class LogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        min_length=1,
        max_length=16384,
        description="Jinja2 template of the message (text), the output's `message`",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Recorded with the message; `warning` and `error` also leave a line, without the text,"
        " in the function's log",
    )


class LogStep:
    name = "log"
    description = "Render a templated message and record it in the run's events."
    config_model = LogConfig
    example = {"message": "Hello {{ inputs.name }}", "level": "info"}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    pure: Literal[True] = True  # steps.base.Pure: a map item of these runs inside its parent
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, LogConfig)
        return [TemplateField("message", config.message)]

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, LogConfig)
        # Imported on first use: jinja2 stays off the cold-start path of functions that never
        # render (the API validates log steps, the DLQ worker never sees them).
        from workflows.templating import render

        message = render(config.message, context.template_context())
        # The message is the run's own record (its step_completed event): the function's log
        # carries it only at DEBUG, so CloudWatch Logs ingestion does not pay for every message
        # twice. A `warning` or `error` step still leaves a line, without the text, at its level.
        keys = {"step_id": context.step_id, "run_id": context.run_id, "chars": len(message)}
        logger.debug("workflow log step", extra={**keys, "level": config.level, "message_text": message})
        if config.level in ("warning", "error"):
            getattr(logger, config.level)("workflow log step", extra=keys)
        output = {"message": message, "level": config.level}
        return StepResult(output=output)
