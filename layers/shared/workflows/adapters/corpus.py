"""The built-in per-tenant document corpus that `rag_search` (backend `builtin`) ranks with BM25.

Keys: CorpusTable pk = "<tenant_id>", sk = "<doc_id>". A search reads the tenant's documents
with key-range Queries (bounded by MAX_SEARCH_DOCUMENTS): the corpus is meant for small,
out-of-the-box collections; larger ones belong in a retrieval service (backend `http`) or a
Bedrock knowledge base.
"""

from __future__ import annotations

import uuid
from typing import Any

from workflows.adapters.aws import aws_errors
from workflows.adapters.dynamo import dumps, from_item, loads, to_item
from workflows.clock import Clock, iso, system_clock
from workflows.domain.corpus import CorpusDocument
from workflows.errors import NotFound

MAX_SEARCH_DOCUMENTS = 5000


class CorpusRepository:
    def __init__(self, client: Any, table: str, *, clock: Clock = system_clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def add(
        self, tenant_id: str, content: str, metadata: dict[str, Any], doc_id: str | None = None
    ) -> CorpusDocument:
        """Create or replace a document (a PUT with the same id replaces it)."""
        document = CorpusDocument(
            doc_id=doc_id or str(uuid.uuid4()),
            content=content,
            metadata=metadata,
            created_at=iso(self._clock()),
        )
        item = {
            "pk": tenant_id,
            "sk": document.doc_id,
            "content": document.content,
            "metadata": dumps(document.metadata),
            "created_at": document.created_at,
        }
        with aws_errors():
            self._client.put_item(TableName=self._table, Item=to_item(item))
        return document

    def get(self, tenant_id: str, doc_id: str) -> CorpusDocument:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key={"pk": {"S": tenant_id}, "sk": {"S": doc_id}}
            )
        if "Item" not in response:
            raise NotFound(f"document '{doc_id}' not found")
        return self._document(response["Item"])

    def delete(self, tenant_id: str, doc_id: str) -> None:
        with aws_errors():
            response = self._client.delete_item(
                TableName=self._table,
                Key={"pk": {"S": tenant_id}, "sk": {"S": doc_id}},
                ReturnValues="ALL_OLD",
            )
        if "Attributes" not in response:
            raise NotFound(f"document '{doc_id}' not found")

    def page(
        self, tenant_id: str, *, limit: int, after: str | None = None
    ) -> tuple[list[CorpusDocument], str | None]:
        """Documents in id order; returns the id to continue after, if any."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": tenant_id}},
            "Limit": limit,
        }
        if after is not None:
            params["ExclusiveStartKey"] = {"pk": {"S": tenant_id}, "sk": {"S": after}}
        with aws_errors():
            response = self._client.query(**params)
        documents = [self._document(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return documents, (last["sk"]["S"] if last else None)

    def all_for_search(self, tenant_id: str) -> list[CorpusDocument]:
        documents: list[CorpusDocument] = []
        after: str | None = None
        while len(documents) < MAX_SEARCH_DOCUMENTS:
            page, after = self.page(
                tenant_id, limit=min(1000, MAX_SEARCH_DOCUMENTS - len(documents)), after=after
            )
            documents.extend(page)
            if after is None:
                break
        return documents

    @staticmethod
    def _document(item: dict[str, Any]) -> CorpusDocument:
        values = from_item(item)
        return CorpusDocument(
            doc_id=values["sk"],
            content=values["content"],
            metadata=loads(values.get("metadata")) or {},
            created_at=values["created_at"],
        )
