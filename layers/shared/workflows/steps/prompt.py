"""`prompt`: render a Jinja2 template and, when a `model` is set, send it to an LLM.

Without a model the step is pure templating (useful to assemble text for later steps). With a
model the rendered text is the user message; the completion, the model and the token usage
become the output, and model and usage are also recorded on the `step_completed` event.

Delivery is at-least-once: a crash after the call and before the commit repeats the call (and
its token cost) but leaves nothing else behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workflows.settings import Settings
from workflows.steps.base import StepContext, StepResult, TemplateField
from workflows.steps.llm import (
    BedrockConverseClient,
    ChatRequest,
    LlmClient,
    OpenAIChatClient,
    Provider,
    default_http_client,
    llm_api_key,
)
from workflows.templating import render

# Names the template context already uses; a variable may not hide them.
RESERVED_VARIABLES = frozenset({"inputs", "steps", "last", "run", "variables"})
_LLM_ONLY_FIELDS = ("system", "max_tokens", "temperature", "provider")


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=65536, description="Jinja2 template of the prompt (text)")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Model to call (an OpenAI-compatible name, or a Bedrock model or inference profile"
        " id); without it the output is the rendered template",
    )
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Literal values, available at top level (`{{ tone }}`) and as"
        " `{{ variables.tone }}`; the names `inputs`, `steps`, `last`, `run`, `variables` are refused",
    )
    save_artifact: bool = Field(
        default=False,
        description="Keep the output text as a run artifact (reported as `save_artifact` on the"
        " `step_completed` event)",
    )
    system: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="Jinja2 template of the system prompt (text); needs `model`",
    )
    max_tokens: int = Field(
        default=1024, ge=1, le=32768, description="Upper bound on completion tokens; needs `model`"
    )
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        allow_inf_nan=False,
        description="Sampling temperature, the provider's default when unset; needs `model` (many"
        " Bedrock models accept only 0..1)",
    )
    provider: Provider | None = Field(
        default=None, description="Where `model` runs, `WORKFLOWS_LLM_PROVIDER` when unset; needs `model`"
    )

    @field_validator("variables")
    @classmethod
    def _no_reserved_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_VARIABLES & value.keys())
        if clash:
            raise ValueError(f"variable names {clash} are reserved by the template context")
        return value

    @model_validator(mode="after")
    def _llm_fields_need_a_model(self) -> PromptConfig:
        if self.model is None:
            unused = [name for name in _LLM_ONLY_FIELDS if name in self.model_fields_set]
            if unused:
                raise ValueError(f"{', '.join(unused)} only apply when `model` is set")
        return self


class PromptStep:
    name = "prompt"
    description = "Render a templated prompt; with a model, call the LLM and return its completion."
    config_model = PromptConfig
    example = {
        "template": "Summarise in one sentence for a {{ audience }} reader:\n{{ inputs.text }}",
        "model": "gpt-4o-mini",
        "variables": {"audience": "busy"},
        "system": "You are a concise assistant.",
        "max_tokens": 256,
        "temperature": 0.2,
        "save_artifact": False,
    }
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    # Calls out over the network, so it always gets its own dispatch message.
    inline = False
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def __init__(
        self,
        settings: Settings,
        *,
        bedrock_client_factory: Callable[[], Any],
        http_client_factory: Callable[[], httpx.Client] | None = None,
        api_key_provider: Callable[[], str | None] | None = None,
    ) -> None:
        """Nothing is created here: the HTTP client and the `bedrock-runtime` client (from the
        composition root's factory) are built by the first call that needs them."""
        self._default_provider: Provider = settings.llm_provider
        self._clients: dict[Provider, LlmClient] = {
            "openai": OpenAIChatClient(
                settings.llm_base_url,
                api_key=api_key_provider or llm_api_key(settings),
                timeout=settings.llm_timeout_sec,
                http_client=http_client_factory or default_http_client,
            ),
            "bedrock": BedrockConverseClient(bedrock_client_factory),
        }

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, PromptConfig)
        fields = [TemplateField("template", config.template)]
        return fields + ([TemplateField("system", config.system)] if config.system else [])

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, PromptConfig)
        template_context = {**config.variables, **context.template_context(), "variables": config.variables}
        text = render(config.template, template_context)
        if config.model is None:
            return StepResult(output={"text": text}, event_fields={"save_artifact": config.save_artifact})

        provider = config.provider or self._default_provider
        system = render(config.system, template_context) if config.system else None
        completion = self._clients[provider].complete(
            ChatRequest(
                model=config.model,
                prompt=text,
                system=system,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                timeout=context.time_budget_seconds,
            )
        )
        usage = completion.usage
        output = {
            "text": completion.text,
            "model": completion.model,
            "usage": usage,
            "finish_reason": completion.finish_reason,
        }
        event_fields = {
            "model": completion.model,
            "provider": provider,
            "usage": usage,
            "save_artifact": config.save_artifact,
        }
        return StepResult(output=output, event_fields=event_fields)
