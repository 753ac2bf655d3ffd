"""A first deploy works with nothing created by hand.

template.yaml is provisioned on the emulator with its default parameters (samtranslator, then
moto's CloudFormation; the generated secret, which moto's CloudFormation skips, by
`provision.create_secrets`), the API is given exactly the environment the template gives
ApiFunction, and the key is read the way the README's deploy section reads it: Secrets Manager's
get-secret-value on the secret the stack's output names.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from fastapi.testclient import TestClient
from moto import mock_aws

from devstack import moto_patches, provision
from workflows.api.app import create_app
from workflows.roots.parts import Parts
from workflows.settings import Settings

pytestmark = pytest.mark.moto

STACK = "workflows"
REGION = "us-east-1"
RUNS = "/api/v1/workflows/runs"
NO_VALUE = object()  # AWS::NoValue: the property or variable is left out


@dataclass
class Deployed:
    outputs: dict[str, str]
    environment: dict[str, str]
    client: TestClient


@cache
def _translated(overrides: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return provision.translate(dict(overrides))


def _resolver(
    cfn: Mapping[str, Any], physical: Mapping[str, str], overrides: Mapping[str, str]
) -> Callable[[Any], Any]:
    """Resolves the intrinsics of the function environment and outputs as CloudFormation would."""
    params = {name: str(p.get("Default", "")) for name, p in cfn["Parameters"].items()}
    params.update(overrides)
    pseudo = {"AWS::StackName": STACK, "AWS::Region": REGION, "AWS::Partition": "aws"}

    def ref(name: str) -> str:
        """A parameter, a pseudo parameter, a resource, or (`Logical.Attribute`) an attribute."""
        for known in (pseudo, params, physical):
            if name in known:
                return known[name]
        raise KeyError(f"nothing provisioned for {name}")

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else ref(arg)
            if key == "Fn::GetAtt":
                return ref(".".join(arg) if isinstance(arg, list) else arg)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                holds = provision.condition_holds(cfn, condition, overrides)
                return resolve(when_true if holds else when_false)
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: ref(m.group(1)), arg)
        resolved = {key: resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    return resolve


def _provision(cfn: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """The stack on the emulator; physical ids by logical id (and `Logical.Attribute`)."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    provision.create_stack(cloudformation, stack_name=STACK, parameters=overrides)
    resources = cloudformation.describe_stack_resources(StackName=STACK)["StackResources"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
    sqs = boto3.client("sqs", region_name=REGION)
    for name, resource in cfn["Resources"].items():
        if resource["Type"] == "AWS::SQS::Queue" and name in physical:
            attributes = sqs.get_queue_attributes(QueueUrl=physical[name], AttributeNames=["QueueArn"])
            physical[f"{name}.Arn"] = attributes["Attributes"]["QueueArn"]
    secrets = boto3.client("secretsmanager", region_name=REGION)
    physical.update(provision.create_secrets(secrets, cfn=cfn, parameters=overrides, stack_name=STACK))
    # Not created on the emulator; no request of these tests reaches them.
    physical["RunSchedules"] = f"{STACK}-runs"
    physical["SchedulerRole.Arn"] = f"arn:aws:iam::123456789012:role/{STACK}-SchedulerRole"
    return physical


@pytest.fixture
def deploy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Deployed]]:
    """`deploy(**overrides)`: the stack with these template parameters, else the defaults."""
    moto_patches.install()
    clients: list[TestClient] = []
    with mock_aws():

        def make(**overrides: str) -> Deployed:
            cfn = _translated(tuple(sorted(overrides.items())))
            resolve = _resolver(cfn, _provision(cfn, overrides), overrides)
            function = cfn["Resources"]["ApiFunction"]["Properties"]
            environment = {k: str(v) for k, v in resolve(function["Environment"]["Variables"]).items()}
            # The outputs the README's deploy section reads the key with (the others name the API
            # and the resources, which need no emulator).
            outputs = {
                name: str(resolve(output["Value"]))
                for name, output in cfn["Outputs"].items()
                if name.startswith("ApiKey")
                and (
                    "Condition" not in output
                    or provision.condition_holds(cfn, output["Condition"], overrides)
                )
            }
            # The settings come from the function's environment alone. (Its other variables set
            # Powertools and boto3's endpoint, which this process sets for the emulator.)
            for name in list(os.environ):
                if name.upper().startswith("WORKFLOWS_"):
                    monkeypatch.delenv(name)
            for name, value in environment.items():
                if name.startswith("WORKFLOWS_"):
                    monkeypatch.setenv(name, value)
            parts = Parts(Settings())
            client = TestClient(create_app(lambda: parts), raise_server_exceptions=False)
            clients.append(client)
            return Deployed(outputs, environment, client)

        parameters.clear_caches()
        try:
            yield make
        finally:
            parameters.clear_caches()
            for client in clients:
                client.close()


