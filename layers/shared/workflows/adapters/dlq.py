"""The webhook dead-letter table: failed deliveries waiting for the retry worker.

Item layout (template.yaml, WebhookDlqTable):
- `id` is the hash key; the tenant is checked on read, so another tenant's id finds nothing.
- GSI `due`: hash `due_shard`, range `next_attempt_at` (epoch seconds). Only pending rows carry
  `due_shard`, so the index is sparse and holds exactly the work left. Its value is
  `pending#<tenant_id>`: one partition per tenant, oldest first, so the worker reads each
  tenant's due rows with its own key-range Query and one tenant's backlog never hides another's.
- The registry, item `id = tenants#pending`: one attribute per tenant that may have pending rows,
  named like its partition (`pending#<tenant_id>`), valued with the last time a row was made
  pending there (epoch seconds). It is written before the row, so a pending row is never missing
  from it; the worker reads it with one GetItem and drops a tenant only when its partition is
  empty and the entry is older than FORGET_MARGIN_SEC, on a condition (see forget_if_empty).
- Rows written before per-tenant partitions carry `due_shard = pending`; each read of the
  registry first moves a few of them into their tenant's partition (registering the tenant), so
  they are served, and counted, with their tenant's rows.
- GSI `by-tenant`: hash `tenant_id`, range `created_at`, for operators listing a tenant's rows.
- `expires_at` is the TTL: rows disappear `retention_days` after they were added (never the registry).

Claiming: a worker takes a row with a conditional lease (status pending, no live lease, the
attempt count it read). Every later write is conditional on still holding that lease, so two
workers never both record an outcome, and a worker that died mid-delivery leaves a lease that
simply expires; the row is then due again and another worker picks it up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import dumps, from_item, loads, to_item
from workflows.adapters.paging import check_position, query_page
from workflows.clock import Clock, iso, system_clock
from workflows.domain.dlq import DlqRow, truncate_error
from workflows.domain.paging import Position
from workflows.errors import Conflict, DomainError, NotFound
from workflows.observability import logger

DUE_INDEX = "due"
# The one partition every pending row used before partitions were per tenant.
LEGACY_DUE_SHARD = "pending"
_SHARD_PREFIX = "pending#"
REGISTRY_ID = "tenants#pending"
# A registry entry is dropped only when it has not been touched for this long, so that a row
# being added while the worker finds the partition empty keeps its tenant listed. It covers the
# due index's propagation delay, clock skew between functions, and the gap between an insert's
# registry write and its row write (bounded by the longest timeout of a function adding rows,
# the dispatcher's 120 s). Too long only costs an empty Query per pass for a few minutes.
FORGET_MARGIN_SEC = 300.0
# Rows stored before per-tenant partitions moved per registry read (one write each).
LEGACY_MOVES_PER_READ = 25
TENANT_INDEX = "by-tenant"
_TENANT_KEY_FIELDS = ("id", "tenant_id", "created_at")


def _decimal(value: float) -> Decimal:
    # Millisecond precision: the stored lease must compare equal to the one we later send back.
    return Decimal(f"{value:.3f}")


def _number(value: float) -> dict[str, str]:
    return {"N": str(_decimal(value))}


def due_shard(tenant_id: str) -> str:
    """The `due` partition of a tenant's pending rows (tenant ids never contain '#')."""
    return f"{_SHARD_PREFIX}{tenant_id}"


