"""Atomic counters in the quotas table: submission windows and each tenant's running runs.

Items (QuotasTable, hash key `pk`, TTL attribute `expires_at`):
- `submit#<tenant>#<user>#<window>#<start>`: `n`, the submissions counted in that window
  (`min` = one minute, `day` = one UTC day). Counted with one UpdateItem `ADD n :1` on the
  condition `n < :limit`, so concurrent requests can never count past the limit. The item
  expires with its window.
- `fires#<tenant>#day#<start>`: the same for runs started by the tenant's schedules in a UTC day.
- `slots#<tenant>`: `n`, the tenant's execution slots taken, and `healed_at`. Taking a slot is
  one UpdateItem `ADD n :1` on the condition `n < :limit`; giving it back `ADD n :-1`.
- `slots#<tenant>#<shard>` (`SLOT_SHARDS` of them, by a hash of the run id): `runs`, the string
  set of the runs holding a slot, so that taking and giving back are idempotent (a redelivered
  message cannot take two slots for one run, giving back twice is harmless) and a check can
  find holders that ended without giving theirs back. A shard holds about running / 96 ids, so
  a take or a give-back writes two small items whatever the number running: 4 WRU a run up to
  about 2,500 running at once (the single set this replaces was 1 WRU per 28 runs running).
  The order of the writes leaves a crash between them counted but not listed (the safe side:
  a slot too few), which the holders' check puts right (engine.slots).
  (`running#<tenant>`, the single set of an earlier layout, is no longer read or written.)
- `share#<tenant>`: `tat`, the tenant's step-rate clock (domain.shares, GCRA), epoch seconds;
  expires a day after it was last moved.
- `calls#<tenant>` and `calls#*`: `holders`, a map of permit holder (run id) -> lease expiry
  (epoch seconds): the calls out in flight, the tenant's and everyone's. A lease past its expiry
  is removed by the next refused `acquire`, so a holder that died frees its permit by itself.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code, translate
from workflows.domain.quotas import WindowCount

WINDOWS = {"min": 60, "day": 86_400}
# A share clock's item outlives its last move by this much (TTL).
SHARE_TTL_SECONDS = 86_400
# Rounds of a reservation racing other writers between its two conditional forms.
SHARE_ROUNDS = 4
# The sets listing a tenant's slot holders (one BatchGetItem reads them all: at most 100 keys).
SLOT_SHARDS = 96


class QuotaRepository:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    # ---- submission windows ------------------------------------------------------------

    def count(self, tenant_id: str, user_id: str, window: str, limit: int, now: datetime) -> WindowCount:
        """Count one submission in the window that contains `now`, unless it is full."""
        return self._count(f"submit#{tenant_id}#{user_id}", window, limit, now)

    def count_fire(self, tenant_id: str, limit: int, now: datetime) -> WindowCount:
        """Count one run started by one of the tenant's schedules today, unless the budget is used."""
        return self._count(f"fires#{tenant_id}", "day", limit, now)

    def count_signal(self, tenant_id: str, limit: int, now: datetime) -> WindowCount:
        """Count one signal the tenant sent this minute, unless its budget is used."""
        return self._count(f"signals#{tenant_id}", "min", limit, now)

    def _count(self, counter: str, window: str, limit: int, now: datetime) -> WindowCount:
        length = WINDOWS[window]
        moment = int(now.timestamp())
        start = moment - moment % length
        reset = start + length - moment
        key = {"pk": {"S": f"{counter}#{window}#{start}"}}
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="ADD n :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    # Kept a little past the window so a clock skew between functions is harmless.
                    ":expires": {"N": str(start + length + 3600)},
                },
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return WindowCount(False, limit, limit, reset)
            raise translate(exc) from exc
        used = int(response["Attributes"]["n"]["N"])
        return WindowCount(True, limit, used, reset)

    def uncount(self, tenant_id: str, user_id: str, window: str, now: datetime) -> None:
        """Give back a submission counted in a window (another window refused it)."""
        length = WINDOWS[window]
        moment = int(now.timestamp())
        start = moment - moment % length
        self._give_back(start, tenant_id, user_id, window)

    def _give_back(self, start: int, tenant_id: str, user_id: str, window: str) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"submit#{tenant_id}#{user_id}#{window}#{start}"}},
                UpdateExpression="ADD n :minus",
                ConditionExpression="n > :zero",
                ExpressionAttributeValues={":minus": {"N": "-1"}, ":zero": {"N": "0"}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc

    # ---- execution slots ---------------------------------------------------------------

    def take_slot(self, tenant_id: str, run_id: str, limit: int) -> bool:
        """Take one of the tenant's `limit` slots for the run; True if it holds one (idempotent:
        a run already holding one is told so, also at the limit)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._count_key(tenant_id),
                UpdateExpression="ADD n :one",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return self._listed(tenant_id, run_id)  # at the limit: unless it holds one already
            raise translate(exc) from exc
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._shard_key(tenant_id, run_id),
                UpdateExpression="ADD runs :run",
                ConditionExpression="NOT contains(runs, :id)",
                ExpressionAttributeValues={":run": {"SS": [run_id]}, ":id": {"S": run_id}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
            self._add(tenant_id, -1)  # it held one already: the count taken above goes back
        return True

    def release_slot(self, tenant_id: str, run_id: str) -> None:
        """Give back the run's slot; a no-op if it holds none (given back already, never taken)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._shard_key(tenant_id, run_id),
                UpdateExpression="DELETE runs :run",
                ConditionExpression="contains(runs, :id)",
                ExpressionAttributeValues={":run": {"SS": [run_id]}, ":id": {"S": run_id}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return
            raise translate(exc) from exc
        self._add(tenant_id, -1)

    def slot_holders(self, tenant_id: str) -> tuple[int, set[str]]:
        """(the slots counted, the runs listed as holding one), read consistently."""
        keys = [self._count_key(tenant_id)] + [
            {"pk": {"S": f"slots#{tenant_id}#{shard}"}} for shard in range(SLOT_SHARDS)
        ]
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        with aws_errors():
            for _ in range(10):  # unprocessed keys (throttling) are asked for again
                response = self._client.batch_get_item(RequestItems=request)
                items += response.get("Responses", {}).get(self._table, [])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
        counted = 0
        holders: set[str] = set()
        for item in items:
            if item["pk"]["S"] == f"slots#{tenant_id}":
                counted = int(item.get("n", {}).get("N", "0"))
            else:
                holders.update(item.get("runs", {}).get("SS", []))
        return counted, holders

    def recount_slots(self, tenant_id: str, counted: int, holding: int) -> bool:
        """Set the count to `holding` if it is still `counted` (nothing moved meanwhile)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._count_key(tenant_id),
                UpdateExpression="SET n = :holding",
                ConditionExpression="n = :counted" if counted else "attribute_not_exists(n) OR n = :counted",
                ExpressionAttributeValues={":holding": {"N": str(holding)}, ":counted": {"N": str(counted)}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(exc) from exc
        return True

    def healed_at(self, tenant_id: str) -> int | None:
        with aws_errors():
            item = self._client.get_item(
                TableName=self._table,
                Key=self._count_key(tenant_id),
                ConsistentRead=True,
                ProjectionExpression="healed_at",
            ).get("Item", {})
        value = item.get("healed_at")
        return None if value is None else int(value["N"])

    def _listed(self, tenant_id: str, run_id: str) -> bool:
        with aws_errors():
            item = self._client.get_item(
                TableName=self._table, Key=self._shard_key(tenant_id, run_id), ConsistentRead=True
            ).get("Item", {})
        return run_id in item.get("runs", {}).get("SS", [])

    def _add(self, tenant_id: str, amount: int) -> None:
        with aws_errors():
            self._client.update_item(
                TableName=self._table,
                Key=self._count_key(tenant_id),
                UpdateExpression="ADD n :amount",
                ExpressionAttributeValues={":amount": {"N": str(amount)}},
            )

    @staticmethod
    def _count_key(tenant_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"slots#{tenant_id}"}}

    @staticmethod
    def _shard_key(tenant_id: str, run_id: str) -> dict[str, Any]:
        shard = zlib.crc32(run_id.encode()) % SLOT_SHARDS
        return {"pk": {"S": f"slots#{tenant_id}#{shard}"}}

    def mark_healed(self, tenant_id: str, previous: int | None, now: int) -> bool:
        """Claim this minute's check of stale slot holders (one checker per tenant and minute)."""
        condition = "attribute_not_exists(healed_at)" if previous is None else "healed_at = :previous"
        values: dict[str, Any] = {":now": {"N": str(now)}}
        if previous is not None:
            values[":previous"] = {"N": str(previous)}
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._count_key(tenant_id),
                UpdateExpression="SET healed_at = :now",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(exc) from exc
        return True

    # ---- fair shares (domain.shares) ----------------------------------------------------

    def reserve(self, key: str, cost_seconds: float, now: float) -> float:
        """GCRA's one step in two conditional forms (DynamoDB has no max()): a clock ahead of
        now advances by the cost; one behind (or none) restarts at now plus the cost."""
        item = {"pk": {"S": f"share#{key}"}}
        for _ in range(SHARE_ROUNDS):
            try:
                response = self._client.update_item(
                    TableName=self._table,
                    Key=item,
                    UpdateExpression="SET tat = tat + :cost, expires_at = :expires",
                    ConditionExpression="tat > :now",
                    ExpressionAttributeValues={
                        ":cost": _seconds(cost_seconds),
                        ":now": _seconds(now),
                        ":expires": {"N": str(int(now) + SHARE_TTL_SECONDS)},
                    },
                    ReturnValues="UPDATED_NEW",
                )
                return float(response["Attributes"]["tat"]["N"]) - cost_seconds
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise translate(exc) from exc
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=item,
                    UpdateExpression="SET tat = :restart, expires_at = :expires",
                    ConditionExpression="attribute_not_exists(tat) OR tat <= :now",
                    ExpressionAttributeValues={
                        ":restart": _seconds(now + cost_seconds),
                        ":now": _seconds(now),
                        ":expires": {"N": str(int(now) + SHARE_TTL_SECONDS)},
                    },
                )
                return now
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise translate(exc) from exc
        # Another writer moved the clock across `now` between every pair of tries: the tenant is
        # exactly at its budget's edge, where starting now is as fair as anything.
        return now

    def charge(self, key: str, cost_seconds: float, now: float) -> None:
        with aws_errors():
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"share#{key}"}},
                UpdateExpression="SET tat = if_not_exists(tat, :now) + :cost, expires_at = :expires",
                ExpressionAttributeValues={
                    ":cost": _seconds(cost_seconds),
                    ":now": _seconds(now),
                    ":expires": {"N": str(int(now) + SHARE_TTL_SECONDS)},
                },
            )

    def acquire(self, pool: str, holder: str, limit: int, lease_until: float, now: float) -> bool:
        healed = False
        for _ in range(3):
            held = self._take_permit(pool, holder, limit, lease_until)
            if held is None:
                return True
            if not held:
                continue  # another writer created the pool's map first
            expired = {name: until for name, until in held.items() if until <= now}
            if healed or not expired:
                return False
            for name, until in expired.items():
                self._drop_permit(pool, name, until)
            healed = True
        return False

    def _take_permit(self, pool: str, holder: str, limit: int, lease_until: float) -> dict[str, float] | None:
        """None once the permit is held; else the holders that filled the pool."""
        key = {"pk": {"S": f"calls#{pool}"}}
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET holders.#holder = :until",
                ConditionExpression="attribute_exists(holders) AND "
                "(size(holders) < :limit OR attribute_exists(holders.#holder))",
                ExpressionAttributeNames={"#holder": holder},
                ExpressionAttributeValues={":until": _seconds(lease_until), ":limit": {"N": str(limit)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
            old = exc.response.get("Item") or {}
        if "holders" in old:
            return {name: float(value["N"]) for name, value in old["holders"]["M"].items()}
        # The pool's first permit: the map is created with it (a nested SET needs the map).
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET holders = :holders",
                ConditionExpression="attribute_not_exists(holders)",
                ExpressionAttributeValues={":holders": {"M": {holder: _seconds(lease_until)}}},
            )
            return None
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
        # Another writer created it first: take a permit the ordinary way next round.
        return {}

    def _drop_permit(self, pool: str, holder: str, until: float) -> None:
        """Remove an expired lease, unless its holder renewed it meanwhile."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"calls#{pool}"}},
                UpdateExpression="REMOVE holders.#holder",
                ConditionExpression="holders.#holder = :until",
                ExpressionAttributeNames={"#holder": holder},
                ExpressionAttributeValues={":until": _seconds(until)},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc

    def release(self, pool: str, holder: str) -> None:
        with aws_errors():
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"calls#{pool}"}},
                UpdateExpression="REMOVE holders.#holder",
                ExpressionAttributeNames={"#holder": holder},
            )


def _seconds(value: float) -> dict[str, str]:
    """Epoch seconds as a DynamoDB number, to the millisecond."""
    return {"N": f"{value:.3f}"}
