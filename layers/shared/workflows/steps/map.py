"""`map`: the same steps once per item of a list, side by side (each item a child run, or a few
renders inside the run: `mode`), at most `max_concurrency` at once; output: the items' last
outputs in item order. docs/steps.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.domain.definition import StepSpec
from workflows.domain.failures import StepFailed
from workflows.steps.base import Spawn, StepContext, StepOutcome, TemplateField

MAX_CONCURRENCY = 100


class MapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] | str = Field(
        description="The items: a list, or a template that is exactly `{{ expression }}` giving one"
        " (Templates, typed values). At most WORKFLOWS_MAX_MAP_ITEMS (10,000)"
    )
    steps: list[StepSpec] = Field(
        min_length=1,
        description="Run once per item, as a child run whose templates see `item` and `index`",
    )
    max_concurrency: int = Field(default=10, ge=1, le=MAX_CONCURRENCY, description="Items running at once")
    tolerated_failures: int = Field(
        default=0, ge=0, description="Items that may fail (their output is null) before the step fails"
    )
    mode: Literal["auto", "child_runs"] = Field(
        default="auto",
        description="`auto`: when the steps are only `log` and `branch` steps (at most 20, none"
        " retried, no loop), items run inside this run, a batch per commit, at a fraction of a child"
        " run's cost; otherwise each item is a child run. `child_runs`: each item is always a child"
        " run of its own (its own page, events and retries)",
    )


class MapStep:
    name = "map"
    description = (
        "Run steps once per item of a list, side by side (child runs; items of only log and branch"
        " steps run inside the run, a batch per commit), at most max_concurrency at once; output:"
        " the items' last outputs in item order."
    )
    config_model = MapConfig
    example = {
        "items": "{{ inputs.orders }}",
        "steps": [{"id": "each", "type": "log", "config": {"message": "order {{ index }}: {{ item.id }}"}}],
        "max_concurrency": 5,
    }
    min_engine_version = "1.1.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    inline = True
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, MapConfig)
        return [TemplateField("items", config.items)] if isinstance(config.items, str) else []

    def nested(self, config: BaseModel) -> dict[str, list[StepSpec]]:
        assert isinstance(config, MapConfig)
        return {"steps": config.steps}

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, MapConfig)
        items: Any = config.items
        if isinstance(items, str):
            # Imported here: jinja2 stays off the cold-start path until a step renders.
            from workflows.templating import render_value

            items = render_value(items, context.template_context())
        if not isinstance(items, list):
            raise StepFailed(
                "invalid_items",
                f"items must be a list, the template gave {type(items).__name__}",
                retryable=False,
            )
        return Spawn(
            kind="map",
            steps=config.steps,
            items=items,
            max_concurrency=config.max_concurrency,
            tolerated_failures=config.tolerated_failures,
            mode=config.mode,
        )
