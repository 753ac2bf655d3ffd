"""12. Signals: what a `wait_for_signal` step matched by `POST /signals` costs, per signal matched.

Runs are driven as bench/cost.py drives them: the submission and every signal through the API
function's handler, the dispatcher function's handler fed from the dispatch queue the way
Lambda's SQS event source feeds it, on in-process moto; the meter counts every request and
capacity unit, and bench/cost.py's `Usage` prices them.

Scenarios, each a run of one `wait_for_signal` step waiting for signals matched on its order
(an input), as a client causes it:
- `any`: one signal (`mode: any`), sent with `POST /signals` once the run waits;
- `all`: two signals of two names (`mode: all`), each sent with `POST /signals` once it waits;
- `lookback`: one signal sent before the run is submitted; the wait (`lookback_seconds`) finds it
  when it begins.
Each scenario's definition runs twice and the second run is measured (a definition's snapshot is
stored by its first run). Before the measured run, a signal that matches nobody removes the
waiters the first run left (a run that took its signal leaves its waiter for the next signal of
the name to remove): the figures are a signal's own; what a left waiter adds is measured apart.

Per scenario: the whole run from its first request to its end, against a one-step `log` run
measured the same way; the difference, divided by the signals matched, is the cost per signal
matched (the wait's own writes included: its waiter and its look back). The run is also split
where a client would see it: `wait` (for `any` and `all`: the submission until the run waits;
for `lookback`: the submission until its end) and `signal` (from the first `POST /signals` to
the run's end; for `lookback`: the signal sent to nobody yet).

Then a broadcast: BROADCAST_WAITERS runs wait on the same name, each for its own order, and one
`POST /signals` matches one of them: every waiter is read (a page of 25 per dispatch message, a
read of each run), which is what one signal costs when a name has many waiters.

The dispatcher works a batch's records one after another, as in bench/side_by_side.py: moto's
backends take no locks, and a lost race's extra reads and writes would make figures vary.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench import common, cost
from bench.meter import Meter

TERMINAL = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 0.05
RUN_DEADLINE_SECONDS = 60.0
WAIT_TIMEOUT_SECONDS = 86_400  # a day, as in docs/signals.md: a long wait, no chain of hops
LOOKBACK_SECONDS = 600
BROADCAST_WAITERS = 100

_KINDS = (
    ("PutItem", "dynamodb.PutItem"),
    ("UpdateItem", "dynamodb.UpdateItem"),
    ("DeleteItem", "dynamodb.DeleteItem"),
    ("GetItem", "dynamodb.GetItem"),
    ("Query", "dynamodb.Query"),
    ("SQS sends", "sqs.messages_sent"),
)


def waits_for(name: str, *names: str, mode: str = "any", lookback: int = 0) -> dict[str, Any]:
    config: dict[str, Any] = {
        "signals": [{"name": n, "match": {"order": "{{ inputs.order }}"}} for n in (name, *names)],
        "timeout_seconds": WAIT_TIMEOUT_SECONDS,
    }
    if names:
        config["mode"] = mode
    if lookback:
        config["lookback_seconds"] = lookback
    return {
        "name": f"bench-signal-{mode}-{lookback}-{len(names) + 1}",
        "steps": [{"id": "wait", "type": "wait_for_signal", "config": config}],
    }


LOG1 = {"name": "bench-signal-log1", "steps": [{"id": "s1", "type": "log", "config": {"message": "one"}}]}
SCENARIOS: dict[str, tuple[dict[str, Any], tuple[str, ...], bool]] = {
    # definition, the names of the signals the client sends (one each), sent before the run?
    "any": (waits_for("bench.paid"), ("bench.paid",), False),
    "all": (waits_for("bench.packed", "bench.shipped", mode="all"), ("bench.packed", "bench.shipped"), False),
    "lookback": (waits_for("bench.ready", lookback=LOOKBACK_SECONDS), ("bench.ready",), True),
}


class Signals:
    """Submissions, signals and the dispatch queue, metered a phase at a time."""

    def __init__(self, driver: cost.Driver) -> None:
        self.driver = driver
        self._sequence = 0

    def order(self) -> str:
        self._sequence += 1
        return f"order-{self._sequence}"

    def begin(self, matched: int) -> cost.Usage:
        self.driver.meter.reset()
        return cost.Usage(steps=max(1, matched))

    def end(self, usage: cost.Usage, status: str = "") -> cost.Usage:
        usage.counts = self.driver.meter.snapshot()
        usage.status = status
        return usage

    def submit(self, usage: cost.Usage, definition: dict[str, Any], order: str) -> str:
        body = {"definition": definition, "inputs": {"order": order}}
        return str(self.driver.call_api(usage, "POST", "/runs", body)["run_id"])

    def send(self, usage: cost.Usage, name: str, order: str) -> dict[str, Any]:
        body = {"name": name, "id": f"{name}-{order}", "data": {"order": order}}
        return self.driver.call_api(usage, "POST", "/signals", body)

    def drain(self, usage: cost.Usage, run_id: str | None = None) -> str:
        """Deliver visible dispatch messages until none is left (a delayed one is invisible here)
        and, given a run, until it has ended."""
        deadline = time.monotonic() + RUN_DEADLINE_SECONDS
        status = ""
        while time.monotonic() < deadline:
            if self.driver.deliver(usage):
                continue
            if run_id is None:
                return ""
            status = self.driver.status(run_id)["status"]
            if status in TERMINAL:
                return status
            time.sleep(POLL_SECONDS)
        return status

    def waiting(self, run_id: str) -> bool:
        state = self.driver.status(run_id)
        return state["status"] == "running" and state["current_step_id"] == "wait"


def _one_run(s: Signals, definition: dict[str, Any], names: tuple[str, ...], early: bool) -> dict[str, Any]:
    """One run of a scenario, metered whole and in its two phases."""
    order = s.order()
    if early:
        signal = s.begin(len(names))
        for name in names:
            s.send(signal, name, order)
        s.drain(signal)
        signal = s.end(signal)
        wait = s.begin(1)
        run_id = s.submit(wait, definition, order)
        wait = s.end(wait, s.drain(wait, run_id))
        return {"whole": _sum(signal, wait, wait.status), "wait": wait, "signal": signal}
    wait = s.begin(1)
    run_id = s.submit(wait, definition, order)
    s.drain(wait)
    if not s.waiting(run_id):
        raise RuntimeError(f"run {run_id} is not waiting: {s.driver.status(run_id)}")
    wait = s.end(wait, "waiting")
    signal = s.begin(len(names))
    for name in names:
        s.send(signal, name, order)
        s.drain(signal)
    signal = s.end(signal, s.drain(signal, run_id))
    return {"whole": _sum(wait, signal, signal.status), "wait": wait, "signal": signal}


def _sum(a: cost.Usage, b: cost.Usage, status: str) -> cost.Usage:
    total = cost.Usage(steps=max(a.steps, b.steps), status=status)
    for key in set(a.counts) | set(b.counts):
        total.counts[key] = a.counts.get(key, 0) + b.counts.get(key, 0)
    for name in ("api_invocations", "dispatcher_invocations", "messages_consumed"):
        setattr(total, name, getattr(a, name) + getattr(b, name))
    total.api_seconds = a.api_seconds + b.api_seconds
    total.dispatcher_seconds = a.dispatcher_seconds + b.dispatcher_seconds
    return total


def _minus(a: cost.Usage, b: cost.Usage) -> cost.Usage:
    """What `a` costs beyond `b` (per signal when `a.steps` counts the signals matched)."""
    out = cost.Usage(steps=a.steps, status=a.status)
    out.counts = {key: a.counts.get(key, 0) - b.counts.get(key, 0) for key in set(a.counts) | set(b.counts)}
    for name in ("api_invocations", "dispatcher_invocations", "messages_consumed"):
        setattr(out, name, getattr(a, name) - getattr(b, name))
    out.api_seconds = a.api_seconds - b.api_seconds
    out.dispatcher_seconds = a.dispatcher_seconds - b.dispatcher_seconds
    return out


def figures(usage: cost.Usage) -> dict[str, Any]:
    """Per signal matched (`usage.steps`): WRU, RRU, dollars and requests by kind."""
    c, n = usage.counts, usage.steps
    dollars = usage.dollars()
    return {
        "status": usage.status,
        "signals": n,
        "wru": round((c.get("dynamodb.wru", 0) + c.get("dynamodb.wru_index", 0)) / n, 2),
        "wru_index": round(c.get("dynamodb.wru_index", 0) / n, 2),
        "rru": round(c.get("dynamodb.rru", 0) / n, 2),
        "usd_per_million": round(sum(dollars.values()) / n * 1e6, 3),
        "usd_per_million_by_part": {k: round(v / n * 1e6, 3) for k, v in dollars.items()},
        "kinds": {label: round(c.get(key, 0) / n, 2) for label, key in _KINDS},
        "api_invocations": round(usage.api_invocations / n, 2),
        "dispatch_messages": round(usage.messages_consumed / n, 2),
        "items_read": round(c.get("items_read", 0) / n, 2),
    }


def _sweep(s: Signals, names: tuple[str, ...]) -> cost.Usage:
    """A signal of each name that matches nobody: it removes the waiters ended runs left."""
    usage = s.begin(len(names))
    for name in names:
        s.send(usage, name, s.order())
    s.drain(usage)
    return s.end(usage)


def _log_run(s: Signals) -> cost.Usage:
    first = s.begin(1)
    s.drain(first, s.submit(first, LOG1, s.order()))  # stores the definition's snapshot
    usage = s.begin(1)
    run_id = s.submit(usage, LOG1, s.order())
    return s.end(usage, s.drain(usage, run_id))


def _scenarios(s: Signals) -> dict[str, Any]:
    log1 = _log_run(s)
    out: dict[str, Any] = {"log1_run": figures(log1)}
    for name, (definition, names, early) in SCENARIOS.items():
        _one_run(s, definition, names, early)  # stores the definition's snapshot
        _sweep(s, names)
        measured = _one_run(s, definition, names, early)
        whole = measured["whole"]
        out[name] = {
            "per_signal": figures(_minus(whole, log1)),
            "whole_run": figures(replace(whole, steps=1)),
            "wait_phase": figures(replace(measured["wait"], steps=1)),
            "signal_phase": figures(measured["signal"]),
        }
    # What a waiter left by an ended run adds to the next signal of its name: the `any` run
    # above took its signal; the first signal after it reads that run twice and removes it.
    stale = _sweep(s, ("bench.paid",))
    alone = _sweep(s, ("bench.paid",))
    out["unmatched_signal"] = figures(alone)
    out["left_waiter"] = figures(_minus(stale, alone))
    return out


def _broadcast(s: Signals, waiters: int) -> dict[str, Any]:
    definition = waits_for("bench.broadcast")
    orders = [s.order() for _ in range(waiters)]
    setup = s.begin(1)
    run_ids = [s.submit(setup, definition, order) for order in orders]
    s.drain(setup)
    waiting = sum(s.waiting(run_id) for run_id in run_ids)
    chosen = waiters // 2
    usage = s.begin(1)
    s.send(usage, "bench.broadcast", orders[chosen])
    status = s.drain(usage, run_ids[chosen])
    s.drain(usage)  # the pages after the matched run's
    usage = s.end(usage, status)
    still = sum(s.waiting(run_id) for run_id in run_ids)
    return {
        "waiters": waiters,
        "waiting_before": waiting,
        "waiting_after": still,
        "per_signal": figures(usage),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The same with --quick: the section takes seconds, and per-signal figures must not depend
    on the mode."""
    import boto3

    started = time.monotonic()
    seconds: dict[str, float] = {}
    with common.records_in_turn(), common.moto_resources() as env:
        meter = Meter(common.table_properties(env), boto3.session.Session().client("dynamodb"))
        meter.install()
        try:
            s = Signals(cost.Driver(meter))
            # One unmeasured run first: imports, the container and first-request costs.
            _one_run(s, waits_for("bench.warm"), ("bench.warm",), False)
            result = _scenarios(s)
            seconds["scenarios"] = round(time.monotonic() - started, 1)
            result["broadcast"] = _broadcast(s, BROADCAST_WAITERS)
            seconds["broadcast"] = round(time.monotonic() - started - seconds["scenarios"], 1)
        finally:
            meter.uninstall()
    one = result["any"]["signal_phase"]
    wide = result["broadcast"]["per_signal"]
    result["broadcast"]["ratio_to_one_waiter"] = round(wide["usd_per_million"] / one["usd_per_million"], 2)
    result["part_seconds"] = seconds
    return result
