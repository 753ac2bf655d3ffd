"""The `rag_search` step: a retrieval endpoint on 127.0.0.1, Bedrock Knowledge Bases via Stubber."""

from __future__ import annotations

import json
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
from pydantic import ValidationError

from tests.receivers import Receiver
from tests.receivers import Reply as ReceiverReply
from workflows.domain.failures import StepFailed
from workflows.settings import Settings
from workflows.steps.base import StepContext, StepResult, StepType
from workflows.steps.rag_search import RagSearchConfig, RagSearchStep

RETRIEVAL_KEY = "rk-test-0123456789"


# --- a real retrieval endpoint on loopback ------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0


@dataclass
class FakeRetrievalServer:
    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def doc(doc_id: str, score: float, **metadata: Any) -> dict[str, Any]:
    return {"id": doc_id, "content": f"text of {doc_id}", "score": score, "metadata": metadata}


@pytest.fixture
def retrieval_server() -> Iterator[FakeRetrievalServer]:
    state = FakeRetrievalServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "json": json.loads(self.rfile.read(length)),
                }
            )
            reply = state.replies.pop(0) if state.replies else Reply(body={"documents": []})
            time.sleep(reply.delay)
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
    state.url = f"http://127.0.0.1:{server.server_address[1]}/search"
    yield state
    server.shutdown()
    server.server_close()


def local_http() -> httpx.Client:
    # Loopback only: never let an environment proxy carry test traffic elsewhere.
    return httpx.Client(trust_env=False, follow_redirects=False)


def refuse() -> Any:
    raise AssertionError("this client must not be built")


def context(**overrides: Any) -> StepContext:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "tenant_id": "tenant-a",
        "workflow_id": "wf-1",
        "step_id": "search",
        "attempt": 1,
        "inputs": {"question": "How many vacation days?"},
        "step_outputs": {},
        "last": None,
    }
    values.update(overrides)
    return StepContext(**values)


def http_step(server: FakeRetrievalServer, **settings: Any) -> RagSearchStep:
    values: dict[str, Any] = {"retrieval_url": server.url, "retrieval_api_key": RETRIEVAL_KEY, **settings}
    return RagSearchStep(
        Settings(**values), http_client_factory=local_http, bedrock_agent_client_factory=refuse
    )


def run(step: RagSearchStep, config: dict[str, Any], ctx: StepContext | None = None) -> StepResult:
    return step.execute(RagSearchConfig.model_validate(config), ctx or context())


# --- config ---------------------------------------------------------------------------------------


def test_example_config_validates_and_schema_is_produced() -> None:
    step: StepType = RagSearchStep(Settings(), bedrock_agent_client_factory=refuse)

    assert step.config_model.model_validate(step.example)
    schema = step.config_model.model_json_schema()
    assert schema["required"] == ["query"]
    assert {"query", "top_k", "min_score", "filters", "backend"} <= set(schema["properties"])
    assert schema["properties"]["top_k"]["minimum"] == 1
    assert step.delivery == "at_least_once"


def test_defaults() -> None:
    config = RagSearchConfig.model_validate({"query": "q"})

    assert (config.top_k, config.min_score, config.filters, config.backend) == (5, None, None, "http")


@pytest.mark.parametrize(
    "config",
    [
        {"query": "q", "top_k": 0},
        {"query": "q", "top_k": 51},
        {"query": ""},
        {"top_k": 3},
        {"query": "q", "backend": "elastic"},
        {"query": "q", "min_score": "high"},
        {"query": "q", "extra": True},
    ],
)
def test_invalid_config_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RagSearchConfig.model_validate(config)


def test_top_k_zero_names_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        RagSearchConfig.model_validate({"query": "q", "top_k": 0})

    assert error.value.errors()[0]["loc"] == ("top_k",)


def test_constructing_creates_no_clients() -> None:
    step = RagSearchStep(Settings(), http_client_factory=refuse, bedrock_agent_client_factory=refuse)

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "q", "backend": "builtin"})

    assert failure.value.code == "backend_unavailable"


# --- HTTP backend ---------------------------------------------------------------------------------


def test_http_documents_are_returned_best_first(retrieval_server: FakeRetrievalServer) -> None:
    # Given
    retrieval_server.replies.append(
        Reply(body={"documents": [doc("a", 0.2), doc("b", 0.9, page=3), doc("c", 0.5)]})
    )
    step = http_step(retrieval_server)
    config = {"query": "{{ inputs.question }} ({{ run.tenant_id }})", "filters": {"collection": "hr"}}

    # When
    result = run(step, config)

    # Then
    assert result.output == {
        "query": "How many vacation days? (tenant-a)",
        "documents": [doc("b", 0.9, page=3), doc("c", 0.5), doc("a", 0.2)],
    }
    assert result.event_fields == {"backend": "http", "document_count": 3}
    [request] = retrieval_server.requests
    assert request["path"] == "/search"
    assert request["headers"]["Authorization"] == f"Bearer {RETRIEVAL_KEY}"
    assert request["json"] == {
        "query": "How many vacation days? (tenant-a)",
        "top_k": 5,
        "filters": {"collection": "hr"},
    }


