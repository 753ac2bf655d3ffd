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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from fastapi import FastAPI
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


class _XdistGroups:
    """`--dist loadgroup` sends the tests of one `xdist_group` to one worker by the group's name
    at the end of their node ids. pytest-xdist 3.8 writes that id to `_nodeid`, which pytest 9
    no longer reads (it keeps a node's id in `_id`), so every group was spread over the workers:
    three local stacks instead of one. This puts the grouped id where pytest reads it; it does
    nothing when xdist sets no `_nodeid` (not loadgroup, or a fixed xdist)."""

    @pytest.hookimpl(trylast=True)  # after xdist's worker has named the groups
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            grouped = vars(item).get("_nodeid")
            if grouped and grouped != item.nodeid:
                item._id = type(item._id).parse(grouped)  # pytest's NodeId, from its string form
                assert item.nodeid == grouped


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_XdistGroups(), "xdist-groups")


@pytest.fixture(scope="session")
def stateful_template() -> dict[str, Any]:
    """template.yaml's tables, queues and bucket, translated once per session."""
    moto_patches.install()
    return provision.stateful_part(provision.translate())


# botocore reads a service's model (JSON files) once per session, and every mock_aws block
# starts with a new default session: most of a fresh account's setup went into reading the
# same files again. The models are read once per process; each block still gets its own
# session (credentials, configuration), and each test its own resources.
_SERVICE_MODELS = botocore.loaders.create_loader()


def new_default_session() -> None:
    """A new boto3 default session that reads service models from the shared loader; inside a
    mock_aws block, which puts the previous default session back when it ends."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _SERVICE_MODELS)
    boto3.DEFAULT_SESSION = boto3.Session(botocore_session=session)


@contextmanager
def moto_account(stateful_template: dict[str, Any], *, streams: bool = False) -> Iterator[dict[str, str]]:
    """A fresh moto account with template.yaml's tables, queues and bucket, for as long as the
    block lasts; the WORKFLOWS_* environment that names them. `streams`: with the tables'
    DynamoDB streams."""
    with mock_aws():
        new_default_session()
        yield provision.create_directly(
            boto3.client("dynamodb"),
            boto3.client("sqs"),
            boto3.client("s3"),
            cfn=stateful_template,
            streams=streams,
        )


@pytest.fixture
def aws_env(stateful_template: dict[str, Any]) -> Iterator[dict[str, str]]:
    with moto_account(stateful_template) as env:
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


def moto_parts(env: dict[str, str], clock: FakeClock) -> Parts:
    """The composition root on the moto resources of `env` (inside its account's block)."""
    return Parts(
        settings_from(env),
        clock=clock,
        dynamodb=AtomicRequests(boto3.client("dynamodb")),
        sqs=boto3.client("sqs"),
        s3=boto3.client("s3"),
    )


@pytest.fixture
def moto_container(aws_env: dict[str, str], clock: FakeClock) -> Parts:
    """The composition root on moto, for adapter and end-to-end tests."""
    return moto_parts(aws_env, clock)


class AppPool:
    """Whole apps, each lent to one test client at a time and built once per process.

    FastAPI builds every route's validation models on an app's first request, about 0.1 s of
    CPU per app. What a test may change in an app is put back when it is returned: the
    services it was lent for, the dependency overrides it set and the OpenAPI document (built
    from the services' settings). A test's objects live in its own container, never in the app.
    """

    def __init__(self) -> None:
        self._idle: list[FastAPI] = []

    @contextmanager
    def lend(self, parts: Parts) -> Iterator[FastAPI]:
        app = self._idle.pop() if self._idle else create_app()
        app.state.services = lambda: parts
        try:
            yield app
        finally:
            app.dependency_overrides.clear()
            app.openapi_schema = None
            del app.state.services
            self._idle.append(app)


APPS = AppPool()


@contextmanager
def api_client(parts: Parts) -> Iterator[TestClient]:
    """A client (with the API key) of a whole app serving `parts`."""
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers.update({"X-API-KEY": API_KEY})
        yield test_client


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


def step_output(container: Parts, tenant_id: str, run_id: str, step_id: str) -> Any:
    """A step's latest output as the run's templates see it: remembered by the run item, or
    found in the run's events once later outputs pushed it out (engine.outputs.RunOutputs)."""
    from workflows.engine.outputs import RunOutputs

    return RunOutputs(container.run_outputs, container.runs.get(tenant_id, run_id))[step_id]
