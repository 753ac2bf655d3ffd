"""Inline credentials in definitions, redacted in every API view (docs/auth.md, "Credentials").

Secrets belong in `{{ secrets.NAME }}` references; a definition that still carries one inline
(`https://user:pass@host/?token=abc`, an `Authorization: Bearer abc` header) is stored and run
as written, but whoever reads it back, viewer or admin, sees `***` in its place:
- a webhook URL's user info, and each query value that is not only a template expression;
- the value of a credential-like header (Authorization, Cookie, X-Api-Key, anything naming a
  token, secret, key, password, signature or session) unless it is only a template expression,
  optionally after a scheme word (`Bearer {{ secrets.TOKEN }}` stays as written).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from workflows.domain.definition import WorkflowDefinition

REDACTED = "***"
_EXPRESSIONS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_SCHEME_WORD = re.compile(r"^(bearer|basic|token|bot|apikey|digest)?$", re.IGNORECASE)
_CREDENTIAL_HEADER = re.compile(
    r"auth|token|secret|key|password|passwd|cookie|signature|credential|session", re.IGNORECASE
)
_URL_STEPS = frozenset({"webhook"})


def _only_templates(value: str) -> bool:
    """Whether nothing but template expressions (and perhaps a scheme word) is written inline."""
    return "{{" in value and _SCHEME_WORD.match(_EXPRESSIONS.sub("", value).strip()) is not None


def redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return REDACTED if "@" in url or "?" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_pair(pair: str) -> str:
    name, separator, value = pair.partition("=")
    if not separator or not value or _only_templates(unquote_plus(value)):
        return pair
    return f"{name}={REDACTED}"


def redact_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value
        if not isinstance(value, str) or not _CREDENTIAL_HEADER.search(name) or _only_templates(value)
        else REDACTED
        for name, value in headers.items()
    }


def redact_definition(definition: WorkflowDefinition) -> WorkflowDefinition:
    """A copy of `definition` as an API view shows it."""
    steps = []
    for step in definition.steps:
        config = step.config
        if step.type in _URL_STEPS:
            config = dict(config)
            if isinstance(config.get("url"), str):
                config["url"] = redact_url(config["url"])
            if isinstance(config.get("headers"), dict):
                config["headers"] = redact_headers(config["headers"])
        steps.append(step.model_copy(update={"config": config}))
    webhook = definition.on_completion_webhook
    return definition.model_copy(
        update={"steps": steps, "on_completion_webhook": redact_url(webhook) if webhook else webhook}
    )
