"""Provision AWS resources from template.yaml itself, on moto (in-process or moto server).

template.yaml -> samtranslator (offline) -> plain CloudFormation -> moto `create_stack`.
Only the stateful resources are created: tables, queues and the bucket (and, with
`create_secrets`, the generated secrets moto's CloudFormation skips). Functions are run by
the local stack itself, and an SQS event source mapping must not exist on moto (moto would
invoke the function inside `send_message` and delete the message).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
KEPT_TYPES = frozenset({"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket"})

# Logical id in template.yaml -> the environment variable the functions read it from.
ENVIRONMENT = {
    "RunsTable": "WORKFLOWS_RUNS_TABLE",
    "RunEventsTable": "WORKFLOWS_RUN_EVENTS_TABLE",
    "DefinitionsTable": "WORKFLOWS_DEFINITIONS_TABLE",
    "ArtifactsTable": "WORKFLOWS_ARTIFACTS_TABLE",
    "WebhookDlqTable": "WORKFLOWS_WEBHOOK_DLQ_TABLE",
    "IdempotencyTable": "WORKFLOWS_IDEMPOTENCY_TABLE",
    "ApiKeysTable": "WORKFLOWS_API_KEYS_TABLE",
    "QuotasTable": "WORKFLOWS_QUOTAS_TABLE",
    "SchedulesTable": "WORKFLOWS_SCHEDULES_TABLE",
    "CorpusTable": "WORKFLOWS_CORPUS_TABLE",
    "ArtifactsBucket": "WORKFLOWS_ARTIFACTS_BUCKET",
    "DispatchQueue": "WORKFLOWS_DISPATCH_QUEUE_URL",
    # Read by the local stack's dead-letter poller only, not by the functions.
    "DispatchDeadLetterQueue": "DEVSTACK_DISPATCH_DLQ_URL",
}


class _NoManagedPolicies:
    """samtranslator asks for the account's managed policies; offline there are none."""

    def load(self) -> dict[str, str]:
        return {}


def load_sam_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return dict(yaml_parse(path.read_text()))


def _rewrite_local_uris(template: dict[str, Any]) -> None:
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://local-stack-code/{props[key].strip('/')}.zip"


