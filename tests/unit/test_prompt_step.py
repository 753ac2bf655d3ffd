"""The `prompt` step: templating, an OpenAI-compatible endpoint on 127.0.0.1, Bedrock via Stubber."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from pydantic import ValidationError

from tests.receivers import Receiver
from tests.receivers import Reply as ReceiverReply
from workflows.domain.failures import StepFailed
from workflows.settings import Settings
from workflows.steps.base import StepContext, StepType
from workflows.steps.prompt import PromptConfig, PromptStep

LLM_KEY = "sk-test-0123456789"


# --- a real OpenAI-compatible endpoint on loopback ----------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    chunks: list[bytes] | None = None
    chunk_delay: float = 0.0


@dataclass
class FakeLlmServer:
    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def completion(
    text: str = "Paris.", *, prompt_tokens: int = 12, completion_tokens: int = 3
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test-2026",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@pytest.fixture
def llm_server() -> Iterator[FakeLlmServer]:
    state = FakeLlmServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "json": json.loads(raw)}
            )
            reply = state.replies.pop(0) if state.replies else Reply(body=completion())
            time.sleep(reply.delay)
            if reply.chunks is not None:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(sum(len(c) for c in reply.chunks)))
                self.end_headers()
                for chunk in reply.chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    time.sleep(reply.chunk_delay)
                return
            body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def local_http() -> httpx.Client:
    # Loopback only: never let an environment proxy carry test traffic elsewhere.
    return httpx.Client(trust_env=False, follow_redirects=False)


def no_bedrock() -> Any:
    raise AssertionError("the Bedrock client must not be built")


def context(**overrides: Any) -> StepContext:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "tenant_id": "tenant-a",
        "workflow_id": "wf-1",
        "step_id": "ask",
        "attempt": 1,
        "inputs": {"country": "France"},
        "step_outputs": {"lookup": {"capital_hint": "starts with P"}},
        "last": {"capital_hint": "starts with P"},
    }
    values.update(overrides)
    return StepContext(**values)


def openai_step(server: FakeLlmServer, **settings: Any) -> PromptStep:
    values: dict[str, Any] = {"llm_base_url": server.url, "llm_api_key": LLM_KEY, **settings}
    return PromptStep(Settings(**values), http_client_factory=local_http, bedrock_client_factory=no_bedrock)


def run(step: PromptStep, config: dict[str, Any], ctx: StepContext | None = None) -> Any:
    return step.execute(PromptConfig.model_validate(config), ctx or context())


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- config ---------------------------------------------------------------------------------------


def test_example_config_validates_and_schema_is_produced() -> None:
    step: StepType = PromptStep(Settings(), bedrock_client_factory=no_bedrock)

    assert step.config_model.model_validate(step.example)
    schema = step.config_model.model_json_schema()
    assert schema["required"] == ["template"]
    assert {"template", "model", "variables", "save_artifact"} <= set(schema["properties"])
    assert step.delivery == "at_least_once"


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"template": ""},
        {"template": "x", "unknown": 1},
        {"template": "x", "model": "m", "temperature": 2.5},
        {"template": "x", "model": "m", "max_tokens": 0},
        {"template": "x", "model": "m", "provider": "azure"},
        {"template": "x", "variables": {"inputs": "shadow"}},
        {"template": "x", "system": "be brief"},
        {"template": "x", "max_tokens": 10},
    ],
)
def test_invalid_config_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PromptConfig.model_validate(config)


def test_constructing_and_rendering_creates_no_clients() -> None:
    def refuse() -> Any:
        raise AssertionError("no client should be built")

    step = PromptStep(Settings(), http_client_factory=refuse, bedrock_client_factory=refuse)

    result = run(step, {"template": "hi"})

    assert result.output == {"text": "hi"}


# --- template only --------------------------------------------------------------------------------


def test_without_model_renders_inputs_step_outputs_last_run_and_variables() -> None:
    step = PromptStep(Settings(), bedrock_client_factory=no_bedrock)
    template = (
        "{{ greeting }} {{ inputs.country }} / {{ steps.lookup.output.capital_hint }} / "
        "{{ last.capital_hint }} / {{ run.tenant_id }} / {{ variables.greeting }}"
    )

    result = run(step, {"template": template, "variables": {"greeting": "Hi"}, "save_artifact": True})

    assert result.output == {"text": "Hi France / starts with P / starts with P / tenant-a / Hi"}
    assert result.event_fields == {"save_artifact": True}


def test_undefined_variable_fails_the_step_with_template_error() -> None:
    step = PromptStep(Settings(), bedrock_client_factory=no_bedrock)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "{{ inputs.missing }}"})

    assert failure.value.code == "template_error"


# --- OpenAI-compatible endpoint -------------------------------------------------------------------


def test_openai_completion_is_the_output_and_usage_is_recorded(llm_server: FakeLlmServer) -> None:
    # Given
    step = openai_step(llm_server)
    config = {
        "template": "Capital of {{ inputs.country }}?",
        "model": "gpt-test",
        "system": "Answer for {{ run.tenant_id }} in one word.",
        "max_tokens": 50,
        "temperature": 0.1,
    }

    # When
    result = run(step, config)

    # Then
    assert result.output == {
        "text": "Paris.",
        "model": "gpt-test-2026",
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        "finish_reason": "stop",
    }
    assert result.event_fields == {
        "model": "gpt-test-2026",
        "provider": "openai",
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        "save_artifact": False,
    }
    [request] = llm_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {LLM_KEY}"
    assert request["json"] == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Answer for tenant-a in one word."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "max_tokens": 50,
        "temperature": 0.1,
    }


def test_openai_request_omits_unset_options(llm_server: FakeLlmServer) -> None:
    step = openai_step(llm_server)

    run(step, {"template": "{{ last.capital_hint }}", "model": "gpt-test"})

    assert llm_server.requests[0]["json"] == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "starts with P"}],
        "max_tokens": 1024,
    }


def test_openai_missing_usage_counts_as_zero_tokens(llm_server: FakeLlmServer) -> None:
    body = completion()
    del body["usage"]
    llm_server.replies.append(Reply(body=body))
    step = openai_step(llm_server)

    result = run(step, {"template": "x", "model": "gpt-test"})

    assert result.output["usage"] == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (500, "llm_http_5xx", True),
        (503, "llm_http_5xx", True),
        (429, "llm_rate_limited", True),
        (408, "llm_timeout", True),
        (401, "llm_auth", False),
        (403, "llm_auth", False),
        (400, "llm_http_4xx", False),
        (404, "llm_http_4xx", False),
        (302, "llm_bad_response", False),
    ],
)
def test_openai_error_status_becomes_step_failure(
    llm_server: FakeLlmServer, status: int, code: str, retryable: bool
) -> None:
    llm_server.replies.append(Reply(status=status, body={"error": {"message": "nope"}}))
    step = openai_step(llm_server)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "gpt-test"})

    assert (failure.value.code, failure.value.retryable) == (code, retryable)
    assert str(status) in failure.value.message


def test_openai_slow_answer_is_a_retryable_timeout(llm_server: FakeLlmServer) -> None:
    llm_server.replies.append(Reply(body=completion(), delay=1.0))
    step = openai_step(llm_server, llm_timeout_sec=0.2)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "gpt-test"})

    # The answer would have arrived after 1 s: the 0.2 s timeout is what failed the step.
    assert (failure.value.code, failure.value.retryable) == ("llm_timeout", True)


def test_openai_body_dripping_past_the_timeout_is_a_timeout(llm_server: FakeLlmServer) -> None:
    # Each chunk arrives well within the read timeout; the whole body does not.
    body = json.dumps(completion()).encode()
    chunks = [body[i : i + 40] for i in range(0, len(body), 40)]
    llm_server.replies.append(Reply(chunks=chunks, chunk_delay=0.1))
    step = openai_step(llm_server, llm_timeout_sec=0.35)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "gpt-test"})

    assert (failure.value.code, failure.value.retryable) == ("llm_timeout", True)


@pytest.mark.parametrize(
    "reply",
    [
        ReceiverReply(body=json.dumps(completion()).encode(), trickle_head=0.5),
        ReceiverReply(body=json.dumps(completion()).encode(), trickle_body=0.5),
    ],
    ids=["status-line-and-headers", "body"],
)
def test_openai_trickling_endpoint_fails_at_the_step_budget(reply: ReceiverReply) -> None:
    # Given an endpoint sending one byte every 0.5 s (each read is quick, the answer takes
    # minutes), the production HTTP client, and a step budget of 1 s
    endpoint = Receiver(default=reply)
    try:
        settings = Settings(llm_base_url=endpoint.url("/v1"), llm_api_key=LLM_KEY, llm_timeout_sec=60)
        step = PromptStep(settings, bedrock_client_factory=no_bedrock)

        started = time.monotonic()
        with pytest.raises(StepFailed) as failure:
            run(step, {"template": "x", "model": "gpt-test"}, context(time_budget_seconds=1))
        elapsed = time.monotonic() - started

        # Then the step fails with its retryable timeout at the budget, not minutes later
        assert (failure.value.code, failure.value.retryable) == ("llm_timeout", True)
        assert elapsed < 5, f"took {elapsed:.1f} s for a 1 s budget"
        assert endpoint.requests[0].path == "/v1/chat/completions"
    finally:
        endpoint.close()


@pytest.mark.parametrize(
    "body",
    [b"<html>gateway</html>", json.dumps({"choices": []}).encode(), json.dumps({"result": "x"}).encode()],
)
def test_openai_malformed_response_is_permanent(llm_server: FakeLlmServer, body: bytes) -> None:
    llm_server.replies.append(Reply(body=body))
    step = openai_step(llm_server)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "gpt-test"})

    assert (failure.value.code, failure.value.retryable) == ("llm_bad_response", False)


def test_openai_unreachable_endpoint_is_retryable() -> None:
    settings = Settings(llm_base_url=f"http://127.0.0.1:{unused_port()}/v1", llm_timeout_sec=2)
    step = PromptStep(settings, http_client_factory=local_http, bedrock_client_factory=no_bedrock)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "gpt-test"})

    assert (failure.value.code, failure.value.retryable) == ("llm_unavailable", True)


def test_openai_without_endpoint_is_a_permanent_configuration_failure() -> None:
    step = PromptStep(
        Settings(llm_base_url=""), http_client_factory=local_http, bedrock_client_factory=no_bedrock
    )

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "gpt-test"})

    assert (failure.value.code, failure.value.retryable) == ("llm_not_configured", False)


def test_openai_key_is_read_from_secrets_manager_when_only_the_arn_is_set(
    llm_server: FakeLlmServer,
) -> None:
    with mock_aws():
        secret = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="workflows/llm-key-prompt-test", SecretString="sk-from-secrets-manager"
        )
        settings = Settings(llm_base_url=llm_server.url, llm_api_key_secret_arn=secret["ARN"])
        step = PromptStep(settings, http_client_factory=local_http, bedrock_client_factory=no_bedrock)

        run(step, {"template": "x", "model": "gpt-test"})

    assert llm_server.requests[0]["headers"]["Authorization"] == "Bearer sk-from-secrets-manager"


# --- Amazon Bedrock Converse ----------------------------------------------------------------------


@pytest.fixture
def bedrock() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def bedrock_step(client: Any, **settings: Any) -> PromptStep:
    def refuse() -> httpx.Client:
        raise AssertionError("the OpenAI client must not be used")

    factory: Callable[[], Any] = lambda: client  # noqa: E731
    return PromptStep(Settings(**settings), http_client_factory=refuse, bedrock_client_factory=factory)


CONVERSE_OK = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Paris"}, {"text": "."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 20, "outputTokens": 2, "totalTokens": 22},
    "metrics": {"latencyMs": 120},
}


def test_bedrock_converse_completion_and_usage(bedrock: tuple[Any, Stubber]) -> None:
    # Given
    client, stubber = bedrock
    stubber.add_response(
        "converse",
        CONVERSE_OK,
        expected_params={
            "modelId": "anthropic.claude-3-haiku",
            "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
            "system": [{"text": "One word."}],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.0},
        },
    )
    step = bedrock_step(client)
    config = {
        "template": "Capital of {{ inputs.country }}?",
        "model": "anthropic.claude-3-haiku",
        "provider": "bedrock",
        "system": "One word.",
        "max_tokens": 64,
        "temperature": 0,
    }

    # When
    result = run(step, config)

    # Then
    usage = {"input_tokens": 20, "output_tokens": 2, "total_tokens": 22}
    assert result.output == {
        "text": "Paris.",
        "model": "anthropic.claude-3-haiku",
        "usage": usage,
        "finish_reason": "end_turn",
    }
    assert result.event_fields["provider"] == "bedrock"
    assert result.event_fields["usage"] == usage


def test_provider_defaults_to_the_setting(bedrock: tuple[Any, Stubber]) -> None:
    client, stubber = bedrock
    stubber.add_response("converse", CONVERSE_OK)
    step = bedrock_step(client, llm_provider="bedrock")

    result = run(step, {"template": "x", "model": "amazon.nova-lite"})

    assert result.event_fields["provider"] == "bedrock"


@pytest.mark.parametrize(
    ("error_code", "code", "retryable"),
    [
        ("ThrottlingException", "llm_rate_limited", True),
        ("ServiceUnavailableException", "llm_unavailable", True),
        ("InternalServerException", "llm_unavailable", True),
        ("ModelTimeoutException", "llm_timeout", True),
        ("ValidationException", "llm_invalid_request", False),
        ("ResourceNotFoundException", "llm_invalid_request", False),
        ("AccessDeniedException", "llm_auth", False),
    ],
)
def test_bedrock_errors_become_step_failures(
    bedrock: tuple[Any, Stubber], error_code: str, code: str, retryable: bool
) -> None:
    client, stubber = bedrock
    stubber.add_client_error("converse", service_error_code=error_code, service_message="nope")
    step = bedrock_step(client)

    with pytest.raises(StepFailed) as failure:
        run(step, {"template": "x", "model": "amazon.nova-lite", "provider": "bedrock"})

    assert (failure.value.code, failure.value.retryable) == (code, retryable)
    assert error_code in failure.value.message
