"""Definition snapshots: the definition a run pins, stored once per content and tenant
(docs/storage.md, "Definition snapshots, stored once").

- runs table    pk = "<tenant_id>#def#<sha256 of its canonical JSON>", sk = "DEFINITION",
                `definition` (the canonical JSON), named by the runs' `definition_hash`

Its content never changes, so each process remembers the snapshots it has read or written and
reads one at most once. A snapshot must outlive the runs that name it: whoever writes or reads
it makes sure it expires no sooner than the retention plus _SNAPSHOT_MARGIN from now, and when
it must extend it, extends it to the retention plus _SNAPSHOT_EXTRA (so that write is rare).
The run repository (runs.py) uses it when it creates a run and reads a run's definition.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from workflows.adapters.aws import aws_errors
from workflows.adapters.dynamo import to_item
from workflows.adapters.run_items import DEFINITION_SK, snapshot_pk
from workflows.clock import Clock, system_clock
from workflows.domain.definition import WorkflowDefinition
from workflows.errors import NotFound

_SNAPSHOT_MARGIN = timedelta(days=7)
_SNAPSHOT_EXTRA = timedelta(days=30)
# Snapshots this process has read or written (immutable content), most recent last.
_SNAPSHOT_MEMORY = 256


class DefinitionSnapshots:
    def __init__(
        self, client: Any, runs_table: str, *, clock: Clock = system_clock, retention_days: int = 90
    ) -> None:
        self._client = client
        self._runs = runs_table
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        # snapshot pk -> (the definition, its expires_at as last seen)
        self._known: OrderedDict[str, tuple[WorkflowDefinition, int]] = OrderedDict()

    def item(self, tenant_id: str, definition: WorkflowDefinition) -> tuple[str, dict[str, Any]]:
        """The snapshot's digest (what a run's `definition_hash` names) and its item."""
        body = definition.canonical_json()
        digest = hashlib.sha256(body.encode()).hexdigest()
        expires = int((self._clock() + self._retention + _SNAPSHOT_EXTRA).timestamp())
        item = to_item(
            {
                "pk": snapshot_pk(tenant_id, digest),
                "sk": DEFINITION_SK,
                "definition": body,
                "expires_at": expires,
            }
        )
        return digest, item

    def keep(
        self, tenant_id: str, digest: str, definition: WorkflowDefinition, item: dict[str, Any] | None = None
    ) -> None:
        """Make sure the snapshot is stored and expires no sooner than the retention plus a
        margin from now. `item` (when creating a run) is written if the snapshot is missing."""
        pk = snapshot_pk(tenant_id, digest)
        wanted = int((self._clock() + self._retention + _SNAPSHOT_MARGIN).timestamp())
        known = self._known.get(pk)
        if known is not None and known[1] >= wanted:
            self._known.move_to_end(pk)
            return
        expires: int | None = known[1] if known is not None else None
        if known is None:
            with aws_errors():
                found = self._client.get_item(
                    TableName=self._runs,
                    Key={"pk": {"S": pk}, "sk": {"S": DEFINITION_SK}},
                    ProjectionExpression="expires_at",
                    ConsistentRead=True,
                ).get("Item")
            expires = int(found["expires_at"]["N"]) if found else None
        extended = int((self._clock() + self._retention + _SNAPSHOT_EXTRA).timestamp())
        with aws_errors():
            if expires is None:
                if item is None:
                    raise NotFound(f"definition snapshot {digest} not found")
                # Unconditional: the content is the key, so a concurrent writer writes the same.
                self._client.put_item(TableName=self._runs, Item=item)
            elif expires < wanted:
                self._client.update_item(
                    TableName=self._runs,
                    Key={"pk": {"S": pk}, "sk": {"S": DEFINITION_SK}},
                    UpdateExpression="SET expires_at = :e",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":e": {"N": str(extended)}},
                )
            else:
                extended = expires
        self._known[pk] = (definition, extended)
        while len(self._known) > _SNAPSHOT_MEMORY:
            self._known.popitem(last=False)

    def get(self, tenant_id: str, digest: str) -> WorkflowDefinition:
        """A shared snapshot: from this process's memory (its content never changes), else one
        strongly consistent GetItem; kept from expiring while runs still read it."""
        pk = snapshot_pk(tenant_id, digest)
        known = self._known.get(pk)
        if known is None:
            with aws_errors():
                found = self._client.get_item(
                    TableName=self._runs,
                    Key={"pk": {"S": pk}, "sk": {"S": DEFINITION_SK}},
                    ConsistentRead=True,
                ).get("Item")
            if found is None:
                raise NotFound(f"definition snapshot {digest} not found")
            definition = WorkflowDefinition.model_validate_json(found["definition"]["S"])
            self._known[pk] = (definition, int(found["expires_at"]["N"]))
        self.keep(tenant_id, digest, self._known[pk][0])
        # A copy: callers get a definition of their own, the memory keeps the stored one.
        return self._known[pk][0].model_copy(deep=True)


__all__ = ["DefinitionSnapshots"]
