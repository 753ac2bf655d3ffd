"""`--watch`: follow a run's events with live per-step progress until the run ends."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from workflows_cli.client import ApiError, Client
from workflows_cli.events import (
    TERMINAL_EVENTS,
    TERMINAL_STATUSES,
    Pacer,
    approved_by,
    awaited_signals,
    delivered_text,
    delivery,
    describe,
    outcome_code,
    pages,
    short_of_quorum,
)

STATE_STYLES = {
    "pending": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "waiting for approval": "magenta",
    "waiting for signals": "magenta",
    "completed": "green",
    "delivered": "green",
    "not delivered": "yellow",
    "not run": "dim",
    "approved": "green",
    "rejected": "red",
    "failed": "red",
    "timed out": "red",
    "cancelled": "yellow",
}


@dataclass
class StepState:
    step_id: str
    step_type: str = ""
    state: str = "pending"
    attempt: int = 1
    note: str = ""


@dataclass
class Progress:
    """Each step's state as the events tell it (steps of the definition first, in order)."""

    run_id: str
    run_status: str = "queued"
    steps: dict[str, StepState] = field(default_factory=dict)

    def plan(self, definition: dict[str, Any]) -> None:
        for step in definition.get("steps") or []:
            if isinstance(step, dict) and isinstance(step.get("id"), str):
                self.steps.setdefault(step["id"], StepState(step["id"], str(step.get("type", ""))))

    def _step(self, step_id: str) -> StepState:
        return self.steps.setdefault(step_id, StepState(step_id))

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event_type")
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        assert isinstance(payload, dict)
        step_id = event.get("step_id")
        if kind == "approval_granted" and short_of_quorum(payload):
            # One approval of several: the run and its step wait for the rest.
            if isinstance(step_id, str):
                self._step(step_id).note = f"approved {approved_by(payload)}"
            return
        run_states = {
            "run_started": "running",
            "run_paused": "paused",
            "run_resumed": "running",
            "run_completed": "succeeded",
            "run_failed": "failed",
            "run_cancelled": "cancelled",
            "waiting_approval": "waiting_approval",
            "approval_granted": "running",
        }
        if kind in run_states:
            self.run_status = run_states[str(kind)]
            self._settle(ended=kind in TERMINAL_EVENTS)
        if kind == "run_cancelled" and isinstance(payload.get("step_id"), str):
            step_id = payload["step_id"]
            if self._step(step_id).state not in ("completed", "approved", "failed", "rejected"):
                self._step(step_id).state = "cancelled"
            return
        if not isinstance(step_id, str):
            return
        step = self._step(step_id)
        step_states = {
            "step_started": "running",
            "step_completed": "completed",
            "step_failed": "failed",
            "step_timeout": "timed out",
            "step_retrying": "retrying",
            "waiting_approval": "waiting for approval",
            "waiting_signal": "waiting for signals",
            "approval_granted": "approved",
            "approval_rejected": "rejected",
        }
        # A decision stays on show: the step's own completion (or failure) follows it.
        decided = (kind, step.state) in (("step_completed", "approved"), ("step_failed", "rejected"))
        if kind in step_states and not decided:
            step.state = step_states[str(kind)]
        if kind == "step_started":
            step.step_type = str(payload.get("step_type") or step.step_type)
            if isinstance(payload.get("attempt"), int):
                step.attempt = payload["attempt"]
            step.note = ""
        elif kind == "step_completed" and (output := delivery(payload)) is not None:
            step.state = "delivered" if output["delivered"] else "not delivered"
            step.note = delivered_text(output).removeprefix(step.state).lstrip(":; ")
        elif kind == "waiting_approval":
            step.note = ""
        elif kind == "waiting_signal":
            step.note = awaited_signals(payload)
        elif kind == "signal_received":
            step.note = f"received {payload.get('name', '?')}"
        elif kind == "children_started":
            step.note = "children started"
        elif kind == "child_ended":
            step.note = f"{payload.get('ended', '?')} ended, {payload.get('running', '?')} running"
        elif kind == "approval_granted":
            step.note = approved_by(payload)
        elif kind == "approval_rejected":
            step.note = f"by {payload.get('approver') or 'someone'}"
        elif kind in ("step_failed", "step_timeout", "step_retrying"):
            error = payload.get("error")
            step.note = str(error.get("code", "")) if isinstance(error, dict) else ""

    def _settle(self, *, ended: bool) -> None:
        """Once the run has ended, the steps it never reached read `not run` (until a retry)."""
        before, after = ("pending", "not run") if ended else ("not run", "pending")
        for step in self.steps.values():
            if step.state == before:
                step.state = after

    def ended(self) -> None:
        self._settle(ended=True)

    def approve_command(self, step_id: str) -> str:
        return f"workflows approve {self.run_id} {step_id}"

    def waiting(self) -> list[str]:
        """The steps waiting for a decision now."""
        if self.run_status != "waiting_approval":
            return []
        return [s.step_id for s in self.steps.values() if s.state == "waiting for approval"]

    def __rich__(self) -> RenderableType:
        return self.render(title=True)

    def render(self, *, title: bool) -> RenderableType:
        """The steps' table and, under it, the command that decides each waiting step: on a
        line of its own, since a table cell in a narrow terminal would cut the run id short."""
        commands = [Text(f"  {self.approve_command(step_id)}") for step_id in self.waiting()]
        return Group(self.table(title=title), *commands)

    def table(self, *, title: bool) -> Table:
        heading = f"run {self.run_id}: {self.run_status}" if title else None
        table = Table(title=heading, title_justify="left", box=None)
        for column in ("step", "type", "state", "attempt", ""):
            table.add_column(column, no_wrap=column != "")
        for step in self.steps.values():
            table.add_row(
                step.step_id,
                step.step_type,
                Text(step.state, style=STATE_STYLES.get(step.state, "")),
                "" if step.state in ("pending", "not run") else str(step.attempt),
                step.note,
            )
        return table


