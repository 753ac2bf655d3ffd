"""The artifact aggregate: metadata in DynamoDB, contents in S3.

Keys (see docs/storage.md):
- artifacts table  pk = "<tenant_id>#<run_id>", sk = "<artifact_id>"
- bucket           key = "<tenant_id>/<run_id>/<artifact_id>", SSE-S3 (AES256)

The object is written first and the metadata item second (`attribute_not_exists`), so an
artifact that can be listed always has its bytes; if the item cannot be written, the object is
removed again. Saving again with the same `artifact_id` (a redelivered step) returns the
artifact already stored instead of a second one.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import check_owner, from_item, to_item
from workflows.clock import Clock, iso, system_clock
from workflows.domain.artifacts import (
    MAX_READ_BYTES,
    PRESIGNED_URL_SECONDS,
    ArtifactMeta,
    content_disposition,
)
from workflows.errors import NotFound, PayloadTooLarge

DEFAULT_MIME_TYPE = "application/octet-stream"
# A whole run's artifacts are listed in one answer; this bounds the requests it may take.
_MAX_LIST_REQUESTS = 20
# type/subtype with optional parameters, printable ASCII only: safe to echo as a header.
_MIME_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;\s*[\x20-\x7e]*)?$")
_ARTIFACT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def artifacts_pk(tenant_id: str, run_id: str) -> str:
    return f"{tenant_id}#{run_id}"


def object_key(tenant_id: str, run_id: str, artifact_id: str) -> str:
    return f"{tenant_id}/{run_id}/{artifact_id}"


def normalise_mime_type(mime_type: str | None) -> str:
    value = (mime_type or "").strip()
    return value if len(value) <= 255 and _MIME_TYPE.match(value) else DEFAULT_MIME_TYPE


class ArtifactRepository:
    def __init__(
        self,
        dynamodb_client: Any,
        s3_client: Any,
        table: str,
        bucket: str,
        *,
        clock: Clock = system_clock,
        retention_days: int = 90,
    ) -> None:
        self._dynamodb = dynamodb_client
        self._s3 = s3_client
        self._table = table
        self._bucket = bucket
        self._clock = clock
        self._retention = timedelta(days=retention_days)

    # ---- writes --------------------------------------------------------------------

    def save(
        self,
        tenant_id: str,
        run_id: str,
        *,
        step_id: str | None,
        name: str,
        content: bytes,
        mime_type: str | None = DEFAULT_MIME_TYPE,
        artifact_id: str | None = None,
    ) -> ArtifactMeta:
        """Store `content` and its metadata. A stable `artifact_id` makes a repeat a no-op."""
        artifact_id = artifact_id or str(uuid.uuid4())
        if not _ARTIFACT_ID.match(artifact_id):
            raise ValueError(f"invalid artifact id {artifact_id!r}")
        now = self._clock()
        meta = ArtifactMeta(
            artifact_id=artifact_id,
            tenant_id=tenant_id,
            run_id=run_id,
            step_id=step_id,
            name=name,
            size_bytes=len(content),
            mime_type=normalise_mime_type(mime_type),
            sha256=hashlib.sha256(content).hexdigest(),
            created_at=iso(now),
            s3_key=object_key(tenant_id, run_id, artifact_id),
            expires_at=int((now + self._retention).timestamp()),
        )
        with aws_errors():
            self._s3.put_object(
                Bucket=self._bucket,
                Key=meta.s3_key,
                Body=content,
                ContentType=meta.mime_type,
                ServerSideEncryption="AES256",
                Metadata={"sha256": meta.sha256},
            )
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item=self._item(meta),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                # Saved before (same id): the first write wins and the object holds its bytes.
                return self.get(tenant_id, run_id, artifact_id)
            self._discard(meta.s3_key)
            raise translate(exc) from exc
        return meta

    def _discard(self, key: str) -> None:
        """Best effort: an orphaned object is unreachable and expires with the bucket's rules."""
        try:
            self._s3.delete_object(Bucket=self._bucket, Key=key)
        except ClientError:
            return

    # ---- reads ---------------------------------------------------------------------

    def list(self, tenant_id: str, run_id: str) -> list[ArtifactMeta]:
        """A run's artifacts, oldest first."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": artifacts_pk(tenant_id, run_id)}},
        }
        found: list[ArtifactMeta] = []
        for _ in range(_MAX_LIST_REQUESTS):
            with aws_errors():
                response = self._dynamodb.query(**params)
            found.extend(self._meta_from(item) for item in response.get("Items", []))
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                break
            params["ExclusiveStartKey"] = last_key
        return sorted(found, key=lambda meta: (meta.created_at, meta.artifact_id))

    def get(self, tenant_id: str, run_id: str, artifact_id: str) -> ArtifactMeta:
        with aws_errors():
            response = self._dynamodb.get_item(
                TableName=self._table,
                Key={"pk": {"S": artifacts_pk(tenant_id, run_id)}, "sk": {"S": artifact_id}},
                ConsistentRead=True,
            )
        if "Item" not in response:
            raise NotFound(f"artifact '{artifact_id}' not found")
        meta = self._meta_from(response["Item"])
        check_owner(tenant_id, meta.tenant_id, "artifact")
        return meta

    def presigned_url(self, meta: ArtifactMeta, expires_in: int = PRESIGNED_URL_SECONDS) -> str:
        """A short-lived GET URL for the object; signing is local, no request is made."""
        with aws_errors():
            url = self._s3.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self._bucket,
                    "Key": meta.s3_key,
                    "ResponseContentType": meta.mime_type,
                    "ResponseContentDisposition": content_disposition(meta.name),
                },
                ExpiresIn=expires_in,
            )
        return str(url)

    def read(self, meta: ArtifactMeta, *, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """The artifact's bytes, at most `max_bytes` of them (larger ones: use a presigned URL)."""
        if meta.size_bytes > max_bytes:
            raise PayloadTooLarge(f"artifact '{meta.artifact_id}' is larger than {max_bytes} bytes")
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=meta.s3_key)
        except ClientError as exc:
            if error_code(exc) == "NoSuchKey":
                raise NotFound(f"artifact '{meta.artifact_id}' contents not found") from exc
            raise translate(exc) from exc
        body = response["Body"]
        try:
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"artifact '{meta.artifact_id}' is larger than {max_bytes} bytes")
        return data

    # ---- item conversion -------------------------------------------------------------

    def _item(self, meta: ArtifactMeta) -> dict[str, Any]:
        values = meta.model_dump()
        values.update(pk=artifacts_pk(meta.tenant_id, meta.run_id), sk=meta.artifact_id)
        return to_item(values)

    @staticmethod
    def _meta_from(item: Mapping[str, Any]) -> ArtifactMeta:
        values = from_item(item)
        values.pop("pk", None)
        values.pop("sk", None)
        return ArtifactMeta.model_validate(values)
