"""A run's events: paging through them, following them, and saying what each one means."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from workflows_cli.client import LONG_POLL_SECONDS, ApiError, Client, Unreachable

TERMINAL_EVENTS = frozenset({"run_completed", "run_failed", "run_cancelled"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# Between two requests that found nothing new. A service that long-polls holds each request
# until there is news, so this never adds latency; one that answers at once is not hammered.
MIN_POLL_INTERVAL = 1.0
PAGE_SIZE = 1000
# While following, this many failed requests in a row (waits 1, 2, 4, ... up to 15 s) give up.
FOLLOW_RETRIES = 6
BACKOFF_CAP_SECONDS = 15.0


class Pacer:
    """Keeps at least `interval` seconds between the starts of consecutive paced requests."""

    def __init__(
        self,
        interval: float = MIN_POLL_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None

    def start(self, *, paced: bool) -> None:
        """Called before each request; `paced` when the previous one brought nothing new."""
        now = self._clock()
        if paced and self._last is not None:
            remaining = self._last + self.interval - now
            if remaining > 0:
                self._sleep(remaining)
                now = self._clock()
        self._last = now

    def pause(self, seconds: float) -> None:
        self._sleep(seconds)


def backoff_seconds(failures: int) -> float:
    """The wait before retrying after `failures` failed requests in a row: 1, 2, 4, ... 15 s."""
    return min(2.0 ** (failures - 1), BACKOFF_CAP_SECONDS)


def transient(exc: Exception) -> bool:
    """Worth retrying while following: no answer, throttling, or the service's own failure."""
    return isinstance(exc, Unreachable) or (
        isinstance(exc, ApiError) and (exc.status in (429, 502, 503, 504))
    )


