"""`delay`: wait without sleeping. The engine parks the run and sends itself a delayed SQS
message (at most 15 minutes each, chained up to an hour); the sweeper wakes a longer wait near
its deadline (docs/engine.md, "Waiting without sleeping")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from workflows.clock import iso
from workflows.steps.base import StepContext, StepOutcome, StepResult, Suspend, TemplateField

MAX_DELAY_SECONDS = 365 * 24 * 3600


class DelayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        description="Wait this many seconds (fractions allowed); give exactly one of `seconds`,"
        " `milliseconds` and `until`",
    )
    milliseconds: int | None = Field(
        default=None, ge=0, le=MAX_DELAY_SECONDS * 1000, description="Wait this many milliseconds"
    )
    until: AwareDatetime | None = Field(
        default=None,
        description="Wait until this RFC 3339 timestamp, with a time zone; a moment already past"
        " completes the step at once",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DelayConfig:
        given = [name for name in ("seconds", "milliseconds", "until") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of seconds, milliseconds or until")
        return self

    def wake_at(self, now: datetime) -> datetime:
        if self.until is not None:
            return self.until
        if self.milliseconds is not None:
            return now + timedelta(milliseconds=self.milliseconds)
        return now + timedelta(seconds=self.seconds or 0)


class DelayStep:
    name = "delay"
    description = "Wait for a duration or until a timestamp, without holding a Lambda."
    config_model = DelayConfig
    example = {"seconds": 30}
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return []

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, DelayConfig)
        wake_at = context.wait_until or config.wake_at(context.now)
        if context.now >= wake_at:
            return StepResult(output={"waited_until": iso(wake_at)})
        return Suspend(until=wake_at)
