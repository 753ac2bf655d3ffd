"""Sandboxed Jinja2 templating between steps.

The context is `inputs`, `steps.<id>.output`, `last` (previous step's output) and `run`
(`id`, `tenant_id`, `workflow_id`). The immutable sandbox refuses attribute tricks and
mutation; StrictUndefined turns a typo into a clear step failure instead of an empty string.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workflows.engine.errors import StepFailed

MAX_RENDERED_CHARS = 256 * 1024


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def render(template: str, context: dict[str, Any]) -> str:
    try:
        rendered = _environment().from_string(template).render(**context)
    except TemplateError as exc:
        raise StepFailed("template_error", f"template could not be rendered: {exc}") from exc
    if len(rendered) > MAX_RENDERED_CHARS:
        raise StepFailed("template_too_large", "rendered template exceeds 256 KiB")
    return rendered


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """A condition: a bare expression is evaluated; a `{{ ... }}` template is rendered."""
    if "{{" in source or "{%" in source:
        return render(source, context)
    try:
        expression = _environment().compile_expression(source, undefined_to_none=False)
        return expression(**context)
    except TemplateError as exc:
        raise StepFailed("template_error", f"condition could not be evaluated: {exc}") from exc
