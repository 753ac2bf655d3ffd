"""Every step type through the engine on moto. The LLM and retrieval endpoints are real HTTP
servers on 127.0.0.1; Bedrock is a real boto3 client answered by botocore's Stubber."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import SecretStr

from tests.conftest import FakeClock, drain, make_container, step_output
from tests.receivers import Receiver, Reply
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.roots.parts import Parts

CALLER = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)


@pytest.fixture
def llm() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def retrieval() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _completion(text: str) -> Reply:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "local-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35},
    }
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode())


def _documents(*docs: tuple[str, str, float]) -> Reply:
    body = {
        "documents": [{"id": i, "content": c, "score": s, "metadata": {"source": "kb"}} for i, c, s in docs]
    }
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode())


def _run(c: Parts, definition: dict[str, Any], inputs: dict[str, Any]) -> str:
    run = c.run_service.submit(CALLER, WorkflowDefinition.model_validate(definition), inputs)
    drain(c)
    return run.run_id


def _completed(c: Parts, run_id: str) -> dict[str, dict[str, Any]]:
    events = c.runs.list_events("default", run_id, limit=1000).events
    return {e.step_id or "": e.payload for e in events if e.event_type == "step_completed"}


def test_rag_search_then_prompt_with_an_openai_compatible_model(
    aws_env: dict[str, str], clock: FakeClock, llm: Receiver, retrieval: Receiver
) -> None:
    c = make_container(
        aws_env,
        clock,
        llm_base_url=llm.url("/v1"),
        llm_api_key=SecretStr("sk-local"),
        retrieval_url=retrieval.url("/search"),
    )
    retrieval.reply(_documents(("d1", "Paris is the capital of France.", 0.92), ("d2", "Lyon", 0.2)))
    llm.reply(_completion("Paris"))
    definition = {
        "name": "answer",
        "steps": [
            {
                "id": "search",
                "type": "rag_search",
                "config": {"query": "{{ inputs.q }}", "top_k": 3, "min_score": 0.5},
            },
            {
                "id": "answer",
                "type": "prompt",
                "config": {
                    "model": "local-model",
                    "template": "Context: {{ steps.search.output.documents[0].content }}\nQ: {{ inputs.q }}",
                },
            },
        ],
    }
    run_id = _run(c, definition, {"q": "What is the capital of France?"})

    run = c.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert [d["id"] for d in step_output(c, "default", run_id, "search")["documents"]] == ["d1"]
    assert run.outputs["text"] == "Paris"
    assert json.loads(retrieval.requests[0].body)["query"] == "What is the capital of France?"
    sent = json.loads(llm.requests[0].body)
    assert llm.requests[0].headers["authorization"] == "Bearer sk-local"
    assert sent["messages"][-1]["content"].startswith("Context: Paris is the capital of France.")
    completed = _completed(c, run_id)
    assert completed["answer"]["usage"] == {"input_tokens": 31, "output_tokens": 4, "total_tokens": 35}
    assert completed["answer"]["model"] == "local-model"


def test_llm_outage_is_retried_then_succeeds(
    aws_env: dict[str, str], clock: FakeClock, llm: Receiver
) -> None:
    c = make_container(aws_env, clock, llm_base_url=llm.url("/v1"), llm_api_key=SecretStr("k"))
    llm.reply(Reply(503), _completion("ok"))
    definition = {
        "name": "retrying",
        "steps": [
            {
                "id": "ask",
                "type": "prompt",
                "config": {"model": "m", "template": "hi"},
                "retry": {"max_attempts": 2, "initial_interval_seconds": 0, "jitter": "none"},
            }
        ],
    }
    run_id = _run(c, definition, {})
    assert c.runs.get("default", run_id).outputs["text"] == "ok"
    assert len(llm.requests) == 2


def test_prompt_through_bedrock_converse(aws_env: dict[str, str], clock: FakeClock) -> None:
    c = make_container(aws_env, clock)
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "Bonjour"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 9, "outputTokens": 1, "totalTokens": 10},
                "metrics": {"latencyMs": 80},
            },
            expected_params={
                "modelId": "amazon.nova-lite-v1:0",
                "messages": [{"role": "user", "content": [{"text": "Say hello in French"}]}],
                "inferenceConfig": {"maxTokens": 1024},
            },
        )
        # The composition root gives its prompt steps this client (a client given to Parts is
        # used as it is): the run calls Bedrock through the stub.
        c.give(bedrock_runtime=client)
        definition = {
            "name": "bedrock",
            "steps": [
                {
                    "id": "ask",
                    "type": "prompt",
                    "config": {
                        "model": "amazon.nova-lite-v1:0",
                        "provider": "bedrock",
                        "template": "Say hello in French",
                    },
                }
            ],
        }
        run_id = _run(c, definition, {})
        stubber.assert_no_pending_responses()
    run = c.runs.get("default", run_id)
    assert run.outputs["text"] == "Bonjour"
    assert _completed(c, run_id)["ask"]["usage"]["total_tokens"] == 10


def test_prompt_without_model_renders_the_template(aws_env: dict[str, str], clock: FakeClock) -> None:
    c = make_container(aws_env, clock)
    definition = {
        "name": "render",
        "steps": [{"id": "draft", "type": "prompt", "config": {"template": "Dear {{ inputs.name }}"}}],
    }
    run_id = _run(c, definition, {"name": "Ada"})
    assert c.runs.get("default", run_id).outputs == {"text": "Dear Ada"}


def test_a_step_past_its_timeout_follows_on_timeout(
    aws_env: dict[str, str], clock: FakeClock, llm: Receiver
) -> None:
    c = make_container(aws_env, clock, llm_base_url=llm.url("/v1"), llm_api_key=SecretStr("k"))
    slow = _completion("too late")
    slow.delay = 3.0
    llm.reply(slow)
    definition = {
        "name": "deadline",
        "steps": [
            {
                "id": "ask",
                "type": "prompt",
                "config": {"model": "m", "template": "hi"},
                "timeout_seconds": 1,
                "on_timeout": "apologise",
            },
            {"id": "never", "type": "log", "config": {"message": "skipped"}, "on_success": "_end"},
            {"id": "apologise", "type": "log", "config": {"message": "timed out: {{ last.error.code }}"}},
        ],
    }
    run_id = _run(c, definition, {})
    run = c.runs.get("default", run_id)
    assert run.status.value == "succeeded"
    assert run.outputs["message"] == "timed out: llm_timeout"
    types = [e.event_type for e in c.runs.list_events("default", run_id, limit=100).events]
    assert "step_timeout" in types
    assert "never" not in run.step_outputs


def test_save_artifact_stores_the_prompt_text_in_s3(aws_env: dict[str, str], clock: FakeClock) -> None:
    import hashlib

    c = make_container(aws_env, clock)
    definition = {
        "name": "draft",
        "steps": [
            {
                "id": "draft",
                "type": "prompt",
                "config": {"template": "Dear {{ inputs.name }}", "save_artifact": True},
            }
        ],
    }
    run_id = _run(c, definition, {"name": "Ada"})
    [meta] = c.artifacts.list("default", run_id)
    assert (meta.step_id, meta.name, meta.mime_type, meta.size_bytes) == (
        "draft",
        "draft.txt",
        "text/plain; charset=utf-8",
        8,
    )
    assert meta.sha256 == hashlib.sha256(b"Dear Ada").hexdigest()
    assert c.artifacts.read(meta) == b"Dear Ada"
    assert _completed(c, run_id)["draft"]["artifact_id"] == meta.artifact_id
