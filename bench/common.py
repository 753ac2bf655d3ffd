"""Process set-up shared by the benchmarks: environment, paths, moto resources, Lambda events."""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "shared"
EVENTS = ROOT / "events"
API_KEY = "local-dev-key"  # the key the sample events in events/ carry
REGION = "us-east-1"

# Everything a benchmark needs before boto3 or Powertools is imported: dummy credentials (boto3
# must never probe the instance metadata address), a region, and quiet Powertools.
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "workflows",
    "POWERTOOLS_METRICS_NAMESPACE": "Workflows",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_DEV": "false",
}


def prepare_environment() -> None:
    os.environ.update(ENVIRONMENT)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from devstack import metrics

    # The functions' metric lines stay out of the report unless DEVSTACK_METRICS=on.
    metrics.configure()
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_TEMPLATE: dict[str, Any] | None = None


def stateful_template() -> dict[str, Any]:
    """template.yaml's tables, queues and bucket (translated once per process)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from devstack import provision

        _TEMPLATE = provision.stateful_part(provision.translate())
    return _TEMPLATE


@contextmanager
def moto_resources(
    extra_env: dict[str, str] | None = None, *, streams: bool = False
) -> Iterator[dict[str, str]]:
    """In-process moto (mock_aws) with template.yaml's resources; the WORKFLOWS_* environment is
    exported for the duration, and each function's root builds its parts anew against them."""
    import boto3
    from moto import mock_aws

    from devstack import moto_patches, provision
    from workflows import settings

    moto_patches.install()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    with mock_aws():
        env = provision.create_directly(
            boto3.client("dynamodb"),
            boto3.client("sqs"),
            boto3.client("s3"),
            cfn=stateful_template(),
            prefix=prefix,
            streams=streams,
        )
        env = {**env, "WORKFLOWS_API_KEY": API_KEY, **(extra_env or {})}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        _fresh_roots(settings)
        try:
            yield env
        finally:
            _fresh_roots(settings)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _fresh_roots(settings: Any) -> None:
    from workflows.roots import api, dispatch_dlq, dispatcher, dlq_worker, follow, sweeper

    settings.get_settings.cache_clear()
    for root in (api, dispatcher, dispatch_dlq, dlq_worker, sweeper, follow):
        root.parts.cache_clear()


def table_properties(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Physical table name -> its Properties in template.yaml (key schema, indexes)."""
    from devstack import provision

    names = {logical: env[variable] for logical, variable in provision.ENVIRONMENT.items() if variable in env}
    return {
        names[logical]: resource["Properties"]
        for logical, resource in stateful_template()["Resources"].items()
        if resource["Type"] == "AWS::DynamoDB::Table" and logical in names
    }


def api_event(
    method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, shaped like events/ApiFunction/get_run.json."""
    event: dict[str, Any] = copy.deepcopy(_template_event())
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["pathParameters"] = {"proxy": path.removeprefix("/api/v1/workflows/")}
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    if query:
        event["queryStringParameters"] = dict(query)
    else:
        event.pop("queryStringParameters", None)
    if body is not None:
        event["headers"]["content-type"] = "application/json"
        event["body"] = json.dumps(body)
    return event


_BASE_EVENT: dict[str, Any] | None = None


def _template_event() -> dict[str, Any]:
    global _BASE_EVENT
    if _BASE_EVENT is None:
        _BASE_EVENT = json.loads((EVENTS / "ApiFunction/get_run.json").read_text())
    return _BASE_EVENT


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    from devstack.workers import sqs_event as build

    return build(messages, queue_arn, REGION)


def lambda_context(name: str, memory_mb: int, timeout_ms: int) -> Any:
    from devstack.functions import LambdaContext

    return LambdaContext(
        function_name=name,
        memory_limit_in_mb=memory_mb,
        aws_request_id=str(uuid.uuid4()),
        timeout_ms=timeout_ms,
    )


def load_function(name: str) -> Any:
    from devstack.functions import load_function as load

    return load(name)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def records_in_turn() -> Iterator[None]:
    """The dispatcher works a batch's records one after another while inside: in-process, its
    threads would only contend for one interpreter lock, and moto's backends take no locks."""
    from workflows.roots import dispatcher

    saved = dispatcher.RECORD_THREADS
    dispatcher.RECORD_THREADS = 1
    try:
        yield
    finally:
        dispatcher.RECORD_THREADS = saved
