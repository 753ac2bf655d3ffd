"""Templates keep values' JSON types: a structured field's lone `{{ expression }}` keeps its value,
text writes non-strings as JSON, and `tojson` writes plain JSON; every limit still holds."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.domain.failures import StepFailed
from workflows.steps.base import StepContext, StepResult
from workflows.steps.branch import BranchConfig, BranchStep
from workflows.templating import (
    MAX_RENDERED_CHARS,
    evaluate,
    is_single_expression,
    render,
    render_budget,
    render_value,
)

LAST = {"message": "hi", "level": "info"}
CONTEXT: dict[str, Any] = {
    "inputs": {"count": 2, "tags": ["a", "b"], "flag": True, "name": "Ada", "ratio": 0.5},
    "steps": {},
    "last": LAST,
    "run": {"id": "run-1", "tenant_id": "t", "workflow_id": None},
}
FIRST_STEP = {**CONTEXT, "last": None}


def _failure(call: Any, *args: Any) -> StepFailed:
    with pytest.raises(StepFailed) as failed:
        call(*args)
    return failed.value


# ---- a structured field: one expression keeps its value ------------------------------------


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ last }}", LAST),
        ("{{ 1 + 1 }}", 2),
        ("{{ inputs.count }}", 2),
        ("{{ inputs.ratio }}", 0.5),
        ("{{ inputs.tags }}", ["a", "b"]),
        ("{{ inputs.count > 1 }}", True),
        ("{{ inputs.name }}", "Ada"),
        ("{{ none }}", None),
        ("{{ inputs.tags|map('upper') }}", ["A", "B"]),
        ("{{ {'n': inputs.count, 'tags': inputs.tags|list} }}", {"n": 2, "tags": ["a", "b"]}),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ {1: 'one'} }}", {"1": "one"}),
        ("{{ inputs.count|string }}", "2"),
        ("{{ last|tojson }}", '{"message": "hi", "level": "info"}'),
    ],
)
def test_a_lone_expression_keeps_its_json_value(template: str, value: Any) -> None:
    assert render_value(template, CONTEXT) == value
    assert type(render_value(template, CONTEXT)) is type(value)


def test_the_first_steps_last_is_null_not_the_text_none() -> None:
    assert render_value("{{ last }}", FIRST_STEP) is None


@pytest.mark.parametrize(
    "template", ["  {{ last }}\n", "{{- last -}}", "{{ last }}{# a note #}", "\t{{last}} "]
)
def test_whitespace_and_comments_around_the_expression_are_allowed(template: str) -> None:
    assert is_single_expression(template)
    assert render_value(template, CONTEXT) == LAST


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("count={{ inputs.count }}", "count=2"),
        ("{{ inputs.count }}{{ inputs.count }}", "22"),
        ("{{ last }}!", '{"message": "hi", "level": "info"}!'),
        ("{% if inputs.flag %}{{ last }}{% endif %}", '{"message": "hi", "level": "info"}'),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_anything_but_one_expression_is_text(template: str, text: str) -> None:
    assert not is_single_expression(template)
    assert render_value(template, CONTEXT) == text


def test_values_from_the_context_are_copied_not_shared() -> None:
    value = render_value("{{ inputs.tags }}", CONTEXT)
    value.append("c")
    assert CONTEXT["inputs"]["tags"] == ["a", "b"]


# ---- text: strings as themselves, anything else as JSON -------------------------------------


@pytest.mark.parametrize(
    ("template", "context", "text"),
    [
        ("x={{ last }}", CONTEXT, 'x={"message": "hi", "level": "info"}'),
        ("x={{ last }}", FIRST_STEP, "x=null"),
        ("{{ last }}", FIRST_STEP, "null"),
        ("{{ inputs.flag }} {{ not inputs.flag }}", CONTEXT, "true false"),
        ("{{ inputs.tags }}", CONTEXT, '["a", "b"]'),
        ("{{ inputs.tags|map('upper') }}", CONTEXT, '["A", "B"]'),
        ("{{ inputs.name }} {{ inputs.count }} {{ inputs.ratio }}", CONTEXT, "Ada 2 0.5"),
        ("{{ {'city': 'Zürich'} }}", CONTEXT, '{"city": "Zürich"}'),
        ("{% set ns = namespace(n=1) %}{{ ns }}", CONTEXT, '{"n": 1}'),
        ("{{ 1 + 1 }}", CONTEXT, "2"),
    ],
)
def test_text_writes_strings_as_themselves_and_other_values_as_json(
    template: str, context: dict[str, Any], text: str
) -> None:
    assert render(template, context) == text


def test_a_loop_written_out_does_not_move_the_loop_on() -> None:
    text = render("{% for x in inputs.tags %}{{ loop }}={{ x }};{% endfor %}", CONTEXT)
    assert text == "<LoopContext 1/2>=a;<LoopContext 2/2>=b;"


def test_branch_conditions_read_as_before() -> None:
    step = BranchStep()

    def chooses(condition: str, **inputs: Any) -> str | None:
        context = StepContext(
            run_id="r",
            tenant_id="t",
            workflow_id=None,
            step_id="b",
            attempt=1,
            inputs=inputs,
            step_outputs={},
            last=None,
        )
        config = BranchConfig(condition=condition, true_next="yes", false_next="no")
        result = step.execute(config, context)
        assert isinstance(result, StepResult)
        return result.next_step

    assert chooses("{{ inputs.flag }}", flag=True) == "yes"
    assert chooses("{{ inputs.flag }}", flag=False) == "no"
    assert chooses("{{ inputs.flag }}", flag=None) == "no"
    assert chooses("{{ inputs.n > 1 }}", n=2) == "yes"
    assert chooses("{{ last }}") == "no"
    assert chooses("inputs.xs", xs=[]) == "no"
    assert evaluate("inputs.count > 1", CONTEXT) is True
    with pytest.raises(StepFailed) as failed:
        chooses("{{ inputs.xs }}", xs=[1])
    assert failed.value.code == "condition_not_boolean"


# ---- tojson ----------------------------------------------------------------------------------


def test_tojson_writes_plain_json_without_html_escapes() -> None:
    assert render("{{ '<a & b>'|tojson }}", CONTEXT) == '"<a & b>"'
    assert render("{{ {'b': 1, 'a': [true, none]}|tojson }}", CONTEXT) == '{"b": 1, "a": [true, null]}'
    assert render("{{ last|tojson(2) }}", CONTEXT) == '{\n  "message": "hi",\n  "level": "info"\n}'
    assert render("{{ 'Zürich'|tojson }}", CONTEXT) == '"Zürich"'


def test_tojson_refuses_what_no_json_can_hold() -> None:
    assert _failure(render, "{{ (1e308 * 10)|tojson }}", CONTEXT).code == "template_error"
    assert _failure(render, "{{ last|tojson('x') }}", CONTEXT).code == "template_error"


@pytest.mark.parametrize(
    "template",
    [
        "{{ (['a' * 100000] * 3)|tojson }}",
        "{{ (range(10000)|list)|tojson(10000) }}",
        "{{ [1]|tojson(1000000000) }}",
        "{{ ('\\x00' * 100000)|tojson }}",  # escapes make it six times longer than counted
    ],
)
def test_tojson_is_bounded_like_any_string_a_template_makes(template: str) -> None:
    assert _failure(render, template, CONTEXT).code == "template_limit_exceeded"


# ---- limits hold for typed values -------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ ['a' * 200000] * 10000 }}",
        "{{ ['a' * 200000, 'b' * 200000] }}",
        "{{ {'a': 'x' * 200000, 'b': 'y' * 200000} }}",
        "{{ range(10000)|map('string')|map('center', 100) }}",
        "{{ 'a' * 1000000000 }}",
        "{{ 10**100000 }}",
    ],
)
def test_a_typed_value_over_the_limits_fails_as_text_would(template: str) -> None:
    assert _failure(render_value, template, CONTEXT).code == "template_limit_exceeded"
    assert _failure(render, template, CONTEXT).code == "template_limit_exceeded"


def test_a_value_nested_too_deep_fails_with_the_limit_code() -> None:
    deep = "{% set ns = namespace(x=1) %}{% for i in range(100) %}{% set ns.x = [ns.x] %}{% endfor %}"
    assert _failure(render, deep + "{{ ns.x }}", CONTEXT).code == "template_limit_exceeded"
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    assert _failure(render_value, "{{ inputs.deep }}", {"inputs": {"deep": nested}}).code == (
        "template_limit_exceeded"
    )


def test_typed_values_count_against_the_steps_allocation_budget() -> None:
    context = {"inputs": {"big": ["x" * 100] * 2000}}  # about 200 KB of JSON, within one output
    assert len(render_value("{{ inputs.big }}", context)) == 2000

    def many_renders_in_one_step() -> None:
        with render_budget():
            for _ in range(100):
                render_value("{{ inputs.big }}", context)

    assert _failure(many_renders_in_one_step).code == "template_limit_exceeded"


def test_a_typed_value_up_to_the_output_limit_is_kept() -> None:
    text = "x" * (MAX_RENDERED_CHARS - 100)
    assert render_value("{{ inputs.text }}", {"inputs": {"text": text}}) == text
    assert _failure(render_value, "{{ inputs.text ~ inputs.text }}", {"inputs": {"text": text}}).code == (
        "template_limit_exceeded"
    )


@pytest.mark.parametrize("template", ["{{ inputs.missing }}", "{{ [inputs.missing] }}", "{{ {'a': nope} }}"])
def test_an_undefined_name_inside_a_value_is_a_template_error(template: str) -> None:
    assert _failure(render_value, template, CONTEXT).code == "template_error"
    assert _failure(render, template, CONTEXT).code == "template_error"


def test_json_has_no_infinity_so_a_typed_value_refuses_it() -> None:
    assert _failure(render_value, "{{ 1e308 * 10 }}", CONTEXT).code == "template_error"
    assert render("{{ 1e308 * 10 }}", CONTEXT) == "Infinity"


def test_syntax_errors_are_template_errors_in_either_mode() -> None:
    assert _failure(render_value, "{{ inputs.count ", CONTEXT).code == "template_error"