def test_http_min_score_filters_and_top_k_truncates(retrieval_server: FakeRetrievalServer) -> None:
    documents = [doc("low", 0.1), doc("mid", 0.6), doc("top", 0.95), doc("edge", 0.5), doc("high", 0.8)]
    retrieval_server.replies.append(Reply(body={"documents": documents}))
    step = http_step(retrieval_server)

    result = run(step, {"query": "q", "top_k": 3, "min_score": 0.5})

    assert [d["id"] for d in result.output["documents"]] == ["top", "high", "mid"]
    assert retrieval_server.requests[0]["json"]["top_k"] == 3


def test_http_without_key_sends_no_authorization(retrieval_server: FakeRetrievalServer) -> None:
    step = RagSearchStep(
        Settings(retrieval_url=retrieval_server.url),
        http_client_factory=local_http,
        bedrock_agent_client_factory=refuse,
    )

    result = run(step, {"query": "q"})

    assert result.output == {"query": "q", "documents": []}
    assert "Authorization" not in retrieval_server.requests[0]["headers"]
    assert retrieval_server.requests[0]["json"]["filters"] == {}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        {"results": []},
        {"documents": [{"id": "a", "content": "x"}]},
        {"documents": [{"id": "a", "content": "x", "score": "high"}]},
        {"documents": [{"id": "a", "content": "x", "score": 0.1, "metadata": []}]},
        [doc("a", 0.1)],
    ],
)
def test_http_malformed_response_is_permanent(retrieval_server: FakeRetrievalServer, body: Any) -> None:
    retrieval_server.replies.append(Reply(body=body))
    step = http_step(retrieval_server)

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "q"})

    assert (failure.value.code, failure.value.retryable) == ("retrieval_bad_response", False)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (503, "retrieval_http_5xx", True),
        (500, "retrieval_http_5xx", True),
        (429, "retrieval_rate_limited", True),
        (401, "retrieval_auth", False),
        (422, "retrieval_http_4xx", False),
    ],
)
def test_http_error_status_becomes_step_failure(
    retrieval_server: FakeRetrievalServer, status: int, code: str, retryable: bool
) -> None:
    retrieval_server.replies.append(Reply(status=status, body={"error": "unavailable"}))
    step = http_step(retrieval_server)

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "q"})

    assert (failure.value.code, failure.value.retryable) == (code, retryable)


def test_http_slow_endpoint_is_a_retryable_timeout(retrieval_server: FakeRetrievalServer) -> None:
    retrieval_server.replies.append(Reply(body={"documents": []}, delay=1.0))
    step = http_step(retrieval_server, retrieval_timeout_sec=0.2)

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "q"})

    assert (failure.value.code, failure.value.retryable) == ("retrieval_timeout", True)


@pytest.mark.parametrize(
    "reply",
    [
        ReceiverReply(body=json.dumps({"documents": [doc("a", 1.0)]}).encode(), trickle_head=0.5),
        ReceiverReply(body=json.dumps({"documents": [doc("a", 1.0)]}).encode(), trickle_body=0.5),
    ],
    ids=["status-line-and-headers", "body"],
)
def test_http_trickling_endpoint_fails_at_the_step_budget(reply: ReceiverReply) -> None:
    # Given an endpoint sending one byte every 0.5 s, the production HTTP client, a 1 s budget
    endpoint = Receiver(default=reply)
    try:
        settings = Settings(retrieval_url=endpoint.url("/search"), retrieval_timeout_sec=60)
        step = RagSearchStep(settings, bedrock_agent_client_factory=refuse)

        started = time.monotonic()
        with pytest.raises(StepFailed) as failure:
            run(step, {"query": "q"}, context(time_budget_seconds=1))
        elapsed = time.monotonic() - started

        # Then the step fails with its retryable timeout at the budget, not minutes later
        assert (failure.value.code, failure.value.retryable) == ("retrieval_timeout", True)
        assert elapsed < 5, f"took {elapsed:.1f} s for a 1 s budget"
        assert endpoint.requests[0].path == "/search"
    finally:
        endpoint.close()


def test_http_without_url_is_a_permanent_configuration_failure() -> None:
    step = RagSearchStep(
        Settings(retrieval_url=""), http_client_factory=local_http, bedrock_agent_client_factory=refuse
    )

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "q"})

    assert (failure.value.code, failure.value.retryable) == ("retrieval_not_configured", False)


def test_query_rendering_to_nothing_is_permanent(retrieval_server: FakeRetrievalServer) -> None:
    step = http_step(retrieval_server)

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "{{ inputs.question }}"}, context(inputs={"question": "  "}))

    assert (failure.value.code, failure.value.retryable) == ("empty_query", False)
    assert retrieval_server.requests == []


