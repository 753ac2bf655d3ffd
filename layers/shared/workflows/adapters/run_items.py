"""The items of RunsTable and RunEventsTable as the run repositories share them: keys, the run
item <-> Run conversion, and the packing of the fields that grow with a run (docs/storage.md).

- `runs.py` writes the run item (the commit protocol) and the events items, and reads both;
- `run_outputs.py` writes and reads outputs kept apart, under the run's key;
- `run_index.py` reads runs back through the table's indexes (and says what keys a run item
  carries for them).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from workflows.adapters.aws import aws_errors
from workflows.adapters.dynamo import check_owner, dumps, from_item, loads, to_item
from workflows.domain.run import Run, RunEvent
from workflows.errors import NotFound

RUN_SK = "RUN"
DEFINITION_SK = "DEFINITION"
# Sorts before "DEFINITION" and "RUN": the run's Query reads from "DEFINITION" on.
OUTPUT_SK = "#OUTPUT#"
# Fields stored as JSON strings (absent when None).
_JSON_FIELDS = (
    "inputs",
    "outputs",
    "error",
    "step_outputs",
    "last_output",
    "approval",
    "signal_wait",
    "child",
    "scope",
    "fanout",
)
# The run item is rewritten by every commit and billed per started KB: the fields that grow with
# the run (every step's output, the latest commit's events, a map's record of ended items) are
# zlib-compressed binary past this many bytes, which keeps a 10-step run's item under 1 KB.
_PACKED_FIELDS = ("step_outputs", "pending_events", "fanout")
_PACK_ABOVE = 200
# Counters left out of the run item while they have their starting value.
_OMITTED_AT_START = {"sweeps": 0, "depth": 0, "attempt": 1, "steps_executed": 0, "outputs_dropped": False}
_HEX = re.compile(r"[0-9a-f]{64}")


def run_pk(tenant_id: str, run_id: str) -> str:
    return f"{tenant_id}#{run_id}"


def snapshot_pk(tenant_id: str, digest: str) -> str:
    return f"{tenant_id}#def#{digest}"


def run_key(tenant_id: str, run_id: str) -> dict[str, Any]:
    """The run item's key."""
    return {"pk": {"S": run_pk(tenant_id, run_id)}, "sk": {"S": RUN_SK}}


def run_item(run: Run, pending: Sequence[RunEvent] = (), *, expires_at: int) -> dict[str, Any]:
    """The run's own fields as the run item stores them, with the events not yet in the events
    table (`pending_events`); the keys the indexes read are added by the writer
    (run_index.index_keys). What the item can say in fewer bytes it does (run_from reads it
    back): the run id is the key's, `last_output` is the last of `step_outputs` when it is,
    counters at their start are left out, and the definition's hash is binary."""
    values = run.model_dump(mode="json")
    del values["run_id"]  # the key's
    outputs = values["step_outputs"]
    last_output = values["last_output"]
    for field, start in _OMITTED_AT_START.items():
        if values[field] == start:
            values[field] = None
    digest = values.pop("definition_hash")
    for field in _JSON_FIELDS:
        values[field] = None if values[field] is None else dumps(values[field])
    if outputs and last_output == next(reversed(outputs.values())):
        values["last_output"] = None  # the last of the step outputs: read from there
    elif outputs:
        values["last_output"] = dumps(last_output)  # stored, `null` too
    values.update(
        pk=run_pk(run.tenant_id, run.run_id),
        sk=RUN_SK,
        pending_events=dump_events(pending) if pending else None,
        expires_at=expires_at,
    )
    item = to_item(values)
    for field in _PACKED_FIELDS:
        if field in item and len(item[field]["S"]) > _PACK_ABOVE:
            item[field] = {"B": zlib.compress(item[field]["S"].encode(), 6)}
    if digest is not None:
        item["definition_hash"] = {"B": bytes.fromhex(digest)} if _HEX.fullmatch(digest) else {"S": digest}
    return item


def run_from(item: Mapping[str, Any]) -> Run:
    """The run a run item holds, the events it carries as `latest_events` (items written before
    the shorter forms read the same)."""
    digest = item.get("definition_hash")
    item = {
        name: {"S": zlib.decompress(value["B"]).decode()} if "B" in value else value
        for name, value in item.items()
        if name != "definition_hash"
    }
    values = from_item(item)
    for field in _JSON_FIELDS:
        values[field] = loads(values.get(field))
    values["step_outputs"] = values["step_outputs"] or {}
    values["inputs"] = values["inputs"] or {}
    values.setdefault("run_id", values["pk"].rpartition("#")[2])
    if "last_output" not in item and values["step_outputs"]:
        values["last_output"] = next(reversed(values["step_outputs"].values()))
    for field, start in _OMITTED_AT_START.items():
        values.setdefault(field, start)
    if digest is not None:
        values["definition_hash"] = digest["B"].hex() if "B" in digest else digest["S"]
    pending = load_events(values.pop("pending_events", None))
    run = Run.model_validate(values)
    run.latest_events = pending
    return run


def read_run(client: Any, table: str, tenant_id: str, run_id: str) -> Run:
    """The run item, strongly consistent; NotFound for a missing run or another tenant's."""
    with aws_errors():
        response = client.get_item(TableName=table, Key=run_key(tenant_id, run_id), ConsistentRead=True)
    if "Item" not in response:
        raise NotFound(f"run '{run_id}' not found")
    run = run_from(response["Item"])
    check_owner(tenant_id, run.tenant_id, "run")
    return run


def events_item(pk: str, events: Sequence[RunEvent], *, expires_at: int) -> dict[str, Any]:
    """The events table item of one commit: keyed by its last sequence number, so a Query for
    `event_seq > since` starts with the commit that holds `since + 1`. The events are
    zlib-compressed binary past a few hundred bytes, as in the run item: the history is stored
    (and backed up) for the whole retention, and read and written by the KB."""
    body = dump_events(events)
    item = to_item(
        {
            "pk": pk,
            "event_seq": events[-1].event_seq,
            "first_seq": events[0].event_seq,
            "events": body,
            "expires_at": expires_at,
        }
    )
    if len(body) > _PACK_ABOVE:
        item["events"] = {"B": zlib.compress(body.encode(), 6)}
    return item


def stored_events(item: Mapping[str, Any]) -> list[RunEvent]:
    """The events of one events-table item (compressed or, as stored before, plain JSON)."""
    value = item["events"]
    return load_events(zlib.decompress(value["B"]).decode() if "B" in value else value["S"])


def dump_events(events: Sequence[RunEvent]) -> str:
    return dumps([event.model_dump(mode="json") for event in events])


def load_events(value: str | None) -> list[RunEvent]:
    return [RunEvent.model_validate(event) for event in loads(value) or []]


__all__ = [
    "DEFINITION_SK",
    "OUTPUT_SK",
    "RUN_SK",
    "events_item",
    "read_run",
    "run_from",
    "run_item",
    "run_key",
    "run_pk",
    "snapshot_pk",
    "stored_events",
]