class WebhookDlqRepository:
    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        clock: Clock = system_clock,
        retention_days: int = 90,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._retention = timedelta(days=retention_days)

    # ---- item conversion -------------------------------------------------------------

    def _item(self, row: DlqRow) -> dict[str, Any]:
        values = row.model_dump()
        values.update(
            headers=dumps(row.headers),
            next_attempt_at=_decimal(row.next_attempt_at),
            lease_expires_at=None if row.lease_expires_at is None else _decimal(row.lease_expires_at),
            due_shard=due_shard(row.tenant_id) if row.status == "pending" else None,
            expires_at=int((self._clock() + self._retention).timestamp()),
        )
        return to_item(values)

    @staticmethod
    def _row_from(item: Mapping[str, Any]) -> DlqRow:
        values = from_item(item)
        values["headers"] = loads(values.get("headers")) or {}
        return DlqRow.model_validate(values)

    @staticmethod
    def _key(row_id: str) -> dict[str, Any]:
        return {"id": {"S": row_id}}

    # ---- reads ---------------------------------------------------------------------

    def get(self, tenant_id: str, row_id: str) -> DlqRow:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key=self._key(row_id), ConsistentRead=True
            )
        item = response.get("Item")
        if not item or item.get("tenant_id", {}).get("S") != tenant_id:
            raise NotFound(f"webhook dlq row '{row_id}' not found")
        return self._row_from(item)

    def pending_tenants(self) -> list[str]:
        """Tenants that may have pending rows, sorted: one consistent GetItem of the registry.

        A superset: a tenant stays listed until forget_if_empty drops it. Rows stored before
        per-tenant partitions are first moved into their tenant's (a few per call).
        """
        try:
            self._adopt_legacy_rows()
        except DomainError as exc:
            # Those rows wait for the next read; the tenants listed already are served now.
            logger.warning("dlq earlier rows not moved", extra={"error_code": exc.code, "error": exc.message})
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key=self._key(REGISTRY_ID), ConsistentRead=True
            )
        item = response.get("Item") or {}
        return sorted(name.removeprefix(_SHARD_PREFIX) for name in item if name.startswith(_SHARD_PREFIX))

    def due(self, tenant_id: str, limit: int) -> list[DlqRow]:
        """The tenant's pending rows whose next attempt is due, oldest first (may include leased
        rows): one key-range Query on the tenant's partition of `due`."""
        now = self._clock().timestamp()
        with aws_errors():
            response = self._client.query(
                TableName=self._table,
                IndexName=DUE_INDEX,
                KeyConditionExpression="due_shard = :shard AND next_attempt_at <= :now",
                ExpressionAttributeValues={":shard": {"S": due_shard(tenant_id)}, ":now": _number(now)},
                ScanIndexForward=True,
                Limit=limit,
            )
        rows: list[DlqRow] = []
        for item in response.get("Items", []):
            try:
                rows.append(self._row_from(item))
            except ValidationError as exc:
                # One malformed row must not block the others; it stays visible to operators.
                logger.error(
                    "dlq row unreadable",
                    extra={"dlq_id": item.get("id", {}).get("S"), "errors": exc.error_count()},
                )
        return rows

    def forget_if_empty(self, tenant_id: str) -> bool:
        """Drop the tenant from the registry if its partition holds no pending row (due or not).

        The removal is conditional on the entry being older than the check minus
        FORGET_MARGIN_SEC: a row added meanwhile (its registry write comes first) keeps it.
        """
        shard = due_shard(tenant_id)
        checked_at = self._clock().timestamp()
        with aws_errors():
            probe = self._client.query(
                TableName=self._table,
                IndexName=DUE_INDEX,
                KeyConditionExpression="due_shard = :shard",
                ExpressionAttributeValues={":shard": {"S": shard}},
                Select="COUNT",
                Limit=1,
            )
        if probe.get("Count", 0):
            return False
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(REGISTRY_ID),
                UpdateExpression="REMOVE #tenant",
                ConditionExpression="#tenant < :cutoff",
                ExpressionAttributeNames={"#tenant": shard},
                ExpressionAttributeValues={":cutoff": _number(checked_at - FORGET_MARGIN_SEC)},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False  # touched since (or already gone)
            raise translate(exc) from exc
        return True

    def _register(self, tenant_ids: Sequence[str]) -> None:
        """Touch the tenants' registry entries; always before their rows become pending."""
        names = {f"#t{i}": due_shard(tenant_id) for i, tenant_id in enumerate(tenant_ids)}
        with aws_errors():
            self._client.update_item(
                TableName=self._table,
                Key=self._key(REGISTRY_ID),
                UpdateExpression="SET " + ", ".join(f"{name} = :now" for name in names),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":now": _number(self._clock().timestamp())},
            )

    def _adopt_legacy_rows(self) -> None:
        """Move rows of the one shared partition of earlier versions into their tenants'.

        Only `due_shard` changes, on the condition that it is still the shared one: a row
        delivered, exhausted or replayed meanwhile is left as it is, and a lease is untouched.
        The shared partition is read on every call, not only until it is first found empty:
        a function still running the earlier version during a deployment may add to it.
        """
        with aws_errors():
            response = self._client.query(
                TableName=self._table,
                IndexName=DUE_INDEX,
                KeyConditionExpression="due_shard = :legacy",
                ExpressionAttributeValues={":legacy": {"S": LEGACY_DUE_SHARD}},
                ProjectionExpression="#id, tenant_id",
                ExpressionAttributeNames={"#id": "id"},
                Limit=LEGACY_MOVES_PER_READ,
            )
        items = [item for item in response.get("Items", []) if "tenant_id" in item]
        if not items:
            return
        self._register(sorted({item["tenant_id"]["S"] for item in items}))
        for item in items:
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key={"id": item["id"]},
                    UpdateExpression="SET due_shard = :shard",
                    ConditionExpression="due_shard = :legacy",
                    ExpressionAttributeValues={
                        ":shard": {"S": due_shard(item["tenant_id"]["S"])},
                        ":legacy": {"S": LEGACY_DUE_SHARD},
                    },
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise translate(exc) from exc

    def list_for_tenant(
        self,
        tenant_id: str,
        *,
        statuses: Sequence[str] = (),
        run_id: str | None = None,
        limit: int = 50,
        start: Position | None = None,
    ) -> tuple[list[DlqRow], Position | None]:
        """A tenant's rows, newest first: a key-range Query on `by-tenant`.

        status and run_id are FilterExpressions, so a page may be short (bounded requests, see
        storage.paging); the returned position resumes after the last row read.
        """
        check_position(start, {"tenant_id": tenant_id}, _TENANT_KEY_FIELDS)
        values: dict[str, Any] = {":tenant": {"S": tenant_id}}
        filters: list[str] = []
        names: dict[str, str] = {}
        if statuses:
            placeholders = {f":s{i}": {"S": status} for i, status in enumerate(statuses)}
            filters.append(f"#status IN ({', '.join(placeholders)})")
            names["#status"] = "status"
            values.update(placeholders)
        if run_id is not None:
            filters.append("run_id = :run")
            values[":run"] = {"S": run_id}
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": TENANT_INDEX,
            "KeyConditionExpression": "tenant_id = :tenant",
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        if names:
            params["ExpressionAttributeNames"] = names
        page = query_page(self._client, params, limit=limit, key_fields=_TENANT_KEY_FIELDS, start=start)
        rows: list[DlqRow] = []
        for item in page.items:
            try:
                rows.append(self._row_from(item))
            except ValidationError as exc:
                logger.error(
                    "dlq row unreadable",
                    extra={"dlq_id": item.get("id", {}).get("S"), "errors": exc.error_count()},
                )
        return rows, page.next_position

    # ---- writes --------------------------------------------------------------------

    def add(self, row: DlqRow) -> None:
        if row.status == "pending":
            self._register([row.tenant_id])
        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._item(row),
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise Conflict(f"webhook dlq row '{row.id}' already exists") from exc
            raise translate(exc) from exc

    def claim(self, row: DlqRow, lease_seconds: float) -> DlqRow | None:
        """Lease a pending row as read; None when another worker holds it or it moved on."""
        now = self._clock()
        lease = round(now.timestamp() + lease_seconds, 3)
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(row.id),
                UpdateExpression="SET lease_expires_at = :lease, updated_at = :updated",
                ConditionExpression=(
                    "#status = :pending"
                    " AND (attribute_not_exists(lease_expires_at) OR lease_expires_at < :now)"
                    " AND attempts = :attempts"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":lease": _number(lease),
                    ":updated": {"S": iso(now)},
                    ":pending": {"S": "pending"},
                    ":now": _number(now.timestamp()),
                    ":attempts": {"N": str(row.attempts)},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                holder = exc.response.get("Item") or {}
                logger.debug(
                    "dlq row not claimable",
                    extra={"dlq_id": row.id, "lease_expires_at": holder.get("lease_expires_at", {}).get("N")},
                )
                return None
            raise translate(exc) from exc
        return self._row_from(response["Attributes"])

    def claim_for_replay(self, tenant_id: str, row_id: str, lease_seconds: float) -> DlqRow:
        """Lease a row of any status for an operator's replay, making it pending again.

        NotFound for a missing row or another tenant's; Conflict while a worker (or another
        replay) holds a live lease. The outcome is then recorded like a worker's, under the lease.
        """
        self._register([tenant_id])
        now = self._clock()
        lease = round(now.timestamp() + lease_seconds, 3)
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(row_id),
                UpdateExpression=(
                    "SET lease_expires_at = :lease, #status = :pending, due_shard = :shard,"
                    " updated_at = :updated"
                ),
                ConditionExpression=(
                    "tenant_id = :tenant"
                    " AND (attribute_not_exists(lease_expires_at) OR lease_expires_at < :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":lease": _number(lease),
                    ":pending": {"S": "pending"},
                    ":shard": {"S": due_shard(tenant_id)},
                    ":updated": {"S": iso(now)},
                    ":tenant": {"S": tenant_id},
                    ":now": _number(now.timestamp()),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old = exc.response.get("Item") or {}
                if old.get("tenant_id", {}).get("S") != tenant_id:
                    raise NotFound(f"webhook dlq row '{row_id}' not found") from exc
                raise Conflict(
                    f"webhook dlq row '{row_id}' is being delivered right now; try again shortly"
                ) from exc
            raise translate(exc) from exc
        return self._row_from(response["Attributes"])

    def mark_delivered(self, row: DlqRow) -> DlqRow:
        return self._update_leased(
            row,
            "SET #status = :delivered, attempts = attempts + :one, updated_at = :updated"
            " REMOVE due_shard, lease_expires_at",
            {":delivered": {"S": "delivered"}},
        )

    def reschedule(self, row: DlqRow, next_attempt_at: float, error: str) -> DlqRow:
        return self._update_leased(
            row,
            "SET attempts = attempts + :one, next_attempt_at = :next, last_error = :error,"
            " updated_at = :updated REMOVE lease_expires_at",
            {":next": _number(next_attempt_at), ":error": {"S": truncate_error(error) or ""}},
        )

    def mark_exhausted(self, row: DlqRow, error: str) -> DlqRow:
        return self._update_leased(
            row,
            "SET #status = :exhausted, attempts = attempts + :one, last_error = :error,"
            " updated_at = :updated REMOVE due_shard, lease_expires_at",
            {":exhausted": {"S": "exhausted"}, ":error": {"S": truncate_error(error) or ""}},
        )

    def _update_leased(self, row: DlqRow, expression: str, values: Mapping[str, Any]) -> DlqRow:
        """Apply an outcome while holding the lease from `claim`; StaleWrite if it was lost."""
        if row.lease_expires_at is None:
            raise ValueError("the row must come from claim()")
        with aws_errors():
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(row.id),
                UpdateExpression=expression,
                ConditionExpression="#status = :pending AND lease_expires_at = :lease",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    **values,
                    ":one": {"N": "1"},
                    ":updated": {"S": iso(self._clock())},
                    ":pending": {"S": "pending"},
                    ":lease": _number(row.lease_expires_at),
                },
                ReturnValues="ALL_NEW",
            )
        return self._row_from(response["Attributes"])


__all__ = [
    "DUE_INDEX",
    "FORGET_MARGIN_SEC",
    "LEGACY_DUE_SHARD",
    "REGISTRY_ID",
    "TENANT_INDEX",
    "WebhookDlqRepository",
    "due_shard",
]
