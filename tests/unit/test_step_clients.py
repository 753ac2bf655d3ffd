"""The composition root builds the AWS clients of the step types that call Bedrock and gives them
as factories: a client is made by the first call that needs it, never by building the step type,
rendering a template or searching another backend (cold start)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from tests.conftest import FakeClock, make_fake
from workflows.roots.parts import Parts
from workflows.settings import Settings
from workflows.steps.base import StepContext, StepResult
from workflows.steps.registry import parse_config

CLIENTS = ("bedrock_runtime", "bedrock_agent_runtime")


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def parts() -> Parts:
    return make_fake(FakeClock(), bedrock_knowledge_base_id="KB12345678")


@pytest.fixture
def stubbed() -> Iterator[dict[str, tuple[Any, Stubber]]]:
    clients = {
        "bedrock_runtime": boto3.client("bedrock-runtime"),
        "bedrock_agent_runtime": boto3.client("bedrock-agent-runtime"),
    }
    stubbers = {name: Stubber(client) for name, client in clients.items()}
    for stubber in stubbers.values():
        stubber.activate()
    yield {name: (clients[name], stubbers[name]) for name in clients}
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def _context() -> StepContext:
    return StepContext(
        run_id="r1",
        tenant_id="default",
        workflow_id=None,
        step_id="s1",
        attempt=1,
        inputs={"question": "How many vacation days?"},
        step_outputs={},
        last=None,
    )


def _execute(parts: Parts, type_name: str, config: dict[str, Any]) -> StepResult:
    step_type = parts.registry.get(type_name)
    assert step_type is not None
    outcome = step_type.execute(parse_config(step_type, config), _context())
    assert isinstance(outcome, StepResult)
    return outcome


def test_building_the_step_types_and_calling_other_backends_makes_no_bedrock_client(parts: Parts) -> None:
    assert _execute(parts, "prompt", {"template": "Hi {{ inputs.question }}"}).output["text"].startswith("Hi")
    parts.corpus.add("default", content="Twenty vacation days.", metadata={})
    found = _execute(parts, "rag_search", {"query": "vacation", "backend": "builtin"})

    assert len(found.output["documents"]) == 1
    assert [name for name in CLIENTS if name in parts.__dict__] == []


def test_a_prompt_on_bedrock_calls_the_roots_client(
    parts: Parts, stubbed: dict[str, tuple[Any, Stubber]]
) -> None:
    client, stubber = stubbed["bedrock_runtime"]
    parts.give(bedrock_runtime=client)
    stubber.add_response(
        "converse",
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "Bonjour"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 9, "outputTokens": 1, "totalTokens": 10},
            "metrics": {"latencyMs": 80},
        },
    )

    result = _execute(
        parts, "prompt", {"template": "Say hello", "model": "amazon.nova-lite-v1:0", "provider": "bedrock"}
    )

    assert result.output["text"] == "Bonjour"


def test_a_knowledge_base_search_calls_the_roots_client(
    parts: Parts, stubbed: dict[str, tuple[Any, Stubber]]
) -> None:
    client, stubber = stubbed["bedrock_agent_runtime"]
    parts.give(bedrock_agent_runtime=client)
    stubber.add_response(
        "retrieve",
        {"retrievalResults": [{"content": {"text": "Ten days."}, "score": 0.5, "documentId": "d"}]},
    )

    result = _execute(parts, "rag_search", {"query": "{{ inputs.question }}", "backend": "bedrock_kb"})

    assert [doc["id"] for doc in result.output["documents"]] == ["d"]


def test_the_roots_bedrock_clients_keep_each_step_types_timeouts() -> None:
    parts = Parts(Settings(llm_timeout_sec=7, retrieval_timeout_sec=20))

    runtime, agent = parts.bedrock_runtime, parts.bedrock_agent_runtime

    assert runtime.meta.service_model.service_name == "bedrock-runtime"
    assert agent.meta.service_model.service_name == "bedrock-agent-runtime"
    assert (runtime.meta.config.connect_timeout, runtime.meta.config.read_timeout) == (7, 7)
    assert (agent.meta.config.connect_timeout, agent.meta.config.read_timeout) == (10, 20)
    # botocore counts the first attempt too: `max_attempts=3` reads back as `total_max_attempts=4`
    assert runtime.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert parts.bedrock_runtime is runtime  # one client per function
