"""`wait_for_signal`: the run waits for one (`mode: any`) or all (`mode: all`) of several named
signals (`POST /signals`, `POST /runs/{id}/signals`), each matched on fields of its data, until
`timeout_seconds` pass; then the step fails with `timeout`, which the step's `on_timeout` (or
`on_failure`) routes. A signal sent up to `lookback_seconds` before the wait began counts too
(docs/signals.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from workflows.clock import iso
from workflows.domain.failures import StepFailed
from workflows.domain.signals import (
    MAX_AWAITED,
    MAX_LOOKBACK_SECONDS,
    MAX_MATCH_FIELDS,
    check_name,
    taken_before,
)
from workflows.steps.base import StepContext, StepOutcome, Suspend, TemplateField

MAX_WAIT_SECONDS = 30 * 24 * 3600
_PATH = r"^[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,7}$"


class AwaitedSignal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(check_name)] = Field(description="The signal's name")
    match: dict[Annotated[str, Field(pattern=_PATH)], Any] = Field(
        default_factory=dict,
        max_length=MAX_MATCH_FIELDS,
        description="Fields of the signal's data (dotted paths, `order.id`) and the value each must"
        " have; every string is a Jinja2 template rendered when the wait begins, and one that is"
        " exactly `{{ expression }}` becomes the expression's JSON value (Templates, typed values)",
    )


class WaitForSignalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signals: list[AwaitedSignal] = Field(
        min_length=1, max_length=MAX_AWAITED, description="The signals the run waits for"
    )
    mode: Literal["any", "all"] = Field(
        default="any", description="`any`: the first matching signal ends the wait; `all`: one of each name"
    )
    lookback_seconds: float = Field(
        default=0,
        ge=0,
        le=MAX_LOOKBACK_SECONDS,
        description="A signal sent up to this long before the wait began counts too (at most a day)",
    )
    timeout_seconds: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="How long the run waits; then the step fails with `timeout` (the step's"
        " `on_timeout` routes it)",
    )

    @field_validator("signals")
    @classmethod
    def _distinct(cls, value: list[AwaitedSignal]) -> list[AwaitedSignal]:
        names = [signal.name for signal in value]
        if len(set(names)) != len(names):
            raise ValueError("each signal name may be listed once")
        return value


class WaitForSignalStep:
    name = "wait_for_signal"
    description = "Wait for named signals (POST /signals), matched on their data, with a timeout."
    config_model = WaitForSignalConfig
    example = {
        "signals": [{"name": "payment.settled", "match": {"order_id": "{{ inputs.order_id }}"}}],
        "timeout_seconds": 3600,
    }
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, WaitForSignalConfig)
        from workflows.templating import strings

        return [
            TemplateField(f"signals[{i}].match.{field}" + (f".{p}" if p else ""), source)
            for i, signal in enumerate(config.signals)
            for field, value in signal.match.items()
            for p, source in strings(value)
        ]

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, WaitForSignalConfig)
        if context.wait_until is not None and context.now >= context.wait_until:
            raise StepFailed(
                "timeout", "no signal the step waits for came before its timeout", retryable=False
            )
        # Imported here: jinja2 stays off the cold-start path until a step renders.
        from workflows.templating import render_values

        template_context = context.template_context()
        awaited = [
            {"name": signal.name, "match": render_values(signal.match, template_context)}
            for signal in config.signals
        ]
        since = iso(context.now - timedelta(seconds=config.lookback_seconds))
        # A wait in a loop counts only signals sent since what it took on its previous pass, and
        # never those again.
        taken, latest = taken_before(context.step_outputs.get(context.step_id))
        wait: dict[str, Any] = {"mode": config.mode, "signals": awaited, "since": max(since, latest or since)}
        if taken:
            wait["taken"] = taken
        return Suspend(
            until=context.wait_until or context.now + timedelta(seconds=config.timeout_seconds),
            signals=wait,
        )