def _summary(run: dict[str, Any]) -> Text:
    status = str(run.get("status"))
    text = Text(f"run {run.get('run_id')} ")
    text.append(status, style=STATE_STYLES.get({"succeeded": "completed"}.get(status, status), "bold"))
    error = run.get("error")
    if isinstance(error, dict):
        step = f" (step {error['step_id']})" if error.get("step_id") else ""
        text.append(f": {error.get('code')}: {error.get('message')}{step}")
    elif status == "succeeded" and run.get("outputs") is not None:
        text.append(f"; outputs {json.dumps(run['outputs'], sort_keys=True, ensure_ascii=False)}")
    return text


def watch(
    client: Client,
    run_id: str,
    out: Console,
    err: Console,
    *,
    json_lines: bool = False,
    pacer: Pacer | None = None,
) -> int:
    """Follows the run until it ends; the exit code is its outcome (events.outcome_code)."""
    progress = Progress(run_id)
    try:
        progress.plan(client.run_definition(run_id))
    except ApiError as exc:
        if exc.status != 404:
            raise

    def notice(message: str) -> None:
        err.print(Text(f"warning: {message}", style="yellow"))

    # The live table is for a terminal; a pipe or a file gets the event lines alone.
    live = Live(progress, console=out, refresh_per_second=4) if out.is_terminal and not json_lines else None
    if live is not None:
        live.start()
    try:
        run = _follow(client, run_id, progress, out, live, json_lines=json_lines, pacer=pacer, notice=notice)
    finally:
        if live is not None:
            live.stop()
    if json_lines:
        _json_line(run)
    else:
        out.print(_summary(run))
    return outcome_code(run)


def _json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _follow(
    client: Client,
    run_id: str,
    progress: Progress,
    out: Console,
    live: Live | None,
    *,
    json_lines: bool,
    pacer: Pacer | None,
    notice: Callable[[str], None],
) -> dict[str, Any]:
    """Prints each event until the run has ended; returns the ended run."""
    for page in pages(client, run_id, follow=True, pacer=pacer, notice=notice):
        ended = False
        for event in page.get("events") or []:
            progress.apply(event)
            ended = ended or event.get("event_type") in TERMINAL_EVENTS
            if json_lines:
                _json_line(event)
            else:
                stamp = str(event.get("created_at", ""))[11:19]
                out.print(Text(f"{stamp}  {describe(event)}"))
                step_id = event.get("step_id")
                if live is None and event.get("event_type") == "waiting_approval" and step_id:
                    # Without the live table, on its own line (whole, however narrow the lines).
                    out.print(Text(f"{'':8}  {progress.approve_command(str(step_id))}"))
        if live is not None:
            live.refresh()
        if ended and not page.get("has_more"):
            # A failed run may have been retried since: only its status says it has ended.
            run = client.run(run_id)
            if run.get("status") in TERMINAL_STATUSES:
                return run
    raise AssertionError("a followed event stream does not end")