def pages(
    client: Client,
    run_id: str,
    *,
    since: int = 0,
    follow: bool = False,
    types: list[str] | None = None,
    pacer: Pacer | None = None,
    wait: int = LONG_POLL_SECONDS,
    notice: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every page of events after `since`. Without `follow`, it ends once caught up; with it,
    it long-polls for more (`wait` seconds a request) until the consumer stops, riding out a
    few transient failures in a row (each announced through `notice`)."""
    pacer = pacer or Pacer()
    paced = False
    failures = 0
    while True:
        pacer.start(paced=paced)
        try:
            page = client.events(
                run_id, since=since, limit=PAGE_SIZE, types=types, wait=wait if follow else None
            )
        except (Unreachable, ApiError) as exc:
            if not follow or not transient(exc) or failures >= FOLLOW_RETRIES:
                raise
            failures += 1
            seconds = backoff_seconds(failures)
            if notice is not None:
                notice(f"{exc}; retrying in {seconds:g} s ({failures}/{FOLLOW_RETRIES})")
            pacer.pause(seconds)
            paced = False
            continue
        failures = 0
        yield page
        since = int(page.get("next_since", since))
        if page.get("has_more"):
            paced = False
            continue
        if not follow:
            return
        paced = not page.get("events")


def _error(payload: dict[str, Any]) -> str:
    error = payload.get("error")
    if isinstance(error, dict):
        return f"{error.get('code', 'error')}: {error.get('message', '')}".rstrip(": ")
    return ""


def quorum(payload: dict[str, Any]) -> tuple[int, int] | None:
    """An approval's (approvals so far, approvals required) when its payload counts them."""
    approvals, required = payload.get("approvals"), payload.get("required_approvals")
    if type(approvals) is int and type(required) is int:
        return approvals, required
    return None


def short_of_quorum(payload: dict[str, Any]) -> bool:
    """An approval_granted that leaves its step waiting for more approvers."""
    counted = quorum(payload)
    return counted is not None and counted[0] < counted[1]


def approved_by(payload: dict[str, Any]) -> str:
    """Who approved, with the count when the step needs several approvers: `by alice (1 of 2)`."""
    text = f"by {payload.get('approver') or 'someone'}"
    counted = quorum(payload)
    if counted is not None and counted[1] > 1:
        text += f" ({counted[0]} of {counted[1]})"
    return text


def _decision(payload: dict[str, Any], *, granted: bool) -> str:
    # A rejection's count is of the approvals before it: only an approval is "n of m".
    text = approved_by(payload) if granted else f"by {payload.get('approver') or 'someone'}"
    if payload.get("comment"):
        text += f": {payload['comment']}"
    if payload.get("fields"):
        text += f" {json.dumps(payload['fields'], sort_keys=True)}"
    return text


def delivery(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A webhook step's output, from its step_completed payload: whether its call was
    delivered and, when not, the DLQ row it was handed to (`on_delivery_failure: dlq`)."""
    output = payload.get("output")
    if "delivery" in payload and isinstance(output, dict) and isinstance(output.get("delivered"), bool):
        return output
    return None


def delivered_text(output: dict[str, Any]) -> str:
    """`delivered to hooks.example.com (HTTP 200)`, or `not delivered to ...: <why>; handed to
    the DLQ (row <id>)`: the run goes on either way, so `completed` would hide the second."""
    status = output.get("status_code")
    to = f" to {output['host']}" if output.get("host") else ""
    if output.get("delivered"):
        return f"delivered{to}" + (f" (HTTP {status})" if status else "")
    why = output.get("error") or (f"HTTP {status}" if status else "")
    return (
        f"not delivered{to}"
        + (f": {why}" if why else "")
        + f"; handed to the DLQ (row {output.get('dlq_id')})"
    )


def _child(child: dict[str, Any]) -> str:
    """`branch fast` or `item 7`: which child of a parallel or a map."""
    if child.get("branch"):
        return f"branch {child['branch']}"
    return f"item {child.get('index', '?')}"


def _children(children: list[Any]) -> str:
    """`branch a, branch b` or `items 0-9`: the children one event started."""
    places = [c for c in children if isinstance(c, dict)]
    if places and all(not c.get("branch") for c in places) and len(places) > 1:
        return f"items {places[0].get('index', '?')}-{places[-1].get('index', '?')}"
    return ", ".join(_child(c) for c in places) or "no child"


def awaited_signals(payload: dict[str, Any]) -> str:
    """`payment.settled (order_id="A-1")`, or `all of: a, b`: what a `waiting_signal` waits for."""
    names = []
    for awaited in payload.get("signals") or []:
        if not isinstance(awaited, dict):
            continue
        match = awaited.get("match") if isinstance(awaited.get("match"), dict) else {}
        assert isinstance(match, dict)
        fields = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in match.items())
        names.append(f"{awaited.get('name', '?')}" + (f" ({fields})" if fields else ""))
    listed = ", ".join(names) or "signals"
    return f"all of: {listed}" if payload.get("mode") == "all" and len(names) > 1 else listed


# A step's own events: on an item (a branch) run inside its parent run they name the item.
_STEP_EVENTS = frozenset({"step_started", "step_completed", "step_failed", "step_timeout", "step_retrying"})


def describe(event: dict[str, Any]) -> str:
    """One line a person reads: what happened, to which step."""
    kind = str(event.get("event_type", "?"))
    step = event.get("step_id")
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    attempt = payload.get("attempt")
    again = f", attempt {attempt}" if isinstance(attempt, int) and attempt > 1 else ""
    if kind == "run_started":
        return "run started"
    if kind in _STEP_EVENTS and ("index" in payload or "branch" in payload):
        # A step of an item (a branch) run inside its parent run: named by its item.
        step = f"{step} ({_child(payload)})"
    if kind == "step_started":
        return f"step {step} started ({payload.get('step_type', '?')}{again})"
    if kind == "step_completed":
        output = delivery(payload)
        return f"step {step} " + (delivered_text(output) if output is not None else "completed")
    if kind == "step_failed":
        return f"step {step} failed: {_error(payload)}"
    if kind == "step_timeout":
        return f"step {step} timed out" + (f": {_error(payload)}" if _error(payload) else "")
    if kind == "step_retrying":
        delay = payload.get("delay_seconds")
        after = f" in {delay:g} s" if isinstance(delay, int | float) else ""
        return (
            f"step {step} will retry{after} (attempt {payload.get('next_attempt', '?')}): {_error(payload)}"
        )
    if kind == "waiting_approval":
        text = f"step {step} waits for approval"
        if payload.get("instructions"):
            text += f": {payload['instructions']}"
        if payload.get("assignees"):
            text += f" (assignees: {', '.join(map(str, payload['assignees']))})"
        return text
    if kind == "waiting_signal":
        return f"step {step} waits for {awaited_signals(payload)}" + (
            f" until {payload['timeout_at']}" if payload.get("timeout_at") else ""
        )
    if kind == "signal_received":
        return f"step {step} received signal {payload.get('name', '?')} (id {payload.get('id', '?')})"
    if kind == "children_started":
        children = payload.get("children")
        return f"step {step} started {_children(children if isinstance(children, list) else [])}"
    if kind == "child_ended":
        error = f": {_error(payload)}" if payload.get("error") else ""
        return (
            f"step {step}: {_child(payload)} {payload.get('status', '?')}{error}"
            f" ({payload.get('ended', '?')} ended, {payload.get('running', '?')} running)"
            f", run {payload.get('run_id', '?')}"
        )
    if kind == "approval_granted":
        return f"step {step} approved {_decision(payload, granted=True)}"
    if kind == "approval_rejected":
        return f"step {step} rejected {_decision(payload, granted=False)}"
    if kind == "run_paused":
        return f"run paused by {payload.get('actor', '?')}"
    if kind == "run_resumed":
        return f"run resumed by {payload.get('actor', '?')}"
    if kind == "cancel_acknowledged":
        return f"cancel requested by {payload.get('actor', '?')}"
    if kind == "run_cancelled":
        return "run cancelled"
    if kind == "run_completed":
        return "run completed"
    if kind == "run_failed":
        return f"run failed: {_error(payload)}"
    if kind == "webhook_delivery":
        status = payload.get("status_code")
        text = f"webhook to {payload.get('host') or '?'}: {payload.get('outcome', '?')}"
        text += f" (HTTP {status})" if status else ""
        return text + (f": {payload['error']}" if payload.get("error") else "")
    compact = json.dumps(payload, sort_keys=True)
    return f"{kind}" + (f" step {step}" if step else "") + (f" {compact}" if payload else "")


def outcome_code(run: dict[str, Any]) -> int:
    """The exit code a finished run gives `--watch`: 0 succeeded, 1 failed, 2 cancelled or
    rejected by a person (its error is approval_rejected)."""
    status = run.get("status")
    if status == "succeeded":
        return 0
    if status == "cancelled":
        return 2
    error = run.get("error") if isinstance(run.get("error"), dict) else {}
    assert isinstance(error, dict)
    return 2 if error.get("code") == "approval_rejected" else 1