def translate(parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CloudFormation that `sam deploy` would send, produced offline."""
    template = load_sam_template()
    _rewrite_local_uris(template)
    cfn: dict[str, Any] = transform(template, dict(parameters or {}), _NoManagedPolicies())
    return cfn


def stateful_part(cfn: Mapping[str, Any]) -> dict[str, Any]:
    resources = {k: v for k, v in cfn["Resources"].items() if v["Type"] in KEPT_TYPES}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": cfn.get("Parameters", {}),
        "Conditions": cfn.get("Conditions", {}),
        "Resources": resources,
    }


def table_definitions(parameters: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Each table's Properties exactly as template.yaml declares them, by logical id."""
    cfn = translate(parameters)
    return {
        name: resource["Properties"]
        for name, resource in cfn["Resources"].items()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }


def create_stack(
    cloudformation: Any,
    *,
    stack_name: str = "workflows-local",
    parameters: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create the stateful resources; returns the WORKFLOWS_* environment pointing at them."""
    body = stateful_part(translate(parameters))
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
        ClientRequestToken=str(uuid.uuid4()),
    )
    resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
    return {env: physical[logical] for logical, env in ENVIRONMENT.items()}


def condition_holds(
    cfn: Mapping[str, Any], condition: str, parameters: Mapping[str, str] | None = None
) -> bool:
    """Whether a condition of the template holds with these parameters (else their defaults)."""
    params = {name: str(p.get("Default", "")) for name, p in cfn.get("Parameters", {}).items()}
    params.update(parameters or {})

    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return params[arg]
            if key == "Condition":
                return value(cfn["Conditions"][arg])
            if key == "Fn::Equals":
                return value(arg[0]) == value(arg[1])
            if key == "Fn::Not":
                return not value(arg[0])
            if key == "Fn::And":
                return all(value(a) for a in arg)
            if key == "Fn::Or":
                return any(value(a) for a in arg)
        if isinstance(node, str):
            return node
        raise ValueError(f"unsupported in a condition: {node!r}")

    return bool(value(cfn["Conditions"][condition]))


# What GenerateSecretString may say that GetRandomPassword takes under the same name.
_PASSWORD_OPTIONS = (
    "PasswordLength",
    "ExcludeCharacters",
    "ExcludeNumbers",
    "ExcludePunctuation",
    "ExcludeUppercase",
    "ExcludeLowercase",
    "IncludeSpace",
    "RequireEachIncludedType",
)


def create_secrets(
    secretsmanager: Any,
    *,
    cfn: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    stack_name: str = "workflows-local",
) -> dict[str, str]:
    """Create the template's Secrets Manager secrets, which moto's CloudFormation skips.

    Each secret whose condition holds gets a value generated as its GenerateSecretString says
    (Secrets Manager's own GetRandomPassword, as CloudFormation does). Returns each one's ARN by
    logical id: what `Ref` gives for a secret.
    """
    arns: dict[str, str] = {}
    for name, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::SecretsManager::Secret":
            continue
        if "Condition" in resource and not condition_holds(cfn, resource["Condition"], parameters):
            continue
        props = resource.get("Properties", {})
        generate = props.get("GenerateSecretString")
        if generate is None or "SecretStringTemplate" in generate:
            raise ValueError(f"{name}: only a generated plain-string secret is provisioned locally")
        options = {key: generate[key] for key in _PASSWORD_OPTIONS if key in generate}
        value = secretsmanager.get_random_password(**options)["RandomPassword"]
        created = secretsmanager.create_secret(Name=f"{stack_name}-{name}", SecretString=value)
        arns[name] = created["ARN"]
    return arns


def _resolve(value: Any, parameters: Mapping[str, str], arns: Mapping[str, str]) -> Any:
    """Resolve the few intrinsics the stateful resources use: Ref to a parameter, GetAtt .Arn."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return parameters[arg]
        if key == "Fn::GetAtt":
            logical = arg[0] if isinstance(arg, list) else arg.split(".")[0]
            return arns[logical]
    if isinstance(value, dict):
        return {k: _resolve(v, parameters, arns) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, parameters, arns) for v in value]
    return value


def create_directly(
    dynamodb: Any,
    sqs: Any,
    s3: Any,
    *,
    cfn: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    prefix: str = "workflows-test",
    streams: bool = False,
) -> dict[str, str]:
    """Create the template's tables, queues and bucket with plain API calls.

    The same Properties `create_stack` would use, without CloudFormation's ~2 s per stack, so
    every test can have fresh resources. Returns the WORKFLOWS_* environment. A table's stream
    only with `streams` (the emulator's streams slow every write a little: only the tests of
    what reads them turn them on).
    """
    params = {name: str(p.get("Default", "")) for name, p in cfn.get("Parameters", {}).items()}
    params.update(parameters or {})
    physical: dict[str, str] = {}
    arns: dict[str, str] = {}
    resources = cfn["Resources"]
    # Dead-letter queues first: the dispatch queue's redrive policy names one by ARN.
    order = sorted(resources, key=lambda name: "RedrivePolicy" in resources[name].get("Properties", {}))
    for name in order:
        resource = resources[name]
        props = _resolve(resource.get("Properties", {}), params, arns)
        if resource["Type"] == "AWS::DynamoDB::Table":
            table = f"{prefix}-{name}"
            kwargs = {
                "TableName": table,
                "KeySchema": props["KeySchema"],
                "AttributeDefinitions": props["AttributeDefinitions"],
                "BillingMode": props["BillingMode"],
            }
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            if streams and props.get("StreamSpecification"):
                kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
            dynamodb.create_table(**kwargs)
            physical[name] = table
        elif resource["Type"] == "AWS::SQS::Queue":
            attributes = {
                k: json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in props.items()
            }
            url = sqs.create_queue(QueueName=f"{prefix}-{name}", Attributes=attributes)["QueueUrl"]
            physical[name] = url
            arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        elif resource["Type"] == "AWS::S3::Bucket":
            bucket = f"{prefix}-{name}".lower()
            s3.create_bucket(Bucket=bucket)
            physical[name] = bucket
    return {env: physical[logical] for logical, env in ENVIRONMENT.items()}
