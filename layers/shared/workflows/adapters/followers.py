"""The WebSocket connections that follow runs, as items of the quotas table (docs/storage.md):
short-lived records with a TTL, like that table's counters and permits.

Three kinds of items:

- a run's followers, `pk` = `follow#<tenant>#<run_id>`: one map attribute per
  connection, `c#<connection_id>` = {u: user, s: since, x: expires at, r: ready, l: lease end},
  and `n`, their count. One item per run, so the stream consumer learns which runs of a batch
  are followed with one BatchGetItem (half a read unit per run nobody follows);
- a connection, `pk` = `follow-conn#<connection_id>`: the run it follows ($disconnect and a
  gone connection know only the id);
- a tenant's count of connections, `pk` = `follow-count#<tenant>`: `n`.

A connection is added by one TransactWriteItems of the three, each conditional (the bounds per
run and per tenant, no second record of one connection), so a refused connect writes nothing.
Everything carries `expires_at` (the table's TTL) past API Gateway's two-hour connection limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.domain.follow import Connection, Follower, FollowLimits
from workflows.errors import Conflict, LimitExceeded, Throttled

_PREFIX = "c#"
_BATCH_GET = 100
_TRIES = 4


_FOLLOWERS = "follow#"


def followers_key(tenant_id: str, run_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{_FOLLOWERS}{tenant_id}#{run_id}"}}


def connection_key(connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"follow-conn#{connection_id}"}}


def tenant_key(tenant_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"follow-count#{tenant_id}"}}


def _followers_of(item: dict[str, Any]) -> list[Follower]:
    tenant_id, _, run_id = item["pk"]["S"].removeprefix(_FOLLOWERS).partition("#")
    out = []
    for name, value in item.items():
        if not name.startswith(_PREFIX):
            continue
        m = value["M"]
        out.append(
            Follower(
                connection_id=name[len(_PREFIX) :],
                tenant_id=tenant_id,
                run_id=run_id,
                user_id=m["u"]["S"],
                since=int(m["s"]["N"]),
                expires_at=int(m["x"]["N"]),
                ready=m["r"]["BOOL"],
                lease_until=float(m["l"]["N"]),
            )
        )
    return sorted(out, key=lambda f: f.connection_id)


class FollowersRepository:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def add(self, follower: Follower, limits: FollowLimits, *, now: float) -> None:
        for attempt in range(2):
            try:
                self._client.transact_write_items(TransactItems=self._adding(follower, limits))
                return
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise translate(exc) from exc
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                failed = [i for i, code in enumerate(reasons) if code == "ConditionalCheckFailed"]
                if not failed:
                    raise Throttled("the connection could not be recorded; try again") from exc
                if failed[0] == 0:
                    if attempt == 0 and self._reset_stale_count(follower.tenant_id, now):
                        continue
                    raise LimitExceeded(
                        f"the tenant follows runs over {limits.per_tenant} connections already"
                    ) from exc
                if failed[0] == 1:
                    raise LimitExceeded(f"the run has {limits.per_run} followers already") from exc
                raise Conflict("the connection follows a run already") from exc

    def _adding(self, f: Follower, limits: FollowLimits) -> list[dict[str, Any]]:
        one = {"N": "1"}
        expires = {"N": str(f.expires_at)}
        record = {
            "u": {"S": f.user_id},
            "s": {"N": str(f.since)},
            "x": expires,
            "r": {"BOOL": False},
            "l": {"N": "0"},
        }
        return [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": tenant_key(f.tenant_id),
                    "UpdateExpression": "ADD n :one SET expires_at = :x",
                    "ConditionExpression": "attribute_not_exists(n) OR n < :limit",
                    "ExpressionAttributeValues": {
                        ":one": one,
                        ":x": expires,
                        ":limit": {"N": str(limits.per_tenant)},
                    },
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": followers_key(f.tenant_id, f.run_id),
                    "UpdateExpression": "SET #c = :c, expires_at = :x ADD n :one",
                    "ConditionExpression": (
                        "(attribute_not_exists(n) OR n < :limit) AND attribute_not_exists(#c)"
                    ),
                    "ExpressionAttributeNames": {"#c": _PREFIX + f.connection_id},
                    "ExpressionAttributeValues": {
                        ":c": {"M": record},
                        ":x": expires,
                        ":one": one,
                        ":limit": {"N": str(limits.per_run)},
                    },
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **connection_key(f.connection_id),
                        "tenant_id": {"S": f.tenant_id},
                        "run_id": {"S": f.run_id},
                        "expires_at": expires,
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]

    def _reset_stale_count(self, tenant_id: str, now: float) -> bool:
        """A tenant count not written since every connection it counted must have closed (its
        `expires_at` past: a lost $disconnect left it high) starts again from zero."""
        with aws_errors():
            item = self._client.get_item(
                TableName=self._table, Key=tenant_key(tenant_id), ConsistentRead=True
            )
        expires = item.get("Item", {}).get("expires_at", {}).get("N")
        if expires is None or int(expires) >= now:
            return False
        # Whether this reset it or another connect did meanwhile, the count is worth a retry.
        self._conditional(
            Key=tenant_key(tenant_id),
            UpdateExpression="SET n = :zero",
            ConditionExpression="expires_at = :x",
            ExpressionAttributeValues={":zero": {"N": "0"}, ":x": {"N": expires}},
        )
        return True

    def remove(self, connection_id: str) -> Connection | None:
        with aws_errors():
            old = self._client.delete_item(
                TableName=self._table, Key=connection_key(connection_id), ReturnValues="ALL_OLD"
            ).get("Attributes")
        if not old:
            return None
        connection = Connection(connection_id, old["tenant_id"]["S"], old["run_id"]["S"])
        self._conditional(
            Key=followers_key(connection.tenant_id, connection.run_id),
            UpdateExpression="REMOVE #c ADD n :minus",
            ConditionExpression="attribute_exists(#c)",
            ExpressionAttributeNames={"#c": _PREFIX + connection_id},
            ExpressionAttributeValues={":minus": {"N": "-1"}},
        )
        self._conditional(
            Key=tenant_key(connection.tenant_id),
            UpdateExpression="ADD n :minus",
            ConditionExpression="n > :zero",
            ExpressionAttributeValues={":minus": {"N": "-1"}, ":zero": {"N": "0"}},
        )
        return connection

    def connection(self, connection_id: str) -> Connection | None:
        with aws_errors():
            item = self._client.get_item(
                TableName=self._table, Key=connection_key(connection_id), ConsistentRead=True
            ).get("Item")
        if not item:
            return None
        return Connection(connection_id, item["tenant_id"]["S"], item["run_id"]["S"])

    def followers(self, tenant_id: str, run_id: str, *, consistent: bool = True) -> list[Follower]:
        with aws_errors():
            item = self._client.get_item(
                TableName=self._table, Key=followers_key(tenant_id, run_id), ConsistentRead=consistent
            ).get("Item")
        return _followers_of(item) if item else []

    def followed(self, runs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Follower]]:
        keys = [followers_key(t, r) for t, r in dict.fromkeys(runs)]
        found: dict[tuple[str, str], list[Follower]] = {}
        for start in range(0, len(keys), _BATCH_GET):
            pending = keys[start : start + _BATCH_GET]
            for _ in range(_TRIES):
                if not pending:
                    break
                with aws_errors():
                    response = self._client.batch_get_item(
                        RequestItems={self._table: {"Keys": pending, "ConsistentRead": False}}
                    )
                for item in response.get("Responses", {}).get(self._table, []):
                    followers = _followers_of(item)
                    if followers:
                        found[(followers[0].tenant_id, followers[0].run_id)] = followers
                pending = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
            if pending:
                raise Throttled(f"the followers of {len(pending)} runs could not be read; try again")
        return found

    def ready(self, follower: Follower) -> bool:
        return self._conditional(
            Key=followers_key(follower.tenant_id, follower.run_id),
            UpdateExpression="SET #c.#r = :t",
            ConditionExpression="attribute_exists(#c)",
            ExpressionAttributeNames={"#c": _PREFIX + follower.connection_id, "#r": "r"},
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )

    def claim(self, follower: Follower, *, now: float, until: float) -> bool:
        return self._conditional(
            Key=followers_key(follower.tenant_id, follower.run_id),
            UpdateExpression="SET #c.#l = :until",
            ConditionExpression="#c.#s = :since AND #c.#l < :now AND #c.#r = :t",
            ExpressionAttributeNames={
                "#c": _PREFIX + follower.connection_id,
                "#l": "l",
                "#s": "s",
                "#r": "r",
            },
            ExpressionAttributeValues={
                ":until": {"N": repr(until)},
                ":since": {"N": str(follower.since)},
                ":now": {"N": repr(now)},
                ":t": {"BOOL": True},
            },
        )

    def advance(self, follower: Follower, since: int) -> bool:
        return self._conditional(
            Key=followers_key(follower.tenant_id, follower.run_id),
            UpdateExpression="SET #c.#s = :new, #c.#l = :zero",
            ConditionExpression="#c.#s = :old",
            ExpressionAttributeNames={"#c": _PREFIX + follower.connection_id, "#l": "l", "#s": "s"},
            ExpressionAttributeValues={
                ":new": {"N": str(since)},
                ":old": {"N": str(follower.since)},
                ":zero": {"N": "0"},
            },
        )

    def _conditional(self, **request: Any) -> bool:
        """One conditional UpdateItem: False when its condition does not hold."""
        try:
            self._client.update_item(TableName=self._table, **request)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(exc) from exc
        return True
