"""Per-user API keys (multi-user mode), stored only as hashes.

Item (ApiKeysTable, hash key `pk`, index `by-tenant` on `tenant_id` + `created_at`):
    pk = sha256 hex of the key (also the key's public id, `key_id`), tenant_id, user_id,
    roles (list), name, created_at, created_by, expires_at (epoch seconds, also the TTL
    attribute; absent = never), revoked_at, revoked_by.

The key itself is never stored: a lookup hashes the presented key and reads one item. A
SHA-256 of 256 random bits cannot be reversed, so the hash can serve as the key's id in the
admin API and in revocations. Reads are strongly consistent and nothing is cached, so a
revocation or an expiry applies to the very next request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import from_item, to_item
from workflows.adapters.paging import check_position, query_page
from workflows.clock import Clock, iso, system_clock
from workflows.domain.api_keys import ApiKeyRecord
from workflows.domain.ids import check_caller_user_id, check_tenant_id
from workflows.domain.paging import Position
from workflows.errors import NotFound

KEY_PREFIX = "wfk_"
LIST_KEY = ("pk", "tenant_id", "created_at")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeyRepository:
    def __init__(self, client: Any, table: str, *, clock: Clock = system_clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def create(
        self,
        tenant_id: str,
        user_id: str,
        roles: Sequence[str],
        *,
        name: str | None = None,
        created_by: str | None = None,
        expires_at: int | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        """A new key and its record; the key is returned here and never again."""
        check_tenant_id(tenant_id)
        check_caller_user_id(user_id)
        key = new_key()
        record = ApiKeyRecord(
            key_id=hash_key(key),
            tenant_id=tenant_id,
            user_id=user_id,
            roles=tuple(roles),
            created_at=iso(self._clock()),
            name=name,
            created_by=created_by,
            expires_at=expires_at,
        )
        item = to_item(
            {
                "pk": record.key_id,
                "tenant_id": tenant_id,
                "user_id": user_id,
                "name": name,
                "created_at": record.created_at,
                "created_by": created_by,
                "expires_at": expires_at,
            }
        )
        item["roles"] = {"L": [{"S": role} for role in record.roles]}
        with aws_errors():
            self._client.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        return key, record

    def lookup(self, key: str) -> ApiKeyRecord | None:
        """The record of a presented key, or None for an unknown key (one GetItem)."""
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key={"pk": {"S": hash_key(key)}}, ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else self._record_from(item)

    def get(self, tenant_id: str, key_id: str) -> ApiKeyRecord:
        """One key of the tenant; another tenant's key is NotFound like a missing one."""
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key={"pk": {"S": key_id}}, ConsistentRead=True
            )
        item = response.get("Item")
        record = None if item is None else self._record_from(item)
        if record is None or record.tenant_id != tenant_id:
            raise NotFound(f"API key '{key_id}' not found")
        return record

    def revoke(self, tenant_id: str, key_id: str, revoked_by: str) -> ApiKeyRecord:
        """Mark the key revoked (a repeat keeps the first revocation and answers the record)."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": key_id}},
                UpdateExpression="SET revoked_at = :now, revoked_by = :by",
                ConditionExpression="attribute_exists(pk) AND tenant_id = :tenant "
                "AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={
                    ":now": {"S": iso(self._clock())},
                    ":by": {"S": revoked_by},
                    ":tenant": {"S": tenant_id},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return self.get(tenant_id, key_id)  # NotFound, or already revoked
            raise translate(exc) from exc
        return self._record_from(response["Attributes"])

    def list_for_tenant(
        self, tenant_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[ApiKeyRecord], Position | None]:
        """The tenant's keys, newest first (by-tenant index, one partition)."""
        check_position(start, {"tenant_id": tenant_id}, LIST_KEY)
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by-tenant",
            "KeyConditionExpression": "tenant_id = :tenant",
            "ExpressionAttributeValues": {":tenant": {"S": tenant_id}},
            "ScanIndexForward": False,
        }
        page = query_page(self._client, params, limit=limit, key_fields=LIST_KEY, start=start)
        return [self._record_from(item) for item in page.items], page.next_position

    @staticmethod
    def _record_from(item: Mapping[str, Any]) -> ApiKeyRecord:
        values = from_item(item)
        expires = values.get("expires_at")
        return ApiKeyRecord(
            key_id=str(values["pk"]),
            tenant_id=str(values["tenant_id"]),
            user_id=str(values["user_id"]),
            roles=tuple(str(role) for role in values.get("roles") or ()),
            created_at=str(values["created_at"]),
            name=values.get("name"),
            created_by=values.get("created_by"),
            expires_at=int(expires) if expires is not None else None,
            revoked_at=values.get("revoked_at"),
            revoked_by=values.get("revoked_by"),
        )
