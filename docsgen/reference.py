"""The step reference in docs/steps.md, written from the models `GET /step-types` serves.

`make docs` (`python -m docsgen`) rewrites the part of docs/steps.md between the two markers
below; `--check` only compares. tests/unit/test_steps_docs.py runs the same comparison, so a
model and its documentation cannot drift apart:

- the step-level fields come from `StepSpec` and `RetryPolicy` (domain/definition.py), each
  type's fields from its `config_model`, as JSON Schema (what `GET /step-types` serves) for the
  types and bounds and from pydantic for the defaults;
- a field's meaning is its `description`, or an entry in `MEANINGS` for a model that has none;
  a field with neither stops the generation (`Undescribed`), so a new field cannot go unexplained;
- each type has one example run request, checked by the tests with the API's own validation.

The per-type text that no model holds (output, which fields are templates) is in `GUIDES`.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from workflows.domain.definition import RetryPolicy, StepSpec
from workflows.steps.approval import ApprovalStep
from workflows.steps.branch import BranchStep
from workflows.steps.delay import DelayStep
from workflows.steps.log import LogStep
from workflows.steps.map import MapStep
from workflows.steps.parallel import ParallelStep
from workflows.steps.prompt import PromptStep
from workflows.steps.rag_search import RagSearchStep
from workflows.steps.wait_for_signal import WaitForSignalStep
from workflows.steps.webhook import WebhookStep
from workflows.steps.workflow import WorkflowStep

# The saved workflow the `workflow` example starts (its setup creates one; put its id here).
CHILD_WORKFLOW_ID = "0b8e3c52-2f4d-4f8e-9a51-7c6d2e1f3a90"

BEGIN = (
    "<!-- BEGIN GENERATED REFERENCE: `make docs` writes this part from the step models"
    " (docsgen/reference.py); edit the models, not this text -->"
)
END = "<!-- END GENERATED REFERENCE -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "steps.md"

# Meanings of fields whose model carries no `description` (model name -> field -> meaning).
MEANINGS: dict[str, dict[str, str]] = {
    "ApprovalConfig": {
        "instructions": "Shown to the people deciding, on the `waiting_approval` event (plain text, not a"
        " template)",
        "assignees": "User ids asked to decide; besides holders of `workflows.runs.control`, they may"
        " approve or reject this step. Each must be a user id a caller can have (docs/auth.md,"
        " Identifiers): not `bob ` nor one of the service's own names (`schedule:...`, `system:...`)",
        "required_approvals": "Distinct approvers needed before the step completes (at most the number of"
        " distinct assignees, when any are named); one rejection rejects it",
        "timeout_seconds": "How long the run waits for the decision",
        "on_timeout": "When the time is up: `reject` (a rejection, `approval_rejected`), `approve`"
        " (approver `system:timeout`) or `fail` (a `timeout` failure, routed by the step's `on_timeout`)",
    },
}


@dataclass(frozen=True)
class Guide:
    """What the reference says about a step type beyond its config model."""

    step: Any  # the step type's class: name, description, config_model, delivery, inline
    templates: str  # which fields are templates, and how each renders
    output: str
    example: dict[str, Any]  # a run request for POST /runs: {"definition": ..., "inputs": ...}
    # What a fresh stack needs before the example runs: (why, path, body) of one POST request.
    setup: tuple[str, str, dict[str, Any]] | None = None


GUIDES: list[Guide] = [
    Guide(
        LogStep,
        templates="`message` (text).",
        output='`{"message": "<the rendered message>", "level": "info"}`',
        example={
            "definition": {
                "name": "log-example",
                "steps": [
                    {"id": "greet", "type": "log", "config": {"message": "Hello {{ inputs.name }}"}},
                    {
                        "id": "echo",
                        "type": "log",
                        "config": {"message": "the step before said {{ last }}", "level": "debug"},
                    },
                ],
            },
            "inputs": {"name": "Ada"},
        },
    ),
    Guide(
        BranchStep,
        templates="`condition`, a bare expression or a template (text).",
        output='`{"result": true, "next": "<the step id it chose>"}`',
        example={
            "definition": {
                "name": "branch-example",
                "steps": [
                    {
                        "id": "check",
                        "type": "branch",
                        "config": {
                            "condition": "inputs.score > 0.5",
                            "true_next": "pass",
                            "false_next": "fail",
                        },
                    },
                    {
                        "id": "pass",
                        "type": "log",
                        "config": {"message": "passed with {{ inputs.score }}"},
                        "on_success": "_end",
                    },
                    {
                        "id": "fail",
                        "type": "log",
                        "config": {"message": "failed with {{ inputs.score }}", "level": "warning"},
                    },
                ],
            },
            "inputs": {"score": 0.8},
        },
    ),
    Guide(
        DelayStep,
        templates="none.",
        output='`{"waited_until": "2026-01-01T12:00:30.000Z"}`, the moment it waited for',
        example={
            "definition": {
                "name": "delay-example",
                "steps": [
                    {"id": "wait", "type": "delay", "config": {"seconds": 30}},
                    {
                        "id": "after",
                        "type": "log",
                        "config": {"message": "waited until {{ steps.wait.output.waited_until }}"},
                    },
                ],
            },
            "inputs": {},
        },
    ),
    Guide(
        ApprovalStep,
        templates="none.",
        output='`{"decision": "approve", "comment": "...", "fields": {...}, "approver": "alice",'
        ' "approvers": ["alice"]}`, given by `POST /runs/{run_id}/steps/{step_id}/approve`; a'
        " rejection fails the step with `approval_rejected` (never retried), which `on_failure` routes",
        example={
            "definition": {
                "name": "approval-example",
                "steps": [
                    {
                        "id": "review",
                        "type": "approval",
                        "config": {
                            "instructions": "Refund the order?",
                            "timeout_seconds": 86400,
                            "on_timeout": "reject",
                        },
                        "on_failure": "refused",
                    },
                    {
                        "id": "refund",
                        "type": "log",
                        "config": {"message": "approved by {{ last.approver }}: {{ last.comment }}"},
                        "on_success": "_end",
                    },
                    {
                        "id": "refused",
                        "type": "log",
                        "config": {"message": "not refunded: {{ last.error.code }}", "level": "warning"},
                    },
                ],
            },
            "inputs": {},
        },
    ),
    Guide(
        WaitForSignalStep,
        templates="every string in the `match` of each entry of `signals`, typed: one that is exactly"
        " `{{ expression }}`"
        " becomes the expression's JSON value. They are rendered once, when the wait begins, and a"
        " signal matches when each named field of its `data` equals the rendered value"
        " ([signals](signals.md)).",
        output='`{"signals": {"payment.settled": {"id": "pay-1001", "data": {...}, "sent_at":'
        ' "2026-01-01T12:00:00.000Z"}}}`, every signal received, by name (with `mode: any`, the one'
        " that ended the wait). When `timeout_seconds` pass first the step fails with `timeout` (never"
        " retried), which `on_timeout` (else `on_failure`) routes. While it waits the run is `running`"
        " and shows a `waiting_signal` event, then a `signal_received` event per signal it takes."
        " Send one with `POST /signals` ([signals](signals.md))",
        example={
            "definition": {
                "name": "signal-example",
                "steps": [
                    {
                        "id": "paid",
                        "type": "wait_for_signal",
                        "config": {
                            "signals": [
                                {"name": "payment.settled", "match": {"order_id": "{{ inputs.order_id }}"}}
                            ],
                            "lookback_seconds": 3600,
                            "timeout_seconds": 86400,
                        },
                        "on_timeout": "unpaid",
                    },
                    {
                        "id": "ship",
                        "type": "log",
                        "config": {
                            "message": "paid {{ last.signals['payment.settled'].data.amount }}"
                            " for {{ inputs.order_id }}"
                        },
                        "on_success": "_end",
                    },
                    {
                        "id": "unpaid",
                        "type": "log",
                        "config": {"message": "no payment for {{ inputs.order_id }}", "level": "warning"},
                    },
                ],
            },
            "inputs": {"order_id": "A-1001"},
        },
    ),
    Guide(
        ParallelStep,
        templates="none of its own; each branch's steps have theirs, and see `branch` (the branch's"
        " name), the run's `inputs` and the outputs of the steps before the parallel.",
        output='`{"fast": <the last output of branch fast>, "slow": ...}`, each branch\'s last output by'
        " name (`join: any`: the winner's only). Each branch is a child run (`parent_run_id`,"
        " `parent_step_id`); the run shows `children_started` and a `child_ended` event per branch."
        " A branch that fails fails the step with `branch_failed` (`join: any`: every branch failed,"
        " `branches_failed`), which `on_failure` routes",
        example={
            "definition": {
                "name": "parallel-example",
                "steps": [
                    {
                        "id": "both",
                        "type": "parallel",
                        "config": {
                            "branches": {
                                "fast": [
                                    {
                                        "id": "hello",
                                        "type": "log",
                                        "config": {"message": "hi {{ inputs.name }}"},
                                    }
                                ],
                                "slow": [
                                    {"id": "nap", "type": "delay", "config": {"seconds": 2}},
                                    {"id": "late", "type": "log", "config": {"message": "{{ branch }} done"}},
                                ],
                            },
                            "join": "all",
                        },
                    },
                    {
                        "id": "after",
                        "type": "log",
                        "config": {"message": "{{ last.fast.message }} / {{ last.slow.message }}"},
                    },
                ],
            },
            "inputs": {"name": "Ada"},
        },
    ),
    Guide(
        MapStep,
        templates="`items`, typed: exactly `{{ expression }}` gives the list. The item steps see"
        " `item` and `index`, the run's `inputs` and the outputs of the steps before the map.",
        output="the items' last outputs as a list in item order (null for an item that failed within"
        " `tolerated_failures`), kept outside the run past a few hundred bytes. Each item is a child"
        " run; the run shows `children_started` and a `child_ended` event per item (with `ended` and"
        " `running` counts). More failures than `tolerated_failures` fail the step with"
        " `item_failed` (the items still running are cancelled); more items than"
        " `WORKFLOWS_MAX_MAP_ITEMS` (10,000) are refused with 422 when literal and fail the step with"
        " `too_many_items` when computed; an item larger than `WORKFLOWS_MAX_INPUTS_BYTES` fails it with"
        " `item_too_large` before any item starts",
        example={
            "definition": {
                "name": "map-example",
                "steps": [
                    {
                        "id": "each",
                        "type": "map",
                        "config": {
                            "items": "{{ inputs.orders }}",
                            "steps": [
                                {
                                    "id": "total",
                                    "type": "log",
                                    "config": {"message": "order {{ index }}: {{ item.id }} x{{ item.qty }}"},
                                }
                            ],
                            "max_concurrency": 2,
                        },
                    },
                    {"id": "after", "type": "log", "config": {"message": "{{ last | length }} orders"}},
                ],
            },
            "inputs": {"orders": [{"id": "A-1", "qty": 2}, {"id": "A-2", "qty": 1}, {"id": "A-3", "qty": 5}]},
        },
    ),
    Guide(
        WorkflowStep,
        templates="every string in `inputs`, typed: one that is exactly `{{ expression }}` becomes the"
        " expression's JSON value.",
        output="the child run's outputs (`wait: true`); with `wait: false`,"
        ' `{"run_id": "...", "workflow_id": "...", "version": 1}`. The child shows `parent_run_id` and'
        " `parent_step_id`; a child that fails or is cancelled fails the step with `child_failed`;"
        " inputs larger than `WORKFLOWS_MAX_INPUTS_BYTES` fail it with `inputs_too_large`;"
        " cancelling the parent cancels the child. Runs nest at most `WORKFLOWS_MAX_NESTING` (5) deep:"
        " deeper, the step fails with `too_deep`; a version whose step starts the workflow itself"
        " is refused with 422. In multi-user mode the child starts only if the run's owner could run"
        " that workflow themselves (docs/auth.md, rule 4): their own, or any of the tenant's with"
        " `workflows.runs.read` as they held it when the run was submitted (a child run acts for its"
        " root run's owner); otherwise the step fails with `workflow_forbidden` (not retried), and a"
        " run whose definition names such a workflow is refused when submitted with 403"
        " `workflow_forbidden` naming the field",
        setup=(
            "The child is a saved workflow: create one, then put the `workflow_id` it answers with"
            " in the example",
            "",
            {
                "name": "child-greeter",
                "steps": [{"id": "greet", "type": "log", "config": {"message": "Hello {{ inputs.name }}"}}],
            },
        ),
        example={
            "definition": {
                "name": "workflow-example",
                "steps": [
                    {
                        "id": "child",
                        "type": "workflow",
                        "config": {"workflow_id": CHILD_WORKFLOW_ID, "inputs": {"name": "{{ inputs.name }}"}},
                    },
                    {
                        "id": "after",
                        "type": "log",
                        "config": {"message": "the child said {{ last.message }}"},
                    },
                ],
            },
            "inputs": {"name": "Ada"},
        },
    ),
    Guide(
        WebhookStep,
        templates="`url` and the values of `headers` (text); every string in `body`, typed: one that is"
        " exactly `{{ expression }}` becomes the expression's JSON value. `{{ secrets.NAME }}` may be"
        " used in all three.",
        output='`{"delivered": true, "webhook_id": "msg_...", "host": "hooks.example.com", "status_code":'
        ' 200}`; handed to the DLQ: `{"delivered": false, "dlq_id": "...", "webhook_id": "msg_...",'
        ' "host": "...", "status_code": 503, "error": "..."}`',
        example={
            "definition": {
                "name": "webhook-example",
                "steps": [
                    {"id": "greet", "type": "log", "config": {"message": "Hello {{ inputs.name }}"}},
                    {
                        "id": "notify",
                        "type": "webhook",
                        "config": {
                            "url": "https://hooks.example.com/runs/{{ run.id }}",
                            "method": "POST",
                            "headers": {"X-Greeting-Level": "{{ steps.greet.output.level }}"},
                            "body": {
                                "run": "{{ run.id }}",
                                "greeting": "{{ last }}",
                                "count": "{{ inputs.count }}",
                                "text": "count={{ inputs.count }}",
                            },
                            "timeout_seconds": 10,
                            "on_delivery_failure": "dlq",
                        },
                        "retry": {"max_attempts": 3, "initial_interval_seconds": 2},
                    },
                ],
            },
            "inputs": {"name": "Ada", "count": 3},
        },
    ),
    Guide(
        PromptStep,
        templates="`template` and `system` (text).",
        output='`{"text": "<the rendered template>"}` without `model`; with it, the completion, the model'
        " and the token usage ([calling a model](#calling-a-model-prompt))",
        example={
            "definition": {
                "name": "prompt-example",
                "steps": [
                    {
                        "id": "summary",
                        "type": "prompt",
                        "config": {
                            "template": "Summarise in one sentence for a {{ audience }} reader:\n"
                            "{{ inputs.text }}",
                            "model": "gpt-4o-mini",
                            "variables": {"audience": "busy"},
                            "system": "You are a concise assistant.",
                            "max_tokens": 256,
                            "temperature": 0.2,
                        },
                        "timeout_seconds": 120,
                        "retry": {"max_attempts": 3, "non_retryable_errors": ["llm_http_4xx"]},
                    }
                ],
            },
            "inputs": {"text": "SQS can delay a message by up to 15 minutes."},
        },
    ),
    Guide(
        RagSearchStep,
        templates="`query` (text).",
        output='`{"query": "<the rendered query>", "documents": [{"id": "...", "content": "...", "score":'
        ' 0.81, "metadata": {...}}]}`, best first ([retrieval backends](#retrieval-backends-rag_search))',
        setup=(
            "A fresh stack's corpus is empty, so the search finds nothing and `answer` fails on"
            " `documents[0]`: first add a document to the tenant's corpus"
            " ([backend `builtin`](#backend-builtin))",
            "/corpus/documents",
            {"content": "SQS can delay a message by up to 15 minutes.", "metadata": {"topic": "queues"}},
        ),
        example={
            "definition": {
                "name": "rag-search-example",
                "steps": [
                    {
                        "id": "search",
                        "type": "rag_search",
                        "config": {"query": "{{ inputs.question }}", "top_k": 3, "backend": "builtin"},
                    },
                    {
                        "id": "answer",
                        "type": "prompt",
                        "config": {
                            "template": "Context: {{ steps.search.output.documents[0].content }}\n"
                            "Q: {{ inputs.question }}"
                        },
                    },
                ],
            },
            "inputs": {"question": "How long can SQS delay a message?"},
        },
    ),
]


class Undescribed(Exception):
    """Fields the reference cannot explain: no `description` on the model, no entry in MEANINGS."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            "no meaning for "
            + ", ".join(fields)
            + ": give each a Field(description=...) or an entry in MEANINGS (docsgen/reference.py),"
            " then run `make docs`"
        )
        self.fields = fields


