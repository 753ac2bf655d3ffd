"""The built-in document corpus that `rag_search` (backend `builtin`) ranks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class CorpusDocument(BaseModel):
    doc_id: str
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str
