"""Signals: named, tenant-scoped messages a run can wait for (`wait_for_signal`).

A signal is sent once per `id` (a repeat with the same id is the same signal) and kept for a day,
so a run that starts waiting after it was sent still counts it when its `lookback_seconds`
reaches back that far. A run waiting for signals holds a `SignalWait` (`Run.signal_wait`): the
signals it expects, each with the values some fields of the signal's data must have (rendered
from the run's templates when the wait began, so matching a signal renders nothing), what it has
received so far, and the moment from which a signal counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from workflows.domain.json import JsonValue

# Signal names and ids: what a URL path or a DynamoDB key holds without escaping.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
MAX_DATA_BYTES = 16 * 1024
MAX_LOOKBACK_SECONDS = 86_400
# Kept this long after it was sent: the longest lookback.
KEEP_SECONDS = MAX_LOOKBACK_SECONDS
MAX_AWAITED = 10
MAX_MATCH_FIELDS = 10
MAX_FIELD_DEPTH = 8


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1 to 128 letters, digits and _ . : - (starting with a letter or digit)")
    return value


@dataclass(frozen=True)
class Signal:
    name: str
    signal_id: str
    data: dict[str, Any]
    sent_at: str
    # Sent to one run (`POST /runs/{id}/signals`); None: to every run of the tenant waiting for it.
    run_id: str | None = None

    def same_as(self, other: Signal) -> bool:
        """Whether `other` (sent with the same id) is this signal again, not another one."""
        return (self.name, self.data, self.run_id) == (other.name, other.data, other.run_id)


class Awaited(TypedDict):
    name: str
    # Dotted paths into the signal's data -> the value each must have.
    match: dict[str, JsonValue]


class Received(TypedDict):
    id: str
    data: dict[str, Any]
    sent_at: str


class SignalWait(TypedDict):
    step_id: str
    mode: Literal["any", "all"]
    signals: list[Awaited]
    # A signal counts when it was sent at or after this moment (the wait's start, less its lookback).
    since: str
    timeout_at: str
    received: dict[str, Received]
    # Ids the step took on its previous pass (a wait in a loop): not taken again.
    taken: NotRequired[list[str]]


def field_value(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """The value at a dotted path (`order.id`) of the data: (found, value)."""
    value: Any = data
    for part in path.split(".")[:MAX_FIELD_DEPTH]:
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _matches(awaited: Awaited, signal: Signal) -> bool:
    if awaited["name"] != signal.name:
        return False
    return all(field_value(signal.data, path) == (True, value) for path, value in awaited["match"].items())


def accepts(wait: SignalWait, signal: Signal, run_id: str) -> str | None:
    """The awaited name `signal` satisfies and that is still missing, or None (another name, a
    field that does not match, sent before the wait counts or after its timeout, to another run,
    received already, or taken by the step's previous pass)."""
    if signal.run_id is not None and signal.run_id != run_id:
        return None
    if signal.sent_at < wait["since"] or signal.sent_at > wait["timeout_at"]:
        return None  # before the wait counts, or after it timed out (a paused run's wait)
    if signal.name in wait["received"] or signal.signal_id in wait.get("taken", []):
        return None
    if any(received["id"] == signal.signal_id for received in wait["received"].values()):
        return None
    for awaited in wait["signals"]:
        if _matches(awaited, signal):
            return signal.name
    return None


def satisfied(wait: SignalWait) -> bool:
    names = {awaited["name"] for awaited in wait["signals"]}
    got = names & set(wait["received"])
    return bool(got) if wait["mode"] == "any" else got == names


def waiting_for(wait: SignalWait) -> list[str]:
    """The names still missing."""
    return sorted({awaited["name"] for awaited in wait["signals"]} - set(wait["received"]))


def output(wait: SignalWait) -> dict[str, Any]:
    """The step's output: every signal received, by name."""
    return {"signals": {name: dict(received) for name, received in sorted(wait["received"].items())}}


def taken_before(previous_output: object) -> tuple[list[str], str | None]:
    """What a wait step took on its previous pass (a step in a loop), from its output: the ids,
    and when the latest of them was sent (a later pass counts only signals sent from then on)."""
    if not isinstance(previous_output, dict) or not isinstance(previous_output.get("signals"), dict):
        return [], None
    entries = [entry for entry in previous_output["signals"].values() if isinstance(entry, dict)]
    ids = [entry["id"] for entry in entries if isinstance(entry.get("id"), str)][:MAX_AWAITED]
    moments = [entry["sent_at"] for entry in entries if isinstance(entry.get("sent_at"), str)]
    return ids, max(moments, default=None)
