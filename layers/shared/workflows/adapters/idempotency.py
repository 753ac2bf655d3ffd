"""Idempotency records: one per caller and Idempotency-Key, claimed before the work starts.

Item (IdempotencyTable, hash key `id`, TTL attribute `expiration`):
    id = "<tenant_id>#<user_id>#<sha256 of the key>", tenant_id, user_id,
    status = in_progress | completed, body_hash, run_id (named by the claim, before the run
    exists), expiration (epoch seconds: the record's lifetime).

The claim is a conditional PutItem: it succeeds when there is no record or when the record has
expired (TTL deletes lazily). Of concurrent requests with one key, exactly one claim succeeds;
the others get the record, and with it the run id the key stands for. No claim is ever taken
over: whoever finds one creates or finds its run (the run item's own `attribute_not_exists`
makes that one run), so a claim whose owner died costs a retry nothing.

Records written before claims named their run carry `lease_expires_at` (epoch milliseconds)
instead; such a claim may be taken over once its lease ran out.

A key is scoped to its caller (tenant and user): another user's request with the same key is
a different request. The key itself is hashed, so no character in it can reach another key.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import check_owner, from_item, to_item
from workflows.clock import Clock, system_clock
from workflows.domain.idempotency import COMPLETED, IN_PROGRESS, Claim, IdempotencyRecord
from workflows.domain.ids import key_digest


class IdempotencyRepository:
    def __init__(
        self,
        client: Any,
        table: str,
        *,
        clock: Clock = system_clock,
        ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._ttl = ttl

    @staticmethod
    def record_id(tenant_id: str, user_id: str, key: str) -> str:
        return f"{tenant_id}#{user_id}#{key_digest(key)}"

    def claim(self, tenant_id: str, user_id: str, key: str, body_hash: str, run_id: str) -> Claim:
        now = self._clock()
        token = str(uuid.uuid4())
        item = to_item(
            {
                "id": self.record_id(tenant_id, user_id, key),
                "tenant_id": tenant_id,
                "user_id": user_id,
                "status": IN_PROGRESS,
                "body_hash": body_hash,
                "token": token,
                "run_id": run_id,
                "created_at": int(now.timestamp()),
                "expiration": int((now + self._ttl).timestamp()),
            }
        )
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(id) OR expiration < :now_s"
                    " OR (#status = :in_progress AND lease_expires_at < :now_ms)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":now_s": {"N": str(int(now.timestamp()))},
                    ":now_ms": {"N": str(int(now.timestamp() * 1000))},
                    ":in_progress": {"S": IN_PROGRESS},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
            old = exc.response.get("Item")
            existing = self._record_from(old) if old else self.get(tenant_id, user_id, key)
            if existing is None:  # it expired and vanished in between: claim again
                return self.claim(tenant_id, user_id, key, body_hash, run_id)
            return Claim(won=False, token=token, existing=existing, run_id=existing.run_id)
        return Claim(won=True, token=token, run_id=run_id)

    def complete(self, tenant_id: str, user_id: str, key: str, body_hash: str, run_id: str) -> None:
        """Mark the claim naming `run_id` completed (its run exists and was kicked). A record
        released meanwhile (a racing request with the key was refused) is written again, so the
        key keeps standing for the run; one naming another run (this one expired and was
        claimed again) is left alone."""
        now = self._clock()
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": self.record_id(tenant_id, user_id, key)}},
                UpdateExpression=(
                    "SET #status = :completed, run_id = :run_id, tenant_id = :tenant, user_id = :user,"
                    " body_hash = if_not_exists(body_hash, :body_hash),"
                    " expiration = if_not_exists(expiration, :expiration)"
                ),
                ConditionExpression="attribute_not_exists(id) OR run_id = :run_id",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":completed": {"S": COMPLETED},
                    ":run_id": {"S": run_id},
                    ":tenant": {"S": tenant_id},
                    ":user": {"S": user_id},
                    ":body_hash": {"S": body_hash},
                    ":expiration": {"N": str(int((now + self._ttl).timestamp()))},
                },
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc

    def release(self, tenant_id: str, user_id: str, key: str, run_id: str) -> None:
        """Give up the claim naming `run_id` (the request was refused before its run was
        stored), so the same key may be tried again, with another body too."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"id": {"S": self.record_id(tenant_id, user_id, key)}},
                ConditionExpression="run_id = :run_id AND #status = :in_progress",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":run_id": {"S": run_id}, ":in_progress": {"S": IN_PROGRESS}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc

    def get(self, tenant_id: str, user_id: str, key: str) -> IdempotencyRecord | None:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table,
                Key={"id": {"S": self.record_id(tenant_id, user_id, key)}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        if item is None:
            return None
        record = self._record_from(item)
        values = from_item(item)
        check_owner(tenant_id, values.get("tenant_id"), "idempotency record")
        if int(values.get("expiration", 0)) < int(self._clock().timestamp()):
            return None  # expired; TTL has not removed it yet
        return record

    @staticmethod
    def _record_from(item: Mapping[str, Any]) -> IdempotencyRecord:
        values = from_item(item)
        return IdempotencyRecord(
            status=str(values["status"]),
            body_hash=str(values["body_hash"]),
            token=str(values.get("token", "")),
            run_id=values.get("run_id"),
        )
