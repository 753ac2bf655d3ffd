"""The built-in document corpus that `rag_search` with `backend: builtin` searches (BM25)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from workflows.adapters.corpus import CorpusDocument
from workflows.api.auth import require
from workflows.api.deps import ContainerDep
from workflows.api.guard import GuardedRoute
from workflows.api.ids import DocId
from workflows.api.schemas import error_responses
from workflows.domain.ids import DOCUMENT_ID_PATTERN
from workflows.domain.jsonlimits import check_size
from workflows.domain.principal import RUNS_CONTROL, RUNS_READ, Principal
from workflows.errors import PayloadTooLarge

router = APIRouter(route_class=GuardedRoute)
Reader = Annotated[Principal, Depends(require(RUNS_READ))]
Writer = Annotated[Principal, Depends(require(RUNS_CONTROL))]
MAX_CONTENT_BYTES = 256 * 1024


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
def add_document(body: DocumentIn, principal: Writer, c: ContainerDep) -> CorpusDocument:
    """Add a document (or replace the one with the same id)."""
    # Stored as one item: each part is bounded before the write, naming the field.
    content_bytes = len(body.content.encode("utf-8", "surrogatepass"))
    if content_bytes > MAX_CONTENT_BYTES:
        raise PayloadTooLarge(
            f"content: {content_bytes} bytes of UTF-8, limit {MAX_CONTENT_BYTES}",
            details=[{"field": "content", "message": f"{content_bytes} bytes, limit {MAX_CONTENT_BYTES}"}],
        )
    check_size(body.metadata, "metadata", c.settings.max_document_metadata_bytes)
    return c.corpus.add(principal.tenant_id, body.content, body.metadata, doc_id=body.id)


@router.get("/corpus/documents", response_model=DocumentPage, responses=error_responses())
def list_documents(
    principal: Reader,
    c: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[
        str | None, Query(pattern=DOCUMENT_ID_PATTERN, description="continue after this id")
    ] = None,
) -> DocumentPage:
    documents, next_after = c.corpus.page(principal.tenant_id, limit=limit, after=after)
    return DocumentPage(documents=documents, next_after=next_after)


@router.get("/corpus/documents/{doc_id}", response_model=CorpusDocument, responses=error_responses(404))
def get_document(doc_id: DocId, principal: Reader, c: ContainerDep) -> CorpusDocument:
    return c.corpus.get(principal.tenant_id, doc_id)


@router.delete("/corpus/documents/{doc_id}", status_code=204, responses=error_responses(404))
def delete_document(doc_id: DocId, principal: Writer, c: ContainerDep) -> Response:
    c.corpus.delete(principal.tenant_id, doc_id)
    return Response(status_code=204)
