"""AWS clients and the one place where botocore `ClientError` codes become domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from workflows.errors import DependencyUnavailable, DomainError, StaleWrite, Throttled

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
    }
)

# Standard retry mode retries throttling and transient errors with backoff before we see them.
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3, read_timeout=10)


# SigV4 presigned S3 URLs carry their lifetime (X-Amz-Expires) instead of an absolute time.
_S3_CONFIG = _CONFIG.merge(Config(signature_version="s3v4"))


def client(service: str, *, endpoint_url: str | None = None) -> Any:
    """A boto3 client; AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> redirect it (local stack),
    `endpoint_url` names one (the WebSocket stage's management API has one per stage)."""
    config = _S3_CONFIG if service == "s3" else _CONFIG
    return boto3.client(service, config=config, endpoint_url=endpoint_url)


def step_client(service: str, *, timeout: float) -> Any:
    """A boto3 client for a step's calls out (Bedrock: `bedrock-runtime`, `bedrock-agent-runtime`):
    standard retries (`max_attempts=3`: up to 3 after the first); each connect within 10 s (or
    `timeout`, when shorter), each read within `timeout` (the step type's setting)."""
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=min(10.0, timeout),
        read_timeout=timeout,
    )
    return boto3.client(service, config=config)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: ClientError) -> DomainError:
    code = error_code(exc)
    if code in THROTTLING_CODES:
        return Throttled(f"AWS throttled the request ({code})")
    if code == "ConditionalCheckFailedException":
        return StaleWrite("the item changed since it was read")
    return DependencyUnavailable(f"AWS request failed ({code or 'unknown'})")


@contextmanager
def aws_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        raise translate(exc) from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        # No answer at all (connect or read timeout, a dropped connection): the same retryable
        # 503 as an AWS error, where it would otherwise surface as an unexplained 500.
        raise DependencyUnavailable(f"AWS request failed ({type(exc).__name__})") from exc
