"""`make run`'s activity lines: one per step outcome and run ending, as the dispatcher works.

After each dispatcher invocation the runs its messages named are read for events past the last
one shown (one events query per run and invocation: a local-stack convenience, not something
the deployed service does). A webhook step says whether it delivered or handed its call to the
DLQ; a step waiting for approval is followed by the command that approves it (the whole run id,
on a line of its own); a run's ending, by the steps it never ran. DEVSTACK_ACTIVITY=off turns it
off.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TextIO

Handler = Callable[[dict[str, Any], Any], Any]

SHOWN = {
    "step_completed": "completed",
    "step_failed": "failed",
    "step_timeout": "timed out",
    "step_retrying": "retrying",
    "waiting_approval": "waits for approval",
    "approval_granted": "approved",
    "approval_rejected": "rejected",
    "waiting_signal": "waits for signals",
    "signal_received": "received a signal",
    "run_completed": "succeeded",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_paused": "paused",
}
ENDINGS = frozenset({"run_completed", "run_failed", "run_cancelled"})
REMEMBERED_RUNS = 1000


class ActivityPrinter:
    def __init__(self, runs: Any, out: TextIO = sys.stdout) -> None:
        self._runs = runs  # a RunLog (workflows.ports)
        self._out = out
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def around(self, handler: Handler) -> Handler:
        def handle(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            finally:
                for tenant_id, run_id in _runs_of(event):
                    self.show(tenant_id, run_id)

        return handle

    def show(self, tenant_id: str, run_id: str) -> None:
        key = (tenant_id, run_id)
        with self._lock:
            since = self._seen.get(key, 0)
        try:
            page = self._runs.list_events(tenant_id, run_id, since=since, limit=100, types=tuple(SHOWN))
        except Exception:  # noqa: BLE001 (activity lines must never disturb the stack)
            return
        lines = []
        short = f"  run {run_id[:8]}"
        for event in page.events:
            what = SHOWN[event.event_type] + _decided_by(event.event_type, event.payload)
            if event.event_type in ENDINGS:
                lines += [f"{short}  step {step_id} not run" for step_id in self._not_run(tenant_id, run_id)]
            if event.event_type.startswith("run_"):
                lines.append(f"{short}  {what}{_error(event.payload)}")
                continue
            if event.event_type == "step_completed":
                what = _delivery(event.payload) or what
            lines.append(f"{short}  step {event.step_id} {what}{_error(event.payload)}")
            if event.event_type == "waiting_approval":
                lines.append(f"{' ' * len(short)}  workflows approve {run_id} {event.step_id}")
        with self._lock:
            if page.events:
                self._seen[key] = max(self._seen.get(key, 0), page.events[-1].event_seq)
                self._seen.move_to_end(key)
                while len(self._seen) > REMEMBERED_RUNS:
                    self._seen.popitem(last=False)
            if lines:
                print("\n".join(lines), file=self._out, flush=True)

    def _not_run(self, tenant_id: str, run_id: str) -> list[str]:
        """The steps of the run's definition that never started, in the definition's order."""
        try:
            _, definition = self._runs.get_with_definition(tenant_id, run_id)
            started: set[str] = set()
            since = 0
            while True:
                page = self._runs.list_events(
                    tenant_id, run_id, since=since, limit=100, types=("step_started",)
                )
                started.update(event.step_id for event in page.events if event.step_id)
                if not page.has_more:
                    break
                since = page.next_since
        except Exception:  # noqa: BLE001 (activity lines must never disturb the stack)
            return []
        return [step.id for step in definition.steps if step.id not in started]


def _delivery(payload: dict[str, Any]) -> str:
    """A webhook step's outcome: the run goes on after a call handed to the DLQ, so
    `completed` alone would hide that it was not delivered."""
    output = payload.get("output")
    if (
        "delivery" not in payload
        or not isinstance(output, dict)
        or not isinstance(output.get("delivered"), bool)
    ):
        return ""
    to = f" to {output['host']}" if output.get("host") else ""
    status = output.get("status_code")
    if output["delivered"]:
        return f"delivered{to}" + (f" (HTTP {status})" if status else "")
    why = output.get("error") or (f"HTTP {status}" if status else "")
    return (
        f"not delivered{to}"
        + (f": {why}" if why else "")
        + f"; handed to the DLQ (row {output.get('dlq_id')})"
    )


def _decided_by(event_type: str, payload: dict[str, Any]) -> str:
    """` by alice`; an approval of a step needing several approvers counts: ` by alice (1 of 2)`."""
    if event_type not in ("approval_granted", "approval_rejected"):
        return ""
    text = f" by {payload.get('approver') or 'someone'}"
    approvals, required = payload.get("approvals"), payload.get("required_approvals")
    counted = type(approvals) is int and type(required) is int and required > 1
    if event_type == "approval_granted" and counted:
        text += f" ({approvals} of {required})"
    return text


def _error(payload: dict[str, Any]) -> str:
    error = payload.get("error")
    if isinstance(error, dict) and error.get("code"):
        return f" ({error['code']})"
    return ""


def _runs_of(event: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
            pair = (str(body["tenant_id"]), str(body["run_id"]))
        except (KeyError, TypeError, ValueError):
            continue
        if pair not in found:
            found.append(pair)
    return found
