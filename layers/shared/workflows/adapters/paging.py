"""Key-range Query pages of a fixed size, with a FilterExpression and a resumable position.

A position is the key of the last item returned (table key plus index key), as plain strings:
the edge turns it into an opaque cursor and hands it back unchanged.

`query_page` reads one partition. `merged_page` reads a listing whose writes are spread over
several partitions (write shards) with one sort key order across all of them: it queries each
partition and merges, so the pages are those one partition holding everything would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import error_code, translate
from workflows.domain.paging import Position
from workflows.errors import InvalidCursor

# A filtered listing stops after this many requests (a merged listing: rounds of requests, one
# per partition that may still hold the page's items, made side by side) and returns what it has
# (maybe a short or empty page with a position): the cost of one call stays bounded however
# sparse the matches.
MAX_REQUESTS_PER_PAGE = 10


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_position: Position | None


def query_page(
    client: Any,
    params: Mapping[str, Any],
    *,
    limit: int,
    key_fields: tuple[str, ...],
    start: Position | None = None,
    max_requests: int = MAX_REQUESTS_PER_PAGE,
) -> Page:
    request = dict(params)
    request["Limit"] = limit
    if start is not None:
        request["ExclusiveStartKey"] = {name: {"S": value} for name, value in start.items()}
    items: list[dict[str, Any]] = []
    last: Mapping[str, Any] | None = None
    for _ in range(max_requests):
        try:
            response = client.query(**request)
        except ClientError as exc:
            if start is not None and error_code(exc) == "ValidationException":
                raise invalid_cursor() from exc
            raise translate(exc) from exc
        page = response.get("Items", [])
        last = response.get("LastEvaluatedKey")
        room = limit - len(items)
        if len(page) > room:
            items += page[:room]
            return Page(items, _key_of(items[-1], key_fields))
        items += page
        if not last:
            return Page(items, None)
        if len(items) >= limit:
            return Page(items, _plain(last))
        request["ExclusiveStartKey"] = last
    return Page(items, _plain(last) if last else None)


@dataclass
class _Partition:
    """One partition of a merged listing, as read so far."""

    value: str
    # The last key DynamoDB evaluated here (its LastEvaluatedKey), and that key's sort key:
    # everything up to it, in the listing's order, has been read.
    start: dict[str, Any] | None = None
    frontier: str | None = None
    done: bool = False
    found: list[dict[str, Any]] = field(default_factory=list)


def merged_page(
    client: Any,
    params: Mapping[str, Any],
    *,
    partitions: Sequence[str],
    listing: str,
    pk_name: str,
    sk_name: str,
    key_fields: tuple[str, ...],
    forward: bool,
    limit: int,
    lower: str | None = None,
    upper: str | None = None,
    after: str | None = None,
    pool: Executor | None = None,
    max_rounds: int | None = None,
) -> Page:
    """A page of a listing spread over `partitions` (values of `pk_name`), in the order of
    `sk_name` (ascending if `forward`) across all of them: the page one partition holding every
    item would give.

    `params` holds the table, the index and the FilterExpression with its names and values;
    `lower` and `upper` are exclusive bounds on the sort key, and `after` the sort key of the
    position to resume from (exclusive, inside the bounds). Sort keys are unique across the
    partitions (a key found in two, as an item moving between them may be for a moment, is
    returned once).

    Each round queries, side by side, every partition that may still hold one of the page's
    items: the first round all of them, later ones only those not yet read past the page's last
    item so far. An item is returned only once every partition has been read past it, so the
    order is exact. The position returned names `listing` (the partitions' common name) as its
    `pk_name`; after `max_rounds` rounds (MAX_REQUESTS_PER_PAGE) the page may be short, its
    position the point every partition has been read to.
    """
    rounds = max(1, MAX_REQUESTS_PER_PAGE if max_rounds is None else max_rounds)
    if after is not None:
        if forward:
            lower = after
        else:
            upper = after
    # The bounds are exclusive, and a key range with both is BETWEEN, which includes them.
    edges = {bound for bound in (lower, upper) if bound is not None}
    base = dict(params)
    values: dict[str, Any] = dict(base.pop("ExpressionAttributeValues", None) or {})
    condition = f"{pk_name} = :part"
    if lower is not None and upper is not None:
        condition += f" AND {sk_name} BETWEEN :lower AND :upper"
    elif lower is not None:
        condition += f" AND {sk_name} > :lower"
    elif upper is not None:
        condition += f" AND {sk_name} < :upper"
    for name, bound in ((":lower", lower), (":upper", upper)):
        if bound is not None:
            values[name] = {"S": bound}

    def ahead(a: str, b: str) -> bool:
        """`a` comes before `b` in the listing's order."""
        return a < b if forward else a > b

    def sort_key(item: Mapping[str, Any]) -> str:
        return str(item[sk_name]["S"])

    def read(part: _Partition, room: int) -> dict[str, Any]:
        request = {
            **base,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": {**values, ":part": {"S": part.value}},
            "ScanIndexForward": forward,
            "Limit": room,
        }
        if part.start is not None:
            request["ExclusiveStartKey"] = part.start
        try:
            response: dict[str, Any] = client.query(**request)
        except ClientError as exc:
            if after is not None and error_code(exc) == "ValidationException":
                raise invalid_cursor() from exc
            raise translate(exc) from exc
        return response

    parts = [_Partition(value) for value in partitions]

    def found() -> list[dict[str, Any]]:
        unique = {sort_key(item): item for part in parts for item in part.found}
        return [unique[key] for key in sorted(unique, reverse=not forward)]

    for _ in range(rounds):
        known = found()
        # The page's last item if the page were complete now: a partition read past it can
        # add nothing to the page.
        last = sort_key(known[limit - 1]) if len(known) >= limit else None
        wanted: list[_Partition] = []
        rooms: list[int] = []
        for part in parts:
            if part.done:
                continue
            if part.frontier is None:
                wanted.append(part)
                rooms.append(limit)
            elif last is None or ahead(part.frontier, last):
                # Of the page, it can hold the places that no item before its frontier takes.
                frontier = part.frontier
                wanted.append(part)
                rooms.append(limit - sum(1 for item in known if ahead(sort_key(item), frontier)))
        if not wanted:
            break
        if pool is not None and len(wanted) > 1:
            responses = list(pool.map(read, wanted, rooms))
        else:
            responses = [read(part, room) for part, room in zip(wanted, rooms, strict=True)]
        for part, response in zip(wanted, responses, strict=True):
            part.found += [item for item in response.get("Items", []) if sort_key(item) not in edges]
            last_key = response.get("LastEvaluatedKey")
            if last_key:
                part.start, part.frontier = dict(last_key), str(last_key[sk_name]["S"])
            else:
                part.done = True

    known = found()
    # Every partition has been read at least to `settled`: the items before it are complete.
    settled: tuple[str, dict[str, Any]] | None = None
    for part in parts:
        if part.done or part.frontier is None or part.start is None:
            continue
        if settled is None or ahead(part.frontier, settled[0]):
            settled = (part.frontier, part.start)
    ready = [item for item in known if settled is None or not ahead(settled[0], sort_key(item))]
    page = ready[:limit]

    def position(key: Mapping[str, Any]) -> Position:
        return {**{name: str(key[name]["S"]) for name in key_fields}, pk_name: listing}

    if len(page) == limit:
        more = len(known) > limit or settled is not None
        return Page(page, position(page[-1]) if more else None)
    return Page(page, None if settled is None else position(settled[1]))


def _key_of(item: Mapping[str, Any], key_fields: tuple[str, ...]) -> Position:
    return {name: item[name]["S"] for name in key_fields}


def _plain(key: Mapping[str, Any]) -> Position:
    return {name: value["S"] for name, value in key.items()}


def check_position(position: Position | None, expected: Mapping[str, str], fields: tuple[str, ...]) -> None:
    """A position must name exactly the listing's key fields, inside the caller's partition.

    `expected` maps a field to the value it must equal, or (for names ending in "^") a prefix.
    """
    if position is None:
        return
    if set(position) != set(fields) or not all(isinstance(v, str) and v for v in position.values()):
        raise invalid_cursor()
    for name, value in expected.items():
        ok = position[name[:-1]].startswith(value) if name.endswith("^") else position[name] == value
        if not ok:
            raise invalid_cursor()


def invalid_cursor() -> InvalidCursor:
    message = "the cursor does not belong to this listing"
    return InvalidCursor(message, details=[{"field": "cursor", "message": message}])
