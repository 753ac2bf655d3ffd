"""The tenant's built-in document corpus (rag_search, backend `builtin`)."""

from __future__ import annotations

from workflows.domain.corpus import CorpusDocument
from workflows.domain.json import JsonObject
from workflows.domain.jsonlimits import check_size
from workflows.domain.principal import Principal
from workflows.errors import PayloadTooLarge
from workflows.ports import CorpusStore
from workflows.settings import Settings

MAX_CONTENT_BYTES = 256 * 1024


class CorpusService:
    def __init__(self, corpus: CorpusStore, settings: Settings) -> None:
        self._corpus = corpus
        self._settings = settings

    def add(
        self, principal: Principal, content: str, metadata: JsonObject, doc_id: str | None
    ) -> CorpusDocument:
        """Add a document (or replace the one with the same id), each part bounded first."""
        content_bytes = len(content.encode("utf-8", "surrogatepass"))
        if content_bytes > MAX_CONTENT_BYTES:
            raise PayloadTooLarge(
                f"content: {content_bytes} bytes of UTF-8, limit {MAX_CONTENT_BYTES}",
                details=[
                    {"field": "content", "message": f"{content_bytes} bytes, limit {MAX_CONTENT_BYTES}"}
                ],
            )
        check_size(metadata, "metadata", self._settings.max_document_metadata_bytes)
        return self._corpus.add(principal.tenant_id, content, metadata, doc_id=doc_id)

    def page(
        self, principal: Principal, *, limit: int, after: str | None
    ) -> tuple[list[CorpusDocument], str | None]:
        return self._corpus.page(principal.tenant_id, limit=limit, after=after)

    def get(self, principal: Principal, doc_id: str) -> CorpusDocument:
        return self._corpus.get(principal.tenant_id, doc_id)

    def delete(self, principal: Principal, doc_id: str) -> None:
        self._corpus.delete(principal.tenant_id, doc_id)
