"""The definition aggregate: a workflow's head item, its immutable versions, and name guards.

Keys (see docs/storage.md):
- head     pk = "<tenant_id>#<workflow_id>", sk = "HEAD"
           latest version, name, status (active | deleted), timestamps;
           gsi1pk = "<tenant_id>", gsi1sk = "<created_at>#<workflow_id>" (tenant listing; only
           heads carry these attributes, so the index holds one item per workflow)
- version  pk = "<tenant_id>#<workflow_id>", sk = "v0000000001", "v0000000002" ...
           the whole definition as canonical JSON, never changed after it is written
- guard    pk = "<tenant_id>#name#<name>", sk = "v0000000001" ...
           reserves (name, version) within the tenant

Every write of a version is one transaction: the guard (attribute_not_exists), the version item
(attribute_not_exists) and the head (created with attribute_not_exists, or moved from the latest
version it was read at). Two writers racing for one name and version, or for the next version of
one workflow, cannot both commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.adapters.dynamo import cancellation_reasons, check_owner, dumps, from_item, loads, to_item
from workflows.adapters.paging import Page, check_position, query_page
from workflows.clock import Clock, iso, system_clock
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.paging import Position
from workflows.domain.workflows import ACTIVE, DELETED, WorkflowHead, WorkflowVersion
from workflows.errors import Conflict, NotFound, StaleWrite

HEAD_SK = "HEAD"
LIST_KEY = ("pk", "sk", "gsi1pk", "gsi1sk")
VERSIONS_KEY = ("pk", "sk")
_VERSION_FIELDS = "pk, sk, workflow_id, version, #name, description, created_at, created_by"


def workflow_pk(tenant_id: str, workflow_id: str) -> str:
    return f"{tenant_id}#{workflow_id}"


def version_sk(version: int) -> str:
    return f"v{version:010d}"


def name_guard_pk(tenant_id: str, name: str) -> str:
    return f"{tenant_id}#name#{name}"


class DefinitionRepository:
    def __init__(self, client: Any, table: str, *, clock: Clock = system_clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    # ---- writes --------------------------------------------------------------------

    def create(
        self, tenant_id: str, user_id: str, workflow_id: str, definition: WorkflowDefinition
    ) -> WorkflowHead:
        """Store version `definition.version` of a new workflow, or raise Conflict."""
        now = iso(self._clock())
        head = WorkflowHead(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            name=definition.name,
            description=definition.description,
            tags=definition.tags,
            latest_version=definition.version,
            status=ACTIVE,
            created_at=now,
            updated_at=now,
            created_by=user_id,
        )
        head_put = {
            "Put": {
                "TableName": self._table,
                "Item": self._head_item(head),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        self._write_version(head, definition, head_put, now, user_id)
        return head

    def add_version(self, head: WorkflowHead, user_id: str, definition: WorkflowDefinition) -> WorkflowHead:
        """Store `definition` as version head.latest_version + 1, if the head has not moved.

        Raises StaleWrite when another version was added (or the workflow deleted) since `head`
        was read, and Conflict when the name and version are taken.
        """
        now = iso(self._clock())
        new = head.model_copy(
            update={
                "name": definition.name,
                "description": definition.description,
                "tags": definition.tags,
                "latest_version": definition.version,
                "updated_at": now,
            }
        )
        head_put = {
            "Put": {
                "TableName": self._table,
                "Item": self._head_item(new),
                "ConditionExpression": "latest_version = :read AND #status = :active",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":read": {"N": str(head.latest_version)},
                    ":active": {"S": ACTIVE},
                },
            }
        }
        self._write_version(new, definition, head_put, now, user_id)
        return new

    def _write_version(
        self,
        head: WorkflowHead,
        definition: WorkflowDefinition,
        head_put: dict[str, Any],
        now: str,
        user_id: str,
    ) -> None:
        guard = to_item(
            {
                "pk": name_guard_pk(head.tenant_id, definition.name),
                "sk": version_sk(definition.version),
                "workflow_id": head.workflow_id,
                "created_at": now,
            }
        )
        version_item = to_item(
            {
                "pk": workflow_pk(head.tenant_id, head.workflow_id),
                "sk": version_sk(definition.version),
                "workflow_id": head.workflow_id,
                "version": definition.version,
                "name": definition.name,
                "description": definition.description,
                "definition": definition.canonical_json(),
                "created_at": now,
                "created_by": user_id,
            }
        )
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": guard,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            head_put,
            {
                "Put": {
                    "TableName": self._table,
                    "Item": version_item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                codes = [reason.get("Code") for reason in cancellation_reasons(exc)]
                # The head moved: a concurrent writer took this version number (its guard then
                # exists too). That is a lost race to retry, not a duplicate name and version.
                if len(codes) > 1 and codes[1] in ("ConditionalCheckFailed", "TransactionConflict"):
                    raise StaleWrite(f"workflow {head.workflow_id} changed while writing") from exc
                if codes and codes[0] == "ConditionalCheckFailed":
                    raise Conflict(
                        f"a workflow named '{definition.name}' version {definition.version} already exists",
                        details=[{"field": "name", "message": "name and version already taken"}],
                    ) from exc
                if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
                    raise StaleWrite(f"workflow {head.workflow_id} changed while writing") from exc
            raise translate(exc) from exc

    def mark_deleted(self, tenant_id: str, workflow_id: str) -> WorkflowHead:
        """Soft delete; deleting a deleted workflow changes nothing and returns it as it is."""
        now = iso(self._clock())
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=self._head_key(tenant_id, workflow_id),
                UpdateExpression="SET #status = :deleted, deleted_at = :now, updated_at = :now",
                ConditionExpression="attribute_exists(pk) AND #status = :active",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":deleted": {"S": DELETED},
                    ":active": {"S": ACTIVE},
                    ":now": {"S": now},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
            old = exc.response.get("Item")
            if not old:
                raise NotFound(f"workflow '{workflow_id}' not found") from exc
            return self._head_from(old)
        return self._head_from(response["Attributes"])

    # ---- reads ---------------------------------------------------------------------

    def get_head(self, tenant_id: str, workflow_id: str) -> WorkflowHead:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table, Key=self._head_key(tenant_id, workflow_id), ConsistentRead=True
            )
        if "Item" not in response:
            raise NotFound(f"workflow '{workflow_id}' not found")
        head = self._head_from(response["Item"])
        check_owner(tenant_id, head.tenant_id, "workflow")
        return head

    def get_version(self, tenant_id: str, workflow_id: str, version: int) -> WorkflowVersion:
        with aws_errors():
            response = self._client.get_item(
                TableName=self._table,
                Key={"pk": {"S": workflow_pk(tenant_id, workflow_id)}, "sk": {"S": version_sk(version)}},
                ConsistentRead=True,
            )
        if "Item" not in response:
            raise NotFound(f"workflow '{workflow_id}' has no version {version}")
        return self._version_from(response["Item"])

    def list_heads(
        self,
        tenant_id: str,
        *,
        include_deleted: bool,
        limit: int,
        start: Position | None,
        created_by: str | None = None,
    ) -> tuple[list[WorkflowHead], Position | None]:
        """The tenant's workflows (`created_by`'s only, if given), newest first (by-tenant index,
        key range on one partition)."""
        check_position(start, {"gsi1pk": tenant_id, "pk^": f"{tenant_id}#"}, LIST_KEY)
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by-tenant",
            "KeyConditionExpression": "gsi1pk = :tenant",
            "ExpressionAttributeValues": {":tenant": {"S": tenant_id}},
            "ScanIndexForward": False,
        }
        if not include_deleted:
            params["FilterExpression"] = "#status = :active"
            params["ExpressionAttributeNames"] = {"#status": "status"}
            params["ExpressionAttributeValues"][":active"] = {"S": ACTIVE}
        if created_by is not None:
            owner = "created_by = :owner"
            params["FilterExpression"] = " AND ".join(filter(None, [params.get("FilterExpression"), owner]))
            params["ExpressionAttributeValues"][":owner"] = {"S": created_by}
        page: Page = query_page(self._client, params, limit=limit, key_fields=LIST_KEY, start=start)
        return [self._head_from(item) for item in page.items], page.next_position

    def list_versions(
        self, tenant_id: str, workflow_id: str, *, limit: int, start: Position | None
    ) -> tuple[list[WorkflowVersion], Position | None]:
        """Versions newest first, without their documents."""
        pk = workflow_pk(tenant_id, workflow_id)
        check_position(start, {"pk": pk, "sk^": "v"}, VERSIONS_KEY)
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :v)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":v": {"S": "v"}},
            "ExpressionAttributeNames": {"#name": "name"},
            "ProjectionExpression": _VERSION_FIELDS,
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        page = query_page(self._client, params, limit=limit, key_fields=VERSIONS_KEY, start=start)
        return [self._version_from(item) for item in page.items], page.next_position

    # ---- item conversion -------------------------------------------------------------

    @staticmethod
    def _head_key(tenant_id: str, workflow_id: str) -> dict[str, Any]:
        return {"pk": {"S": workflow_pk(tenant_id, workflow_id)}, "sk": {"S": HEAD_SK}}

    @staticmethod
    def _head_item(head: WorkflowHead) -> dict[str, Any]:
        values = head.model_dump(mode="json")
        values["tags"] = dumps(values["tags"])
        values.update(
            pk=workflow_pk(head.tenant_id, head.workflow_id),
            sk=HEAD_SK,
            gsi1pk=head.tenant_id,
            gsi1sk=f"{head.created_at}#{head.workflow_id}",
        )
        return to_item(values)

    @staticmethod
    def _head_from(item: Mapping[str, Any]) -> WorkflowHead:
        values = from_item(item)
        values["tags"] = loads(values.get("tags")) or []
        return WorkflowHead.model_validate(values)

    @staticmethod
    def _version_from(item: Mapping[str, Any]) -> WorkflowVersion:
        values = from_item(item)
        document = values.pop("definition", None)
        if document is not None:
            values["definition"] = WorkflowDefinition.model_validate_json(document)
        return WorkflowVersion.model_validate(values)