# ---- one model as a table -----------------------------------------------------------------


def undescribed(model: type[BaseModel]) -> list[str]:
    """`Model.field` for each field of `model` with no meaning."""
    extra = MEANINGS.get(model.__name__, {})
    return [
        f"{model.__name__}.{name}"
        for name, field in model.model_fields.items()
        if not field.description and name not in extra
    ]


def meaning(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    text = field.description or MEANINGS.get(model.__name__, {}).get(name)
    if not text:
        raise Undescribed([f"{model.__name__}.{name}"])
    return text


def fields_table(model: type[BaseModel]) -> str:
    """A Markdown table of `model`'s fields: type, default, bounds and meaning of each."""
    missing = undescribed(model)
    if missing:
        raise Undescribed(missing)
    schema = model.model_json_schema()
    rows = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        prop = schema["properties"][name]
        cells = [f"`{name}`", _type(prop), _default(field, prop), _bounds(prop), meaning(model, name)]
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _options(prop: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The non-null alternatives of a property, and whether null is allowed."""
    if "anyOf" not in prop:
        return [prop], False
    options = [option for option in prop["anyOf"] if option.get("type") != "null"]
    return options, len(options) < len(prop["anyOf"])


def _type(prop: dict[str, Any]) -> str:
    options, nullable = _options(prop)
    text = " or ".join(_one_type(option) for option in options)
    return f"{text} or null" if nullable else text


def _one_type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(
            f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`" for value in prop["enum"]
        )
    if "$ref" in prop:
        return "object (below)"
    kind = prop.get("type")
    if kind is None:
        return "any JSON"
    if kind == "string" and prop.get("format") == "date-time":
        return "string (RFC 3339 date-time)"
    if kind == "array":
        item = _one_type(prop.get("items", {}))
        return "array of objects (below)" if item == "object (below)" else f"array of {item}s"
    if kind == "object":
        values = prop.get("additionalProperties")
        return (
            f"object of {_one_type(values)}s" if isinstance(values, dict) and "type" in values else "object"
        )
    return str(kind)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(prop: dict[str, Any]) -> str:
    parts: list[str] = []
    for option in _options(prop)[0]:
        low, high = option.get("minLength"), option.get("maxLength")
        if low is not None and high is not None:
            parts.append(f"{low}..{high} characters")
        elif high is not None:
            parts.append(f"at most {high} characters")
        elif low is not None:
            parts.append(f"at least {low} characters")
        lower = (
            f">= {_number(option['minimum'])}"
            if "minimum" in option
            else f"> {_number(option['exclusiveMinimum'])}"
            if "exclusiveMinimum" in option
            else None
        )
        upper = (
            f"<= {_number(option['maximum'])}"
            if "maximum" in option
            else f"< {_number(option['exclusiveMaximum'])}"
            if "exclusiveMaximum" in option
            else None
        )
        if lower and upper and lower.startswith(">=") and upper.startswith("<="):
            parts.append(f"{lower[3:]}..{upper[3:]}")
        else:
            parts += [bound for bound in (lower, upper) if bound]
        if "maxItems" in option:
            parts.append(f"at most {option['maxItems']} items")
        if "maxProperties" in option:
            parts.append(f"at most {option['maxProperties']} fields")
        if "pattern" in option:
            parts.append(f"matches `{option['pattern']}`")
    return ", ".join(parts) or "-"


def _default(field: FieldInfo, prop: dict[str, Any]) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "each field's default"
    if value is None and ("type" in prop or "anyOf" in prop):
        return "unset"  # an optional field; a JSON value's default is `null` itself
    return f"`{json.dumps(value)}`"


# ---- the whole reference ------------------------------------------------------------------


def _delivery(step: Any) -> str:
    if step.delivery == "at_most_once":
        how = (
            "at most once per `webhook-id`: the step is claimed before the call, and every attempt"
            " sends the same `webhook-id`, so a receiver can drop repeats"
        )
    else:
        how = "at least once: after a crash it may run again"
    where = (
        "cheap and local, it runs in the same invocation as the step before it"
        if step.inline
        else "it calls out, so it gets a dispatch message of its own"
    )
    return f"Delivery: {how}; {where}."


def _json_block(value: Any) -> str:
    return "```json\n" + _pretty(value) + "\n```"


def _pretty(value: Any, indent: int = 0, lead: int = 0, width: int = 100) -> str:
    """JSON on one line where it fits in `width` (after `lead` characters of a key), else one item
    a line, indented by two."""
    flat = json.dumps(value, ensure_ascii=False)
    if indent + lead + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(key)}: {_pretty(item, indent + 2, len(json.dumps(key)) + 2, width)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    lines = [pad + _pretty(item, indent + 2, 0, width) for item in value]
    return "[\n" + ",\n".join(lines) + "\n" + " " * indent + "]"


def _setup_block(path: str, body: dict[str, Any]) -> str:
    return "\n".join(
        [
            "```sh",
            f'curl -s -X POST "$BASE{path}" -H "X-API-KEY: $API_KEY" '
            "-H 'Content-Type: application/json' \\",
            f"  -d '{json.dumps(body)}'",
            "```",
        ]
    )


def nested_models(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """(field, model) for each field of `model` holding another model, or a list of them."""

    def models_in(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [found for arg in typing.get_args(annotation) for found in models_in(arg)]

    return [
        (name, found) for name, field in model.model_fields.items() for found in models_in(field.annotation)
    ]


def _nested_tables(model: type[BaseModel]) -> list[str]:
    # Steps inside a step (a parallel's branches, a map's steps) are the "Step fields" above.
    return [
        part
        for name, inner in nested_models(model)
        if inner is not StepSpec
        for part in (f"Each entry of `{name}`:", fields_table(inner))
    ]


def _type_section(guide: Guide) -> str:
    step = guide.step
    setup = []
    if guide.setup is not None:
        why, path, body = guide.setup
        setup = [f"{why}:", _setup_block(path, body)]
    return "\n\n".join(
        [
            f"### `{step.name}`",
            f"{step.description} {_delivery(step)}",
            f"Templates: {guide.templates}",
            fields_table(step.config_model),
            *_nested_tables(step.config_model),
            f"Output: {guide.output}.",
            *setup,
            "Example, a request body for `POST /runs`:",
            _json_block(guide.example),
        ]
    )


def generate() -> str:
    """The generated part of docs/steps.md, markers included."""
    problems = [name for model in _models() for name in undescribed(model)]
    if problems:
        raise Undescribed(problems)
    parts = [
        BEGIN,
        "## Step fields",
        "Every entry of a definition's `steps`. Routing targets are step ids of the same definition,"
        " or `_end`, which finishes the run ([routing](engine.md#routing)).",
        fields_table(StepSpec),
        "### `retry`",
        "A failure whose code is retryable is tried again after a wait: the n-th wait is at most"
        " `initial_interval_seconds * backoff_rate^(n-1)`, capped by `max_interval_seconds`"
        " ([how failures are reported](#how-failures-are-reported)).",
        fields_table(RetryPolicy),
        "## Step type reference",
        "The fields of each type's `config`: `GET /step-types` serves the same models as JSON Schema,"
        " with an example config. Every example below is a complete `POST /runs` body.",
        *(_type_section(guide) for guide in GUIDES),
        END,
    ]
    return "\n\n".join(parts) + "\n"


def _models() -> list[type[BaseModel]]:
    configs = [guide.step.config_model for guide in GUIDES]
    return [
        StepSpec,
        RetryPolicy,
        *configs,
        *(inner for model in configs for _, inner in nested_models(model)),
    ]


def current(text: str) -> str:
    """The generated part of a docs/steps.md text, markers included ('' without markers)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(END)] + "\n"


def rewrite(text: str) -> str:
    """`text` with its generated part replaced by a fresh one."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers are missing: {BEGIN!r} ... {END!r}")
    rest = text[end + len(END) :]
    return text[:start] + generate() + rest.removeprefix("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is not up to date")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the file (default: docs/steps.md)")
    args = parser.parse_args(argv)
    text = args.docs.read_text()
    fresh = rewrite(text)
    if args.check:
        if fresh != text:
            print(f"{args.docs} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        args.docs.write_text(fresh)
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
