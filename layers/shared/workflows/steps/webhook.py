"""`webhook`: a signed HTTP call with a templated URL, headers and body.

The same delivery code path as run-completion notifications and DLQ retries: Standard
Webhooks signatures and the tenant's egress policy (docs/webhooks.md). The `webhook-id` is
stable for a step of a run, across retries and redeliveries, so receivers can dedupe: delivery
is at most once per id from the receiver's point of view.

`on_delivery_failure` decides what a transient failure (timeout, network error, 408/425/429/5xx)
does:
- `fail` (default): the step fails (and is retried by its retry policy, then routed by
  on_failure / on_timeout, else the run fails);
- `dlq`: the delivery is handed to the webhook DLQ table, retried by the scheduled worker, and
  the run continues with `{"delivered": false, "dlq_id": ...}` as the step's output (POST only:
  the DLQ worker re-sends with POST).
A permanent failure (a 4xx, a refused destination) always fails the step, without retry.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from workflows.domain.dlq import DlqRow
from workflows.domain.failures import StepFailed
from workflows.domain.secret_refs import (
    SECRET_HOST_NOT_ALLOWED,
    SecretRefs,
    SecretRefused,
    SecretUnavailable,
    new_nonce,
    resolve_request,
    scrub,
)
from workflows.ports import Deliverer, DlqStore, SecretLookup
from workflows.steps.base import StepContext, StepOutcome, StepResult, TemplateField
from workflows.templating import render, render_value, strings

MAX_BODY_BYTES = 256 * 1024
# A field name is a token (RFC 9110 5.1, RFC 7230 3.2). A name outside it is refused when the
# definition is saved, rather than failing each delivery (and filling the DLQ) later.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_LINE_BREAK = re.compile(r"[\r\n\x00]")


def _header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError("not a valid header name: letters, digits and !#$%&'*+-.^_`|~ only, no spaces")
    return name


def _header_value(value: str) -> str:
    if _LINE_BREAK.search(value):
        raise ValueError("a header value may not hold a line break or NUL")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Jinja2 template (text) of the URL, checked against the egress policy (docs/webhooks.md)",
    )
    method: Literal["POST", "PUT", "PATCH"] = Field(default="POST", description="HTTP method")
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        description="Extra request headers; each name is an HTTP token, each value a Jinja2 template"
        " (text) without line breaks",
    )
    body: Any = Field(
        default=None,
        description="Any JSON value, sent as the JSON request body (at most 256 KiB); every string in it"
        " is a Jinja2 template, and one that is exactly `{{ expression }}` becomes the expression's"
        " JSON value (Templates, typed values)",
    )
    timeout_seconds: float = Field(
        default=10, gt=0, le=60, description="Whole-request timeout, shortened to the step's time budget"
    )
    on_delivery_failure: Literal["fail", "dlq"] = Field(
        default="fail",
        description="What a transient failure (timeout, network error, 408, 425, 429, 5xx) does: `fail`"
        " fails the step, so its retry policy applies; `dlq` (POST only) hands the delivery to the"
        ' webhook DLQ and the run continues with `{"delivered": false, "dlq_id": ...}`',
    )


def _render_json(value: Any, context: dict[str, Any]) -> Any:
    """The body: a string that is exactly one `{{ expression }}` becomes the expression's JSON
    value (an object stays an object); other strings render to text (docs/steps.md, "Typed
    values")."""
    if isinstance(value, str):
        return render_value(value, context)
    if isinstance(value, list):
        return [_render_json(item, context) for item in value]
    if isinstance(value, dict):
        return {key: _render_json(item, context) for key, item in value.items()}
    return value


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # a URL the egress policy refused as invalid
        return ""


def webhook_id_for(run_id: str, step_id: str) -> str:
    digest = hashlib.sha256(f"{run_id}:{step_id}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


class WebhookStep:
    name = "webhook"
    description = "Call an HTTP endpoint with a signed, templated request."
    config_model = WebhookConfig
    example = {
        "url": "https://hooks.example.com/run",
        "body": {"run": "{{ run.id }}", "result": "{{ last }}"},
    }
    min_engine_version = "1.0.0"
    delivery: Literal["at_most_once"] = "at_most_once"
    inline = False
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def __init__(self, deliverer: Deliverer, dlq: DlqStore, secrets: SecretLookup) -> None:
        self._deliverer = deliverer
        self._dlq = dlq
        self._secrets = secrets

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, WebhookConfig)
        fields = [TemplateField("url", config.url, secrets=True)]
        fields += [TemplateField(f"headers.{n}", v, secrets=True) for n, v in config.headers.items()]
        fields += [
            TemplateField(f"body.{p}" if p else "body", s, secrets=True) for p, s in strings(config.body)
        ]
        return fields

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        assert isinstance(config, WebhookConfig)
        # Secrets render as placeholders of this execution's nonce; their values are put in
        # only for the request itself (domain.secret_refs).
        nonce = new_nonce()
        template_context = {**context.template_context(), "secrets": SecretRefs(nonce)}
        url = render(config.url, template_context).strip()
        headers = {name: render(value, template_context) for name, value in config.headers.items()}
        payload = _render_json(config.body, template_context)
        body = json.dumps(payload, separators=(",", ":")).encode()
        if len(body) > MAX_BODY_BYTES:
            raise StepFailed("webhook_body_too_large", f"body is {len(body)} bytes", retryable=False)
        webhook_id = webhook_id_for(context.run_id, context.step_id)
        timeout = min(config.timeout_seconds, context.time_budget_seconds)
        try:
            request = resolve_request(self._secrets, context.tenant_id, nonce, url, headers, body)
        except SecretUnavailable as exc:
            if exc.transient:  # the step's retry policy applies
                raise StepFailed("secret_unavailable", str(exc)) from exc
            raise StepFailed("secret_not_found", str(exc), retryable=False) from exc
        except SecretRefused as exc:
            raise StepFailed(exc.code, exc.message, retryable=False) from exc
        result = self._deliverer.deliver(
            request.url,
            request.body,
            webhook_id,
            request.headers,
            tenant_id=context.tenant_id,
            method=config.method,
            timeout=timeout,
            secret_hosts=request.allowed_hosts,
        )
        host = _host_of(url)
        summary = {"webhook_id": webhook_id, "host": host, "status_code": result.status_code}
        if result.outcome == "delivered":
            return StepResult(output={"delivered": True, **summary}, event_fields={"delivery": summary})
        error = scrub(result.error, request.values) or result.outcome
        if result.code == SECRET_HOST_NOT_ALLOWED:
            raise StepFailed(SECRET_HOST_NOT_ALLOWED, error, retryable=False)
        if result.outcome == "permanent":
            raise StepFailed("webhook_rejected", f"{host}: {error}", retryable=False)
        if config.on_delivery_failure == "dlq" and config.method == "POST":
            row = DlqRow.new(
                tenant_id=context.tenant_id,
                run_id=context.run_id,
                url=url,
                body_json=body.decode(),
                now=context.now,
                webhook_id=webhook_id,
                headers=headers,
                last_error=error,
                attempts=1,
                secret_nonce=nonce if request.values else None,
            )
            self._dlq.add(row)
            output = {"delivered": False, "dlq_id": row.id, **summary, "error": error}
            return StepResult(output=output, event_fields={"delivery": summary})
        code = "timeout" if error.startswith("timeout") else "webhook_unavailable"
        raise StepFailed(code, f"{host}: {error}")
