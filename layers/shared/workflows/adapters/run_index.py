"""Runs found through RunsTable's indexes (docs/storage.md): the keys a run item carries for
them, and the Queries that read them.

- by-tenant         gsi1pk = "<tenant_id>#<shard>", gsi1sk = "<created_at>#<run_id>"
- by-workflow       gsi2pk = "<tenant_id>#<workflow_id>#<shard>", gsi2sk = gsi1sk
                    Both project only the keys, `status` and `owner_id`: a commit that changes
                    neither writes nothing to them.
- active (sparse)   active_shard = one of ACTIVE_SHARDS (a hash of the run id: spreads the
                    writes; the sweeper reads each), active_due = "0", or the deadline of a long
                    wait: present while the service owes the run a step (`Run.owed_step`)
- approvals         approval_tenant = "<tenant_id>#<shard>", approval_requested =
  (sparse)          "<requested_at>#<run_id>", approval_assignees (a string set): present while
                    the run waits for a decision (`Run.decision_requested_at`), projecting what
                    an inbox shows

`<shard>` is one of LISTING_SHARDS, a hash of the run id: a tenant's listing and inbox writes
spread over that many partitions instead of one (one partition takes 1,000 write units a
second, about 330 runs a second of listing writes: docs/capacity.md). A listing queries every
shard of its tenant and merges them in sort key order (paging.merged_page), so its pages and
positions are those of one partition.

The run item's writer (runs.py) adds `index_keys(run)` to every item it writes, so the commit
that changes what a run is owed writes its index entries and nothing else does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workflows.adapters.aws import aws_errors
from workflows.adapters.dynamo import check_owner, from_item, loads, to_item
from workflows.adapters.paging import check_position, invalid_cursor, merged_page
from workflows.adapters.run_items import RUN_SK, run_from
from workflows.domain.approvals import InboxFilter, PendingApproval
from workflows.domain.backoff import attempts, full_jitter
from workflows.domain.paging import Position
from workflows.domain.run import Run

# Partitions of the `active` index (spreads its writes; the sweeper reads each).
ACTIVE_SHARDS = 8
ACTIVE_INDEX = "active"
# The sparse index of runs waiting for an approval decision (template.yaml, RunsTable).
APPROVALS_INDEX = "approvals"
# What `active_due` holds for a run owed a step now (sorts before every deadline).
_DUE_NOW = "0"
_APPROVAL_KEYS = ("pk", "sk", "approval_tenant", "approval_requested")
_BATCH_GET_MAX = 100
_BATCH_GET_TRIES = 60
# Partitions of each tenant's listings (`by-tenant`; `by-workflow`, per workflow) and of its
# approvals inbox. Eight take 8,000 write units a second: at up to 4 listing writes per run
# (submitted, started, waiting, ended), 2,000 runs a second of one tenant, twice the 1,000 it is
# sized for (docs/capacity.md). Only ever raised: readers query shards 0..LISTING_SHARDS-1, and
# a run keeps the shard it was written with until its next commit.
LISTING_SHARDS = 8
# Runs written before the listings were sharded carry the unsharded key ("<tenant_id>") until
# their next commit rewrites it; listings read that partition too, as one more shard, until
# every such run has expired (HistoryRetentionDays after the upgrade: docs/storage.md).
READ_UNSHARDED = True


def _run_hash(run_id: str) -> int:
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:4], 16)


def active_shard(run_id: str) -> str:
    return str(_run_hash(run_id) % ACTIVE_SHARDS)


def listing_shard(run_id: str) -> int:
    """The shard of the run's entries in the tenant's listings and inbox."""
    return _run_hash(run_id) % LISTING_SHARDS


def listing_partitions(listing: str) -> list[str]:
    """The index partitions holding a listing (a tenant's, or a workflow's `<tenant>#<id>`)."""
    shards = [f"{listing}#{shard}" for shard in range(LISTING_SHARDS)]
    return [*shards, listing] if READ_UNSHARDED else shards


def _sharded(listing: str, run_id: str) -> str:
    return f"{listing}#{listing_shard(run_id)}"


def index_keys(run: Run) -> dict[str, Any]:
    """The attributes of the run item the indexes read, as the run now is. A sparse index's
    attributes are absent while the run does not belong in it (ended, paused, not waiting for
    a decision). `active_due` is "0" except during a long wait (then its deadline): only a long
    wait moves the run in the index (a key change there is a delete and a put), so an ordinary
    commit does not rewrite its entry, and the sweeper skips the run until its deadline."""
    created = f"{run.created_at}#{run.run_id}"
    values: dict[str, Any] = {"gsi1pk": _sharded(run.tenant_id, run.run_id), "gsi1sk": created}
    if run.workflow_id:
        values.update(gsi2pk=_sharded(f"{run.tenant_id}#{run.workflow_id}", run.run_id), gsi2sk=created)
    if run.owed_step:
        values.update(active_shard=active_shard(run.run_id), active_due=run.long_wait_deadline() or _DUE_NOW)
    requested = run.decision_requested_at()
    if requested is not None:
        values.update(
            approval_tenant=_sharded(run.tenant_id, run.run_id),
            approval_requested=f"{requested}#{run.run_id}",
        )
    item = to_item(values)
    assignees = sorted(set((run.approval or {}).get("assignees") or []))
    if requested is not None and assignees:  # a set, for `contains` in the inbox's filter
        item["approval_assignees"] = {"SS": assignees}
    return item


class RunIndexRepository:
    def __init__(self, client: Any, runs_table: str) -> None:
        self._client = client
        self._runs = runs_table
        # A listing's shards are queried side by side (threads start with the first listing).
        self._pool = ThreadPoolExecutor(max_workers=LISTING_SHARDS + 1, thread_name_prefix="listing-shard")

    def list_runs(
        self,
        tenant_id: str,
        *,
        workflow_id: str | None = None,
        statuses: Sequence[str] = (),
        created_after: str | None = None,
        created_before: str | None = None,
        limit: int = 50,
        start: Position | None = None,
        owner_id: str | None = None,
    ) -> tuple[list[Run], Position | None]:
        """A tenant's runs (`owner_id`'s only, if given), newest first: a key-range Query on
        each shard of `by-tenant` (or `by-workflow`), merged, then the page's run items in one
        BatchGetItem.

        created_after / created_before are exclusive bounds on created_at (RFC 3339 strings as
        `iso` writes them); a status filter is a FilterExpression, so a page may need several
        rounds of requests (bounded, see adapters.paging).
        """
        if workflow_id is None:
            index, pk_name, sk_name, partition = "by-tenant", "gsi1pk", "gsi1sk", tenant_id
        else:
            index, pk_name, sk_name = "by-workflow", "gsi2pk", "gsi2sk"
            partition = f"{tenant_id}#{workflow_id}"
        key_fields = ("pk", "sk", pk_name, sk_name)
        # Sort keys are "<created_at>#<run_id>": "<t>#~" sorts after every run created at t
        # and "<t>" before every one of them, so both bounds exclude runs created exactly at t.
        lower = f"{created_after}#~" if created_after else None
        upper = created_before
        check_position(start, {pk_name: partition, "pk^": f"{tenant_id}#"}, key_fields)
        after = None
        if start is not None:
            after = start[sk_name]
            if (lower is not None and after <= lower) or (upper is not None and after >= upper):
                raise invalid_cursor()
        values: dict[str, Any] = {}
        params: dict[str, Any] = {"TableName": self._runs, "IndexName": index}
        filters: list[str] = []
        if statuses:
            placeholders = {f":s{i}": {"S": status} for i, status in enumerate(statuses)}
            filters.append(f"#status IN ({', '.join(placeholders)})")
            params["ExpressionAttributeNames"] = {"#status": "status"}
            values.update(placeholders)
        if owner_id is not None:
            filters.append("owner_id = :owner")
            values[":owner"] = {"S": owner_id}
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
            params["ExpressionAttributeValues"] = values
        page = merged_page(
            self._client,
            params,
            partitions=listing_partitions(partition),
            listing=partition,
            pk_name=pk_name,
            sk_name=sk_name,
            key_fields=key_fields,
            forward=False,
            limit=limit,
            lower=lower,
            upper=upper,
            after=after,
            pool=self._pool,
        )
        runs = self._batch_get([item["pk"]["S"] for item in page.items])
        for run in runs:
            check_owner(tenant_id, run.tenant_id, "run")
        return runs, page.next_position

    def _batch_get(self, pks: Sequence[str]) -> list[Run]:
        """The run items for `pks`, in that order (a run deleted meanwhile is left out)."""
        found: dict[str, Run] = {}
        for offset in range(0, len(pks), _BATCH_GET_MAX):
            keys = [{"pk": {"S": pk}, "sk": {"S": RUN_SK}} for pk in pks[offset : offset + _BATCH_GET_MAX]]
            request: dict[str, Any] = {self._runs: {"Keys": keys}}
            for _ in attempts(_BATCH_GET_TRIES, lambda n: full_jitter(n, 0.02, 1.0)):
                with aws_errors():
                    response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._runs, []):
                    found[item["pk"]["S"]] = run_from(item)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
        return [found[pk] for pk in pks if pk in found]

    def active(self, due_before: str, limit: int, *, due_after: str | None = None) -> list[tuple[str, str]]:
        """One key-range Query per shard of the `active` index (keys only)."""
        condition = "active_shard = :s AND active_due < :d"
        bounds = {":d": {"S": due_before}}
        if due_after is not None:
            condition = "active_shard = :s AND active_due BETWEEN :a AND :d"
            bounds[":a"] = {"S": due_after}
        found: list[tuple[str, str]] = []
        for shard in range(ACTIVE_SHARDS):
            start: dict[str, Any] | None = None
            while len(found) < limit:
                request: dict[str, Any] = {
                    "TableName": self._runs,
                    "IndexName": ACTIVE_INDEX,
                    "KeyConditionExpression": condition,
                    "ExpressionAttributeValues": {":s": {"S": str(shard)}, **bounds},
                    "Limit": limit - len(found),
                }
                if start is not None:
                    request["ExclusiveStartKey"] = start
                with aws_errors():
                    page = self._client.query(**request)
                for item in page.get("Items", []):
                    tenant_id, _, run_id = item["pk"]["S"].rpartition("#")
                    found.append((tenant_id, run_id))
                start = page.get("LastEvaluatedKey")
                if start is None:
                    break
        return found[:limit]

    def list_approvals(
        self, tenant_id: str, keep: InboxFilter, *, limit: int = 50, start: Position | None = None
    ) -> tuple[list[PendingApproval], Position | None]:
        """A Query of each shard of the tenant's partitions of the sparse `approvals` index,
        merged, oldest request first; the index projects what an inbox shows, so no run item is
        read. `keep` becomes a FilterExpression (a page may then take several rounds of
        requests, bounded)."""
        check_position(start, {"approval_tenant": tenant_id, "pk^": f"{tenant_id}#"}, _APPROVAL_KEYS)
        values: dict[str, Any] = {}
        params: dict[str, Any] = {"TableName": self._runs, "IndexName": APPROVALS_INDEX}
        rules: list[str] = []
        if keep.assignee is not None:
            rules.append("contains(approval_assignees, :assignee)")
            values[":assignee"] = {"S": keep.assignee}
        if keep.unassigned:
            rules.append("attribute_not_exists(approval_assignees)")
        if keep.owner_id is not None:
            rules.append("owner_id = :owner")
            values[":owner"] = {"S": keep.owner_id}
        if rules:
            params["FilterExpression"] = " OR ".join(rules)
            if values:
                params["ExpressionAttributeValues"] = values
        page = merged_page(
            self._client,
            params,
            partitions=listing_partitions(tenant_id),
            listing=tenant_id,
            pk_name="approval_tenant",
            sk_name="approval_requested",
            key_fields=_APPROVAL_KEYS,
            forward=True,
            limit=limit,
            after=None if start is None else start["approval_requested"],
            pool=self._pool,
        )
        found: list[PendingApproval] = []
        for item in page.items:
            fields = from_item(item)
            check_owner(tenant_id, fields.get("tenant_id"), "run")
            found.append(
                PendingApproval.from_request(
                    loads(fields.get("approval")) or {},
                    run_id=str(fields["pk"]).rpartition("#")[2],
                    tenant_id=tenant_id,
                    owner_id=str(fields.get("owner_id", "")),
                    workflow_id=fields.get("workflow_id"),
                    definition_name=str(fields.get("definition_name", "")),
                )
            )
        return found, page.next_position


__all__ = [
    "ACTIVE_SHARDS",
    "LISTING_SHARDS",
    "RunIndexRepository",
    "active_shard",
    "index_keys",
    "listing_partitions",
    "listing_shard",
]
