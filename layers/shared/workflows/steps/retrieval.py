"""Retrieval backends for the `rag_search` step: an HTTP endpoint and Bedrock Knowledge Bases.

Each backend returns documents in one shape; the step sorts, filters and truncates them. The
HTTP endpoint's JSON contract is documented in docs/steps.md and enforced by the models below:
a response that does not follow it is a permanent failure, not something to retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workflows.deadline import call_deadline
from workflows.domain.failures import StepFailed
from workflows.steps.llm import (
    Lazy,
    bedrock_failure,
    http_status_failure,
    read_bounded,
    transport_failure,
)


@dataclass(frozen=True)
class Document:
    id: str
    content: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_output(self) -> dict[str, Any]:
        return {"id": self.id, "content": self.content, "score": self.score, "metadata": self.metadata}


class Retriever(Protocol):
    def retrieve(
        self, query: str, *, top_k: int, filters: dict[str, Any], timeout: float | None = None
    ) -> list[Document]:
        """`timeout`: the step's time budget (the HTTP backend's request ends within it)."""
        ...


# --- HTTP retrieval endpoint ------------------------------------------------------------------


class RetrievedDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    content: str
    score: float = Field(allow_inf_nan=False)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RetrievalResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    documents: list[RetrievedDocument]


class HttpRetriever:
    """POST {url} {"query", "top_k", "filters"} -> {"documents": [{"id", "content", "score", "metadata"}]}."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float,
        http_client: Callable[[], httpx.Client],
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._timeout = timeout
        self._http = Lazy(http_client)

    def retrieve(
        self, query: str, *, top_k: int, filters: dict[str, Any], timeout: float | None = None
    ) -> list[Document]:
        if not self._url:
            raise StepFailed(
                "retrieval_not_configured",
                "no retrieval endpoint is configured (set WORKFLOWS_RETRIEVAL_URL)",
                retryable=False,
            )
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        payload = {"query": query, "top_k": top_k, "filters": filters}
        budget = min(self._timeout, timeout) if timeout else self._timeout
        what = "retrieval endpoint"
        try:
            with (
                call_deadline(budget) as deadline,
                self._http.get().stream(
                    "POST", self._url, json=payload, headers=headers, timeout=budget
                ) as response,
            ):
                body = read_bounded(response, deadline=deadline, prefix="retrieval")
                status = response.status_code
        except httpx.HTTPError as exc:
            raise transport_failure(exc, prefix="retrieval", what=what) from exc
        if not 200 <= status < 300:
            raise http_status_failure(status, body, prefix="retrieval", what=what)
        try:
            parsed = RetrievalResponse.model_validate(json.loads(body))
        except ValueError as exc:
            # Covers JSON errors and pydantic's ValidationError; neither echoes the body back.
            detail = _first_error(exc)
            raise StepFailed(
                "retrieval_bad_response",
                f"retrieval response does not follow the contract: {detail}",
                retryable=False,
            ) from exc
        return [Document(d.id, d.content, d.score, d.metadata) for d in parsed.documents]


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        return f"{where}: {error['msg']}"
    return "body is not JSON"


# --- Amazon Bedrock Knowledge Bases -----------------------------------------------------------


def knowledge_base_filter(filters: dict[str, Any]) -> dict[str, Any] | None:
    """`{"a": 1, "b": "x"}` as a Bedrock RetrievalFilter: every key must equal its value."""
    clauses = [{"equals": {"key": key, "value": value}} for key, value in filters.items()]
    if not clauses:
        return None
    if len(clauses) == 1:
        return clauses[0]
    return {"andAll": clauses}


def _location_uri(location: dict[str, Any]) -> str | None:
    for value in location.values():
        if isinstance(value, dict):
            for key in ("uri", "url"):
                if isinstance(value.get(key), str):
                    return str(value[key])
    return None


class BedrockKnowledgeBaseRetriever:
    """`retrieve` on a `bedrock-agent-runtime` client built on first use."""

    def __init__(self, knowledge_base_id: str, client: Callable[[], Any]) -> None:
        self._knowledge_base_id = knowledge_base_id
        self._client = Lazy(client)

    def retrieve(
        self, query: str, *, top_k: int, filters: dict[str, Any], timeout: float | None = None
    ) -> list[Document]:
        # botocore bounds each connect and read by WORKFLOWS_RETRIEVAL_TIMEOUT_SEC; `timeout` is
        # not applied to the SDK call.
        if not self._knowledge_base_id:
            raise StepFailed(
                "retrieval_not_configured",
                "no knowledge base is configured (set WORKFLOWS_BEDROCK_KNOWLEDGE_BASE_ID)",
                retryable=False,
            )
        vector_search: dict[str, Any] = {"numberOfResults": top_k}
        kb_filter = knowledge_base_filter(filters)
        if kb_filter is not None:
            vector_search["filter"] = kb_filter
        try:
            response = self._client.get().retrieve(
                knowledgeBaseId=self._knowledge_base_id,
                retrievalQuery={"text": query},
                retrievalConfiguration={"vectorSearchConfiguration": vector_search},
            )
        except (ClientError, BotoCoreError) as exc:
            raise bedrock_failure(exc, prefix="retrieval", what="Bedrock knowledge base") from exc
        documents = []
        for index, result in enumerate(response.get("retrievalResults", [])):
            location = result.get("location") or {}
            metadata = dict(result.get("metadata") or {})
            if location:
                metadata["location"] = location
            doc_id = (
                result.get("documentId")
                or metadata.get("x-amz-bedrock-kb-chunk-id")
                or _location_uri(location)
                or str(index)
            )
            documents.append(
                Document(
                    id=str(doc_id),
                    content=str((result.get("content") or {}).get("text") or ""),
                    score=float(result.get("score") or 0.0),
                    metadata=metadata,
                )
            )
        return documents


# --- built-in corpus (BM25) -------------------------------------------------------------------

_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class CorpusSource(Protocol):
    def all_for_search(self, tenant_id: str) -> list[Any]: ...


class CorpusRetriever:
    """BM25+ (from rank_bm25) over the tenant's documents added through the API.

    The whole tenant corpus is the collection (term statistics do not change with `filters`);
    BM25+ rather than Okapi because Okapi's IDF turns negative for terms in most documents of a
    small collection. Documents sharing no term with the query are never returned. Scores are
    raw BM25+ scores, comparable within one query only, so a `min_score` for this backend is in
    those units. `filters` match metadata values exactly.
    """

    def __init__(self, corpus: CorpusSource) -> None:
        self._corpus = corpus

    def retrieve_for(
        self, tenant_id: str, query: str, *, top_k: int, filters: dict[str, Any]
    ) -> list[Document]:
        # Imported here: numpy is only paid for by runs that use the built-in corpus.
        from rank_bm25 import BM25Plus

        documents = self._corpus.all_for_search(tenant_id)
        terms = tokenize(query)
        if not documents or not terms:
            return []
        tokens = [tokenize(doc.content) or [""] for doc in documents]
        scores = BM25Plus(tokens).get_scores(terms)
        wanted = set(terms)
        candidates = [
            (doc, float(score))
            for doc, words, score in zip(documents, tokens, scores, strict=True)
            if wanted.intersection(words) and all(doc.metadata.get(k) == v for k, v in filters.items())
        ]
        candidates.sort(key=lambda pair: pair[1], reverse=True)
        return [
            Document(id=doc.doc_id, content=doc.content, score=round(score, 6), metadata=doc.metadata)
            for doc, score in candidates[:top_k]
        ]