# --- builtin backend ------------------------------------------------------------------------------


def test_builtin_backend_is_accepted_but_unavailable() -> None:
    config = RagSearchConfig.model_validate({"query": "q", "backend": "builtin"})
    step = RagSearchStep(Settings(), http_client_factory=refuse, bedrock_agent_client_factory=refuse)

    with pytest.raises(StepFailed) as failure:
        step.execute(config, context())

    assert (failure.value.code, failure.value.retryable) == ("backend_unavailable", False)
    assert "builtin" in failure.value.message


# --- Amazon Bedrock Knowledge Bases ---------------------------------------------------------------


@pytest.fixture
def knowledge_base() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "bedrock-agent-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def kb_step(client: Any, knowledge_base_id: str = "KB12345678") -> RagSearchStep:
    factory: Callable[[], Any] = lambda: client  # noqa: E731
    return RagSearchStep(
        Settings(bedrock_knowledge_base_id=knowledge_base_id),
        http_client_factory=refuse,
        bedrock_agent_client_factory=factory,
    )


def test_bedrock_kb_results_are_mapped_and_filtered(knowledge_base: tuple[Any, Stubber]) -> None:
    # Given
    client, stubber = knowledge_base
    s3 = {"type": "S3", "s3Location": {"uri": "s3://docs/handbook.pdf"}}
    stubber.add_response(
        "retrieve",
        {
            "retrievalResults": [
                {"content": {"text": "Ten days."}, "score": 0.42, "location": s3, "metadata": {"page": 2}},
                {"content": {"text": "Twenty days."}, "score": 0.81, "documentId": "doc-7"},
                {"content": {"text": "Noise."}, "score": 0.05},
            ]
        },
        expected_params={
            "knowledgeBaseId": "KB12345678",
            "retrievalQuery": {"text": "How many vacation days?"},
            "retrievalConfiguration": {
                "vectorSearchConfiguration": {
                    "numberOfResults": 3,
                    "filter": {
                        "andAll": [
                            {"equals": {"key": "collection", "value": "hr"}},
                            {"equals": {"key": "year", "value": 2026}},
                        ]
                    },
                }
            },
        },
    )
    step = kb_step(client)
    config = {
        "query": "{{ inputs.question }}",
        "top_k": 3,
        "min_score": 0.1,
        "filters": {"collection": "hr", "year": 2026},
        "backend": "bedrock_kb",
    }

    # When
    result = run(step, config)

    # Then
    assert result.output["documents"] == [
        {"id": "doc-7", "content": "Twenty days.", "score": 0.81, "metadata": {}},
        {
            "id": "s3://docs/handbook.pdf",
            "content": "Ten days.",
            "score": 0.42,
            "metadata": {"page": 2, "location": s3},
        },
    ]
    assert result.event_fields == {"backend": "bedrock_kb", "document_count": 2}


def test_bedrock_kb_single_filter_is_one_equals_clause(knowledge_base: tuple[Any, Stubber]) -> None:
    client, stubber = knowledge_base
    stubber.add_response(
        "retrieve",
        {"retrievalResults": []},
        expected_params={
            "knowledgeBaseId": "KB12345678",
            "retrievalQuery": {"text": "q"},
            "retrievalConfiguration": {
                "vectorSearchConfiguration": {
                    "numberOfResults": 5,
                    "filter": {"equals": {"key": "collection", "value": "hr"}},
                }
            },
        },
    )

    result = run(kb_step(client), {"query": "q", "filters": {"collection": "hr"}, "backend": "bedrock_kb"})

    assert result.output == {"query": "q", "documents": []}


@pytest.mark.parametrize(
    ("error_code", "code", "retryable"),
    [
        ("ThrottlingException", "retrieval_rate_limited", True),
        ("InternalServerException", "retrieval_unavailable", True),
        ("DependencyFailedException", "retrieval_unavailable", True),
        ("ResourceNotFoundException", "retrieval_invalid_request", False),
        ("ValidationException", "retrieval_invalid_request", False),
        ("AccessDeniedException", "retrieval_auth", False),
    ],
)
def test_bedrock_kb_errors_become_step_failures(
    knowledge_base: tuple[Any, Stubber], error_code: str, code: str, retryable: bool
) -> None:
    client, stubber = knowledge_base
    stubber.add_client_error("retrieve", service_error_code=error_code, service_message="nope")

    with pytest.raises(StepFailed) as failure:
        run(kb_step(client), {"query": "q", "backend": "bedrock_kb"})

    assert (failure.value.code, failure.value.retryable) == (code, retryable)


def test_bedrock_kb_without_knowledge_base_is_a_configuration_failure() -> None:
    step = RagSearchStep(Settings(), http_client_factory=refuse, bedrock_agent_client_factory=refuse)

    with pytest.raises(StepFailed) as failure:
        run(step, {"query": "q", "backend": "bedrock_kb"})

    assert (failure.value.code, failure.value.retryable) == ("retrieval_not_configured", False)
