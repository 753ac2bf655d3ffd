"""Hostile templates fail their step with template_limit_exceeded before they allocate.

The hostile templates run in a subprocess under a 256 MB address-space limit: a template that
allocated first and checked later would die there (MemoryError or worse), failing the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workflows.domain.failures import StepFailed
from workflows.templating import (
    MAX_RENDERED_CHARS,
    evaluate,
    render,
    render_budget,
    syntax_error,
    variables,
)

LAYER = Path(__file__).resolve().parents[2] / "layers" / "shared"

HOSTILE = [
    "{{ 'a' * 1000000000 }}",
    "{{ [1] * 10**8 }}",
    "{{ 'x'|center(10**9) }}",
    "{{ 'x'|center(1000000000) }}",  # a constant: folded when the template is compiled
    "{{ '{:>1000000000}'.format('x') }}",
    "{{ 10**100000 }}",
    "{{ 9**(9**9) }}",
    "{{ '{0:{1}}'.format('x', 10**9) }}",
    "{{ '%*s' % (10**9, 'x') }}",
    "{{ '%1000000000d' % 1 }}",
    "{{ '%1000000000d'|format(1) }}",
    "{{ 'x'|indent(10**9) }}",
    "{{ 'a\tb'.expandtabs(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.zfill(10**9) }}",
    "{{ [1]|batch(10**9, 0)|list }}",
    "{{ range(10)|slice(10**9)|list }}",
    "{{ ('a' * 100000)|replace('a', 'a' * 100000) }}",
    "{{ (['a' * 100000] * 1000)|join }}",
    "{{ 'aaaa'.translate({97: 'x' * 100000}) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% set r = range(10000)|list %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ 1.5 ** 100000 }}",
    "{{ '{:.1000000000f}'.format(1.0) }}",
    "{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}",
    "{% set x %}{% for i in range(10000) %}{{ 'a' * 200000 }}{% endfor %}{% endset %}{{ x|length }}",
    "{{ ['a' * 200000] * 10000 }}",
    "{{ (['a' * 200000] * 10000)|tojson }}",
    "{{ (['a' * 100000] * 100)|string }}",
    "{{ 'x' ~ (['a' * 200000] * 10000) }}",
    "{{ (10**1000) * (10**1000) * (10**1000) * (10**1000) * (10**1000) }}",
    "{{ range(100000)|list }}",
    # Values written out as JSON, kept as typed values, or given to tojson.
    "{% set ns = namespace(a=['x' * 200000] * 10000) %}{{ ns }}",
    "{% set ns = namespace(a=['x' * 200000] * 10000) %}{{ ns|string|length }}",
    "{{ range(10000)|map('string')|list|tojson(1000000000) }}",
    "{{ ('\\x00' * 200000)|tojson }}",
    "{{ range(10000)|map('center', 200000) }}",
    "{{ {'a': ['x' * 200000] * 10000} }}",
    "{{ ['x' * 200000] * 10000 + ['y'] }}",
]

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from workflows.domain.failures import StepFailed
    from workflows.steps.base import StepContext
    from workflows.steps.log import LogConfig, LogStep
    from workflows.templating import render_budget, render_value

    limit = 256 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    step = LogStep()
    typed = sys.argv[2] == "typed"
    context = StepContext(
        run_id="r", tenant_id="t", workflow_id=None, step_id="s", attempt=1,
        inputs={}, step_outputs={}, last=None,
    )
    results = []
    for template in json.loads(sys.stdin.read()):
        try:
            with render_budget():
                if typed:  # as a webhook's body renders its strings
                    render_value(template, context.template_context())
                else:
                    step.execute(LogConfig(message=template), context)
            results.append("rendered")
        except StepFailed as exc:
            results.append(exc.code)
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("mode", ["text", "typed"])
def test_hostile_templates_fail_their_step_under_a_256_mb_address_space(mode: str) -> None:
    assert len(HOSTILE) >= 20
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(LAYER), mode],
        input=json.dumps(HOSTILE),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    assert dict(zip(HOSTILE, results, strict=True)) == dict.fromkeys(HOSTILE, "template_limit_exceeded")


def test_a_limit_failure_is_not_retried() -> None:
    with pytest.raises(StepFailed) as failed:
        render("{{ 'a' * 10**9 }}", {})
    assert failed.value.code == "template_limit_exceeded"
    assert failed.value.retryable is False


def test_ordinary_templates_render_as_before() -> None:
    context = {"inputs": {"name": "Ada", "xs": [1, 2, 3]}, "steps": {}, "last": None}
    template = (
        "Hello {{ inputs.name }}: {{ inputs.xs|join(',') }} {{ 'ab' * 2 }} {{ 2**10 }} "
        "{{ '{:>4}'.format('x') }} {{ '%03d' % 7 }} {{ inputs.name|center(7) }}|"
        "{% for i in inputs.xs %}{{ loop.index }}{% endfor %} {{ inputs.name ~ '!' }}"
    )
    assert render(template, context) == "Hello Ada: 1,2,3 abab 1024    x 007   Ada  |123 Ada!"
    assert evaluate("inputs.xs|length > 2", context) is True


def test_the_output_limit_is_checked_while_rendering() -> None:
    with pytest.raises(StepFailed) as failed:
        render("{% for i in range(3000) %}{{ 'x' * 100 }}{% endfor %}", {})
    assert failed.value.code == "template_limit_exceeded"
    assert len(render("{{ 'x' * 1000 }}", {})) == 1000 < MAX_RENDERED_CHARS


def test_renders_of_one_step_share_one_loop_budget() -> None:
    template = "{% for i in range(10000) %}{% endfor %}"
    with render_budget():
        for _ in range(10):
            render(template, {})
        with pytest.raises(StepFailed) as failed:
            render(template, {})
    assert failed.value.code == "template_limit_exceeded"
    render(template, {})  # a new render outside that step has a budget of its own


def test_errors_inside_a_template_fail_the_step_as_template_errors() -> None:
    for template in ("{{ 1 / 0 }}", "{{ inputs.missing }}", "{{ [1][5] }}"):
        with pytest.raises(StepFailed) as failed:
            render(template, {"inputs": {}})
        assert failed.value.code == "template_error"


def test_syntax_is_checked_without_rendering() -> None:
    assert syntax_error("{{ inputs.x ") is not None
    assert syntax_error("{% for x in y %}") is not None
    assert syntax_error("inputs.x >", expression=True) is not None
    assert syntax_error("{{ 'a' * 10**9 }}") is None  # valid syntax; refused when rendered
    assert syntax_error("inputs.score > 0.5", expression=True) is None
    assert variables("{{ secrets.TOKEN }} {{ inputs.a }}") == {"secrets", "inputs"}
