"""Key-range Query pages of a fixed size, with a FilterExpression and a resumable position.

A position is the key of the last item returned (table key plus index key), as plain strings:
the edge turns it into an opaque cursor and hands it back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import error_code, translate
from workflows.domain.paging import Position
from workflows.errors import InvalidCursor

# A filtered listing stops after this many requests and returns what it has (maybe a short or
# empty page with a position): the cost of one call stays bounded however sparse the matches.
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
