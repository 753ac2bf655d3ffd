"""`rag_search`: render a query, retrieve documents, keep the best `top_k` above `min_score`.

Backends: `http` (a retrieval endpoint with the JSON contract in docs/steps.md), `bedrock_kb`
(Amazon Bedrock Knowledge Bases) and `builtin` (reserved: accepted by validation so definitions
can name it, but it fails with `backend_unavailable` until it exists).

Delivery is at-least-once: retrieval only reads, so running it again is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from workflows.domain.failures import StepFailed
from workflows.settings import Settings
from workflows.steps.base import StepContext, StepResult, TemplateField
from workflows.steps.llm import default_http_client
from workflows.steps.retrieval import (
    BedrockKnowledgeBaseRetriever,
    CorpusRetriever,
    CorpusSource,
    Document,
    HttpRetriever,
    Retriever,
)
from workflows.templating import render

Backend = Literal["http", "bedrock_kb", "builtin"]


class RagSearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=16384,
        description="Jinja2 template of the query (text); rendering to blank fails with `empty_query`",
    )
    top_k: int = Field(
        default=5, ge=1, le=50, description="Most documents returned (also sent to the backend)"
    )
    min_score: float | None = Field(
        default=None, allow_inf_nan=False, description="Keep only documents with `score >= min_score`"
    )
    filters: dict[str, Any] | None = Field(
        default=None, description="Literal values passed to the backend (what they mean is the backend's)"
    )
    backend: Backend = Field(
        default="http",
        description="Where to search: `http` (a retrieval endpoint), `bedrock_kb` (a Bedrock knowledge"
        " base) or `builtin` (the tenant's corpus)",
    )


class RagSearchStep:
    name = "rag_search"
    description = "Retrieve the documents most relevant to a templated query."
    config_model = RagSearchConfig
    example = {
        "query": "{{ inputs.question }}",
        "top_k": 5,
        "min_score": 0.5,
        "filters": {"collection": "handbook"},
        "backend": "http",
    }
    min_engine_version = "1.0.0"
    delivery: Literal["at_least_once"] = "at_least_once"
    # Calls out over the network, so it always gets its own dispatch message.
    inline = False
    route_fields: tuple[str, ...] = ()  # follows on_success
    rejectable = False

    def __init__(
        self,
        settings: Settings,
        *,
        bedrock_agent_client_factory: Callable[[], Any],
        http_client_factory: Callable[[], httpx.Client] | None = None,
        corpus: CorpusSource | None = None,
    ) -> None:
        """Nothing is created here: the HTTP client and the `bedrock-agent-runtime` client (from
        the composition root's factory) are built by the first search that needs them."""
        api_key = settings.retrieval_api_key
        self._retrievers: dict[str, Retriever] = {
            "http": HttpRetriever(
                settings.retrieval_url,
                api_key=api_key.get_secret_value() if api_key is not None else None,
                timeout=settings.retrieval_timeout_sec,
                http_client=http_client_factory or default_http_client,
            ),
            "bedrock_kb": BedrockKnowledgeBaseRetriever(
                settings.bedrock_knowledge_base_id,
                bedrock_agent_client_factory,
            ),
        }
        self._corpus = CorpusRetriever(corpus) if corpus is not None else None

    def templates(self, config: BaseModel) -> list[TemplateField]:
        assert isinstance(config, RagSearchConfig)
        return [TemplateField("query", config.query)]

    def execute(self, config: BaseModel, context: StepContext) -> StepResult:
        assert isinstance(config, RagSearchConfig)
        query = render(config.query, context.template_context())
        if not query.strip():
            raise StepFailed("empty_query", "the query rendered to an empty string", retryable=False)
        if config.backend == "builtin" and self._corpus is not None:
            documents = self._corpus.retrieve_for(
                context.tenant_id, query, top_k=config.top_k, filters=config.filters or {}
            )
            return self._result(config, query, documents)
        retriever = self._retrievers.get(config.backend)
        if retriever is None:
            raise StepFailed(
                "backend_unavailable",
                f"retrieval backend '{config.backend}' is not available in this deployment; "
                "use 'http' or 'bedrock_kb'",
                retryable=False,
            )
        documents = retriever.retrieve(
            query, top_k=config.top_k, filters=config.filters or {}, timeout=context.time_budget_seconds
        )
        return self._result(config, query, documents)

    @staticmethod
    def _result(config: RagSearchConfig, query: str, documents: list[Document]) -> StepResult:
        if config.min_score is not None:
            documents = [doc for doc in documents if doc.score >= config.min_score]
        documents = sorted(documents, key=lambda doc: doc.score, reverse=True)[: config.top_k]
        output = {"query": query, "documents": [doc.as_output() for doc in documents]}
        return StepResult(
            output=output, event_fields={"backend": config.backend, "document_count": len(documents)}
        )