def _key_as_the_readme_reads_it(secret_id: str) -> str:
    """aws secretsmanager get-secret-value --secret-id ... --query SecretString --output text"""
    secrets = boto3.client("secretsmanager", region_name=REGION)
    return str(secrets.get_secret_value(SecretId=secret_id)["SecretString"])


def test_a_default_deploy_accepts_the_key_its_output_names(deploy: Callable[..., Deployed]) -> None:
    deployed = deploy()
    key = _key_as_the_readme_reads_it(deployed.outputs["ApiKeySecretArn"])

    response = deployed.client.get(RUNS, headers={"X-API-KEY": key})

    assert response.status_code == 200
    assert response.json()["runs"] == []


def test_a_default_deploy_refuses_any_other_key(deploy: Callable[..., Deployed]) -> None:
    deployed = deploy()

    response = deployed.client.get(RUNS, headers={"X-API-KEY": "not-the-generated-key"})

    assert response.status_code == 401


def test_the_generated_key_is_40_letters_and_digits(deploy: Callable[..., Deployed]) -> None:
    key = _key_as_the_readme_reads_it(deploy().outputs["ApiKeySecretArn"])

    assert len(key) == 40
    assert key.isalnum()


def test_the_key_command_output_reads_that_secret(deploy: Callable[..., Deployed]) -> None:
    outputs = deploy().outputs

    argv = shlex.split(outputs["ApiKeyCommand"])

    assert argv[:3] == ["aws", "secretsmanager", "get-secret-value"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--region": REGION,
        "--secret-id": outputs["ApiKeySecretArn"],
        "--query": "SecretString",
        "--output": "text",
    }


def test_a_deleted_key_secret_answers_503_api_key_unavailable(
    deploy: Callable[..., Deployed], caplog: pytest.LogCaptureFixture
) -> None:
    deployed = deploy()
    secret = deployed.outputs["ApiKeySecretArn"]
    key = _key_as_the_readme_reads_it(secret)
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=secret, ForceDeleteWithoutRecovery=True
    )

    response = deployed.client.get(RUNS, headers={"X-API-KEY": key})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "api_key_unavailable"
    (logged,) = [r for r in caplog.records if r.getMessage() == "single-user API key unreadable"]
    assert logged.levelname == "ERROR"
    assert logged.__dict__["source"] == secret
    assert all(key not in str(r.__dict__) for r in caplog.records)


def test_a_named_ssm_parameter_is_read_instead_of_a_generated_secret(deploy: Callable[..., Deployed]) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/workflows/api-key", Value="key-from-ssm-0123456789", Type="SecureString"
    )
    deployed = deploy(ApiKeyParameterName="/workflows/api-key")

    response = deployed.client.get(RUNS, headers={"X-API-KEY": "key-from-ssm-0123456789"})

    assert response.status_code == 200
    assert "ApiKeySecretArn" not in deployed.outputs
    assert "WORKFLOWS_API_KEY_SECRET_ARN" not in deployed.environment


def test_a_named_ssm_parameter_that_is_missing_answers_503(deploy: Callable[..., Deployed]) -> None:
    deployed = deploy(ApiKeyParameterName="/workflows/not-created")

    response = deployed.client.get(RUNS, headers={"X-API-KEY": "any-key"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "api_key_unavailable"


def test_a_multi_user_deploy_creates_no_key_secret(deploy: Callable[..., Deployed]) -> None:
    deployed = deploy(AuthMode="multi_user")

    assert "ApiKeySecretArn" not in deployed.outputs
    assert "WORKFLOWS_API_KEY_SECRET_ARN" not in deployed.environment


def test_only_the_functions_that_authenticate_may_read_the_key_secret() -> None:
    cfn = _translated(())
    roles = {name: r for name, r in cfn["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    secret = json.dumps({"Ref": "ApiKeySecret"})

    readers = [name for name, role in roles.items() if secret in json.dumps(role)]
    (grant,) = [p for p in roles["ApiFunctionRole"]["Properties"]["Policies"] if secret in json.dumps(p)]

    # The API, and the WebSocket API's $connect (FollowFunction), which authenticates the same way.
    assert sorted(readers) == ["ApiFunctionRole", "FollowFunctionRole"]
    condition, policy, _ = grant["Fn::If"]
    assert condition == "GeneratedApiKey"
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["secretsmanager:GetSecretValue"]
    assert secret in json.dumps(statement["Resource"])
    assert "*" not in json.dumps(statement["Resource"])
