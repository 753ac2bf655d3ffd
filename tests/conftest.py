"""Shared fixtures: AWS on moto with resources from template.yaml, the app, the engine."""

from __future__ import annotations

import os
import threading

# Before anything creates a boto3 client: dummy credentials, a region, no metadata probing.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SECURITY_TOKEN="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    POWERTOOLS_SERVICE_NAME="workflows",
    POWERTOOLS_METRICS_NAMESPACE="Workflows",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_DEV="false",
)
os.environ.pop("AWS_ENDPOINT_URL", None)

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from devstack import moto_patches, provision
from tests.fakes import FakeQueue, fake_parts
from tests.faults import unwrapped
from tests.receivers import Receiver
from workflows.api.app import create_app
from workflows.domain.messages import (
    AdvanceMessage,
    CancelChildren,
    ChildEnded,
    DeliverSignal,
    parse_message,
)
from workflows.roots.parts import Parts
from workflows.settings import Settings

API_KEY = "test-key-0123456789"


class FakeClock:
    """A controllable clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need the emulator are marked `moto` (`make test-fast` leaves them out)."""
    for item in items:
        if {"aws_env", "stateful_template"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.moto)


@pytest.fixture(scope="session")
def stateful_template() -> dict[str, Any]:
    """template.yaml's tables, queues and bucket, translated once per session."""
    moto_patches.install()
    return provision.stateful_part(provision.translate())


@pytest.fixture
def aws_env(stateful_template: dict[str, Any]) -> Iterator[dict[str, str]]:
    with mock_aws():
        env = provision.create_directly(
            boto3.client("dynamodb"),
            boto3.client("sqs"),
            boto3.client("s3"),
            cfn=stateful_template,
        )
        yield env


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings_from(env: dict[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {key.removeprefix("WORKFLOWS_").lower(): value for key, value in env.items()}
    values.update(api_key=API_KEY, **overrides)
    return Settings(**values)


@pytest.fixture
def container(clock: FakeClock) -> Parts:
    """The composition root on in-memory fakes: engine and service tests need no emulator."""
    return make_fake(clock)


@pytest.fixture
def moto_container(aws_env: dict[str, str], clock: FakeClock) -> Parts:
    """The composition root on moto, for adapter and end-to-end tests."""
    return Parts(
        settings_from(aws_env),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
        s3=boto3.client("s3"),
    )


def api_client(parts: Parts) -> TestClient:
    app = create_app(lambda: parts)
    test_client = TestClient(app, raise_server_exceptions=False)
    test_client.headers.update({"X-API-KEY": API_KEY})
    return test_client


@pytest.fixture
def client(container: Parts) -> Iterator[TestClient]:
    with api_client(container) as test_client:
        yield test_client


@pytest.fixture
def moto_client(moto_container: Parts) -> Iterator[TestClient]:
    with api_client(moto_container) as test_client:
        yield test_client


class AtomicRequests:
    """Make each request to an in-process moto client atomic, as it is on AWS.

    moto does not lock its backends: two threads inside one TransactWriteItems can interleave
    and half-apply it, which DynamoDB never does. Serialising whole requests keeps the races
    that matter (between one writer's read and its write) and removes the emulator's own.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


@dataclass
class Drained:
    actions: list[str]


def _work(container: Parts, message: object) -> str:
    """One dispatch message, as the dispatcher works it."""
    if isinstance(message, DeliverSignal):
        container.signal_waits.deliver_page(message)
        return "signal_delivered"
    if isinstance(message, ChildEnded):
        return container.children.ended(message)
    if isinstance(message, CancelChildren):
        container.children.control_page(message)
        return "children_cancelled"
    assert isinstance(message, AdvanceMessage)
    return container.engine.process(message).action


def drain(container: Parts, *, max_messages: int = 1000) -> Drained:
    """Deliver every visible dispatch message to the engine, as the event source would."""
    actions: list[str] = []
    queue = unwrapped(container.queue)  # the fake itself, behind any fault injected into it
    if isinstance(queue, FakeQueue):
        while len(actions) < max_messages:
            messages = queue.receive()
            if not messages:
                return Drained(actions)
            actions += [_work(container, message) for message in messages]
        raise AssertionError("queue did not drain")
    sqs = container.sqs
    url = container.settings.dispatch_queue_url
    while len(actions) < max_messages:
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = received.get("Messages", [])
        if not messages:
            return Drained(actions)
        for message in messages:
            actions.append(_work(container, parse_message(message["Body"])))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError("queue did not drain")


def log_definition(*messages: str, name: str = "hello") -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": f"s{i + 1}", "type": "log", "config": {"message": message}}
            for i, message in enumerate(messages)
        ],
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 (tests never send packets anywhere else)."""
    r = Receiver()
    yield r
    r.close()


def make_fake(clock: FakeClock, **overrides: Any) -> Parts:
    """A composition root on in-memory fakes with some settings changed."""
    return fake_parts(Settings(**{"api_key": API_KEY, **overrides}), clock=clock)


def make_container(aws_env: dict[str, str], clock: FakeClock, **overrides: Any) -> Parts:
    """A container on the test's moto resources with some settings changed."""
    return Parts(
        settings_from(aws_env, **overrides),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
    )


LOCAL_WEBHOOKS = {"webhook_allowlist": "127.0.0.1", "webhook_allowed_ports": "*"}
