"""`branch`: evaluate a condition against the run's context and pick the next step."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.domain.failures import StepFailed
from workflows.steps.base import StepContext, StepOutcome, StepResult, TemplateField

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", "", "none", "null"})


class BranchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: str = Field(
        min_length=1,
        max_length=4096,
        description="A bare Jinja2 expression (`inputs.score > 0.5`), true when its value is (an empty"
        " list, 0 and null are false), or a template (`{{ ... }}`) whose text must read `true`, `1`,"
        " `yes`, `on` or `false`, `0`, `no`, `off`, `none`, `null`, empty (any case); any other text"
        " fails the step with `condition_not_boolean`",
    )
    true_next: str = Field(description="Step id to go to when the condition is true, or `_end`")
    false_next: str = Field(description="Step id to go to when the condition is false, or `_end`")


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise StepFailed("condition_not_boolean", f"condition rendered '{value[:80]}', not true/false")
    return bool(value)


class BranchStep:
    name = "branch"
    description = "Choose the next step from a condition on inputs and earlier outputs."
    config_model = BranchConfig
    example = {"condition": "inputs.score > 0.5", "true_next": "_end", "false_next": "_end"}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    pure: Literal[True] = True  # steps.base.Pure: a map item of these runs inside its parent
    # The branch decides where the run goes: its config names both ways, on_success is unused.
    route_fields = ("true_next", "false_next")
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, BranchConfig)
        return [TemplateField("condition", config.condition, expression=True)]

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, BranchConfig)
        # Imported on first use: jinja2 stays off the cold-start path of functions that never
        # evaluate a condition (the API validates branch steps, the DLQ worker never sees them).
        from jinja2 import TemplateError

        from workflows.templating import evaluate

        try:
            value = evaluate(config.condition, context.template_context())
        except TemplateError as exc:  # pragma: no cover - evaluate already maps these
            raise StepFailed("template_error", str(exc)) from exc
        result = truthy(value)
        target = config.true_next if result else config.false_next
        return StepResult(output={"result": result, "next": target}, next_step=target)
