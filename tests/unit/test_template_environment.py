"""The functions' environment in template.yaml: every variable they read is declared (SAM's
`sam local invoke --env-vars` applies only declared variables), an empty value means the
setting's default, and each function's whole set fits Lambda's 4 KB limit when deployed."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from devstack.provision import condition_holds, load_sam_template
from workflows.settings import Settings

LAMBDA_ENVIRONMENT_LIMIT = 4096
# Room kept for what a deployer passes in where the parameter's default is empty (ARNs, URLs,
# allowlists): counted as this many bytes in all, on top of the defaults.
DEPLOYER_VALUES_BYTES = 768
# Variables read outside the settings model: boto3's endpoint (the local stack) and Powertools'
# switches, which make run and sam local invoke set.
READ_OUTSIDE_SETTINGS = {"AWS_ENDPOINT_URL", "POWERTOOLS_TRACE_DISABLED", "POWERTOOLS_METRICS_DISABLED"}


@cache
def _template() -> dict[str, Any]:
    return load_sam_template()


def _variables(function: str | None = None) -> dict[str, Any]:
    """Globals' variables, with one function's own (which Lambda sets too) when named."""
    template = load_sam_template()
    variables: dict[str, Any] = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    if function is not None:
        own = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        variables.update(own)
    return variables


def _functions() -> list[str]:
    resources = load_sam_template()["Resources"]
    return [name for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]


def test_every_setting_and_endpoint_is_declared() -> None:
    declared = set().union(*(_variables(function) for function in _functions()))
    wanted = {f"WORKFLOWS_{name.upper()}" for name in Settings.model_fields} | READ_OUTSIDE_SETTINGS
    assert wanted - declared == set()


def test_an_empty_variable_keeps_the_default(monkeypatch: Any) -> None:
    for name, value in _variables().items():
        if value == "" and name.startswith("WORKFLOWS_"):
            monkeypatch.setenv(name, "")
    loaded = Settings()
    assert loaded.api_key is None
    assert loaded.max_steps == Settings.model_fields["max_steps"].default
    assert loaded.llm_timeout_sec == Settings.model_fields["llm_timeout_sec"].default


def _deployed_value(
    value: Any, parameters: dict[str, Any], stack: str, overrides: dict[str, str] | None = None
) -> str | None:
    """A plausible deployed value: parameters' defaults (or `overrides`), physical names as
    CloudFormation makes them (<stack>-<LogicalId>-<13 characters>), queue URLs and ARNs in
    us-east-1; None for a variable left out (AWS::NoValue)."""
    overrides = overrides or {}
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    (function, argument), *_ = value.items()
    if function == "Ref":
        if argument == "AWS::NoValue":
            return None
        if argument in overrides:
            return overrides[argument]
        if argument in parameters:
            return str(parameters[argument].get("Default", ""))
        name = f"{stack}-{argument}-ABCDEFGHIJKLM"
        if "Secret" in argument:
            return f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{argument}-ABCDEFGHIJKL-AbCdEf"
        return f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}" if "Queue" in argument else name
    if function == "Fn::GetAtt":
        logical = argument[0] if isinstance(argument, list) else argument.split(".")[0]
        return f"arn:aws:sqs:us-east-1:123456789012:{stack}-{logical}-ABCDEFGHIJKLM"
    if function == "Fn::Sub":
        return str(argument).replace("${AWS::StackName}", stack)
    if function == "Fn::If":
        condition, when_true, when_false = argument
        holds = condition_holds(_template(), condition, overrides)
        return _deployed_value(when_true if holds else when_false, parameters, stack, overrides)
    raise AssertionError(f"unexpected intrinsic {function}")


@pytest.mark.parametrize("auth_mode", ["single_user", "multi_user"])
@pytest.mark.parametrize("function", _functions())
def test_the_deployed_environment_fits_lambdas_limit(function: str, auth_mode: str) -> None:
    template = load_sam_template()
    parameters = template["Parameters"]
    stack = "workflows-production-eu"
    values = {
        name: _deployed_value(value, parameters, stack, {"AuthMode": auth_mode})
        for name, value in _variables(function).items()
    }
    size = sum(len(name) + len(value) for name, value in values.items() if value is not None)
    assert size + DEPLOYER_VALUES_BYTES < LAMBDA_ENVIRONMENT_LIMIT, f"{function}: {size} bytes"


def test_the_sweepers_period_is_its_schedules_and_each_sweep_knows_its_scheduled_time() -> None:
    from bench.waits import rate_seconds

    function = _template()["Resources"]["SweeperFunction"]["Properties"]
    (schedule,) = (e["Properties"] for e in function["Events"].values() if e["Type"] == "ScheduleV2")
    assert int(_variables("SweeperFunction")["WORKFLOWS_SWEEP_PERIOD_SEC"]) == rate_seconds(
        schedule["ScheduleExpression"]
    )
    assert '"time": "<aws.scheduler.scheduled-time>"' in schedule["Input"]
