"""Step outputs too big for the run item, kept apart (domain.outputs, docs/storage.md "Step
outputs"), and a step's output found in the run's events once the run item no longer holds it.

- runs table    pk = "<tenant_id>#<run_id>", sk = "#OUTPUT#<output id>": one output,
                zlib-compressed (`value`), expiring with the history
- S3            `outputs/<tenant_id>/<run_id>/<output id>.json.z` in the artifacts bucket, for an
                output past S3_OUTPUT_BYTES compressed (the bucket's lifecycle rule expires it),
                read back only if its SHA-256 matches the reference's

An output is written once, before the commit that records its reference: a commit that loses
its race leaves an item or object nobody references, which expires with the history.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import MAX_ITEM_BYTES, item_size
from workflows.adapters.run_items import OUTPUT_SK, read_run, run_pk, stored_events
from workflows.clock import Clock, system_clock
from workflows.domain.outputs import (
    REF,
    S3_OUTPUT_BYTES,
    encode,
    in_s3,
    latest_output,
    new_output_id,
    ref,
    ref_id,
)
from workflows.errors import NotFound, PayloadTooLarge

# Stored commits read per Query while looking for an output the run item no longer holds.
_OUTPUT_SEARCH_PAGE = 25


class RunOutputRepository:
    def __init__(
        self,
        client: Any,
        runs_table: str,
        events_table: str,
        *,
        clock: Clock = system_clock,
        retention_days: int = 90,
        s3: Callable[[], Any] | None = None,
        bucket: str = "",
    ) -> None:
        self._client = client
        self._runs = runs_table
        self._events = events_table
        # Outputs past S3_OUTPUT_BYTES go to this bucket (a factory: most runs never need S3).
        self._s3 = s3
        self._bucket = bucket
        self._clock = clock
        self._retention = timedelta(days=retention_days)

    def put_output(self, tenant_id: str, run_id: str, value: object) -> dict[str, object]:
        """One put of a new item under the run's key (`#OUTPUT#<random id>`), or past
        S3_OUTPUT_BYTES compressed one S3 object (`outputs/<tenant>/<run>/<id>.json.z`; the
        bucket's lifecycle rule expires it with the history): written before the commit that
        records it, so a commit that loses its race leaves something unreferenced that expires."""
        body = encode(value)
        output_id = new_output_id()
        packed = zlib.compress(body, 6)
        if len(packed) > S3_OUTPUT_BYTES and self._s3 is not None:
            with aws_errors():
                self._s3().put_object(
                    Bucket=self._bucket, Key=_output_key(tenant_id, run_id, output_id), Body=packed
                )
            return ref(output_id, body, s3=True)
        expires_at = int((self._clock() + self._retention).timestamp())
        item = {
            "pk": {"S": run_pk(tenant_id, run_id)},
            "sk": {"S": f"{OUTPUT_SK}{output_id}"},
            "value": {"B": packed},
            "expires_at": {"N": str(expires_at)},
        }
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise PayloadTooLarge(
                f"output of {len(body)} bytes is stored as {size} bytes, limit {MAX_ITEM_BYTES}"
            )
        with aws_errors():
            self._client.put_item(TableName=self._runs, Item=item)
        return ref(output_id, body)

    def read_outputs(self, tenant_id: str, run_id: str, refs: Sequence[Mapping[str, object]]) -> list[object]:
        values: list[object] = []
        pk = run_pk(tenant_id, run_id)
        for reference in refs:
            wanted = dict(reference)
            if in_s3(wanted):
                values.append(self._read_s3_output(tenant_id, run_id, wanted))
                continue
            key = {"pk": {"S": pk}, "sk": {"S": f"{OUTPUT_SK}{ref_id(wanted)}"}}
            with aws_errors():
                found = self._client.get_item(TableName=self._runs, Key=key, ConsistentRead=True).get("Item")
            if found is None:
                raise NotFound(f"run '{run_id}': an output it records is gone")
            values.append(json.loads(zlib.decompress(found["value"]["B"])))
        return values

    def _read_s3_output(self, tenant_id: str, run_id: str, wanted: dict[str, Any]) -> object:
        if self._s3 is None:
            raise NotFound(f"run '{run_id}': an output it records is in S3, which is not configured")
        try:
            response = self._s3().get_object(
                Bucket=self._bucket, Key=_output_key(tenant_id, run_id, ref_id(wanted))
            )
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"run '{run_id}': an output it records is gone") from exc
            raise translate(exc) from exc
        body = zlib.decompress(response["Body"].read())
        if hashlib.sha256(body).hexdigest() != wanted[REF].get("sha256"):
            raise NotFound(f"run '{run_id}': an output it records does not match its digest")
        return json.loads(body)

    def find_step_output(self, tenant_id: str, run_id: str, step_id: str) -> tuple[bool, object]:
        """The run's latest commit, then its stored commits newest first, a page at a time."""
        run = read_run(self._client, self._runs, tenant_id, run_id)
        found = latest_output(run.latest_events, step_id)
        if found[0]:
            return found
        request: dict[str, Any] = {
            "TableName": self._events,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": run_pk(tenant_id, run_id)}},
            "ScanIndexForward": False,
            "Limit": _OUTPUT_SEARCH_PAGE,
        }
        while True:
            with aws_errors():
                page = self._client.query(**request)
            for item in page.get("Items", []):
                found = latest_output(stored_events(item), step_id)
                if found[0]:
                    return found
            if "LastEvaluatedKey" not in page:
                return False, None
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _output_key(tenant_id: str, run_id: str, output_id: str) -> str:
    return f"outputs/{tenant_id}/{run_id}/{output_id}.json.z"


__all__ = ["RunOutputRepository"]
