"""The built-in document corpus that `rag_search` with `backend: builtin` searches (BM25)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.api.auth import require
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import DocId
from workflows.api.schemas import error_responses
from workflows.domain.corpus import CorpusDocument
from workflows.domain.ids import DOCUMENT_ID_PATTERN
from workflows.domain.principal import RUNS_CONTROL, RUNS_READ, Principal

router = APIRouter(route_class=GuardedRoute)
Reader = Annotated[Principal, Depends(require(RUNS_READ))]
Writer = Annotated[Principal, Depends(require(RUNS_CONTROL))]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None, pattern=DOCUMENT_ID_PATTERN, description="optional; a new id is generated"
    )
    content: str = Field(min_length=1, max_length=100_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentPage(BaseModel):
    documents: list[CorpusDocument]
    next_after: str | None


@router.post(
    "/corpus/documents",
    status_code=201,
    response_model=CorpusDocument,
    responses=error_responses(400, 413, 415),
)
def add_document(body: DocumentIn, principal: Writer, c: Services) -> CorpusDocument:
    """Add a document (or replace the one with the same id)."""
    return c.corpus_service.add(principal, body.content, body.metadata, body.id)


@router.get("/corpus/documents", response_model=DocumentPage, responses=error_responses())
def list_documents(
    principal: Reader,
    c: Services,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[
        str | None, Query(pattern=DOCUMENT_ID_PATTERN, description="continue after this id")
    ] = None,
) -> DocumentPage:
    documents, next_after = c.corpus_service.page(principal, limit=limit, after=after)
    return DocumentPage(documents=documents, next_after=next_after)


@router.get("/corpus/documents/{doc_id}", response_model=CorpusDocument, responses=error_responses(404))
def get_document(doc_id: DocId, principal: Reader, c: Services) -> CorpusDocument:
    return c.corpus_service.get(principal, doc_id)


@router.delete("/corpus/documents/{doc_id}", status_code=204, responses=error_responses(404))
def delete_document(doc_id: DocId, principal: Writer, c: Services) -> Response:
    c.corpus_service.delete(principal, doc_id)
    return Response(status_code=204)
