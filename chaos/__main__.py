"""`make chaos`: the local stack under kills and stops, then a check of every promise.

python -m chaos            the short run (about 4 minutes)
python -m chaos --full     the full run (about 15 minutes)

docs/chaos.md says what is injected, what is checked and how to read the table.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chaos.invariants import TERMINAL, Recorded, Violation, check, repeated_deliveries
from chaos.stack import ROOT, Stack
from chaos.workload import Client, Ledger, Receivers, Workload, definitions


@dataclass(frozen=True)
class Fault:
    name: str
    part: str  # emulator, api or workers
    action: str  # kill (SIGKILL, restarted at once) or stop (SIGSTOP, SIGCONT after `pause`)
    pause: float = 0.0


# The emulator is only ever stopped, never killed: moto keeps its state in memory, so a killed
# emulator is a lost database, which is no fault the service is meant to survive.
CYCLE = (
    Fault("kill -9 workers", "workers", "kill"),
    Fault("SIGSTOP api 5 s", "api", "stop", 5),
    Fault("SIGSTOP emulator 5 s", "emulator", "stop", 5),
    Fault("kill -9 api", "api", "kill"),
    Fault("SIGSTOP workers 8 s", "workers", "stop", 8),
    Fault("kill -9 workers mid-burst", "workers", "kill"),
)


@dataclass(frozen=True)
class Plan:
    threads: int
    faults: int
    spacing: float  # seconds between one fault's recovery and the next fault
    drain: float  # the longest wait for every run to end
    probe_patience: float


SHORT = Plan(threads=4, faults=len(CYCLE), spacing=8, drain=200, probe_patience=90)
FULL = Plan(threads=6, faults=len(CYCLE) * 4, spacing=20, drain=300, probe_patience=180)


@dataclass
class Outcome:
    fault: Fault
    at: float
    in_flight: set[str]
    down: float  # from the fault until the process was back (restarted and ready, or resumed)
    recovery: float | None


def inject(stack: Stack, fault: Fault) -> None:
    part = stack.parts[fault.part]
    if fault.action == "kill":
        part.kill()
        stack.restart(fault.part)
    else:
        part.signal(signal.SIGSTOP)
        try:
            time.sleep(fault.pause)
        finally:
            part.signal(signal.SIGCONT)


def recovery_time(client: Client, probe: dict[str, Any], patience: float) -> float | None:
    """Seconds from the fault's end until a fresh run has gone through, None past `patience`."""
    started = time.monotonic()
    run_id = client.submit("probe", probe, patience=patience)
    if run_id is None:
        return None
    left = patience - (time.monotonic() - started)
    run = client.wait(run_id, lambda r: r["status"] in TERMINAL, max(1.0, left))
    return None if run is None else time.monotonic() - started


def all_runs(client: Client) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        path = "/runs?limit=200" + (f"&cursor={cursor}" if cursor else "")
        answer = client.call("GET", path, patience=60)
        if answer is None or answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {None if answer is None else answer.text[:200]}")
        page = answer.json()
        runs += page["runs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return runs
    raise RuntimeError("GET /runs: more pages than any chaos run makes")


def all_events(client: Client, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    for _ in range(100):
        answer = client.call("GET", f"/runs/{run_id}/events?since={since}&limit=1000", patience=60)
        if answer is None or answer.status_code != 200:
            raise RuntimeError(f"events of {run_id}: {None if answer is None else answer.text[:200]}")
        page = answer.json()
        events += page["events"]
        since = page["next_since"]
        if not page["has_more"]:
            return events
    raise RuntimeError(f"events of {run_id}: more pages than any chaos run makes")


def drain(client: Client, patience: float) -> tuple[list[dict[str, Any]], float]:
    """Every run, once all have ended or `patience` has passed, and how long that took."""
    started = time.monotonic()
    while True:
        runs = all_runs(client)
        if all(r["status"] in TERMINAL for r in runs) or time.monotonic() - started > patience:
            return runs, time.monotonic() - started
        time.sleep(2)


def longest_silence(recorded: Recorded) -> tuple[float, str]:
    """The longest time a run went without an event, and that run: a recovery by the sweeper
    shows here as a wait longer than its grace."""
    longest, which = 0.0, ""
    for run_id, events in recorded.events.items():
        moments = [datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")) for e in events]
        for before, after in itertools.pairwise(moments):
            if (after - before).total_seconds() > longest:
                longest, which = (after - before).total_seconds(), run_id
    return longest, which


def table(outcomes: list[Outcome], recorded: Recorded, violations: list[Violation], start: float) -> str:
    flagged: dict[str, set[str]] = {}
    for v in violations:
        flagged.setdefault(v.rule, set()).add(v.subject)
    gaps = flagged.get("gaps", set())
    duplicates = set().union(
        *(
            flagged.get(rule, set())
            for rule in (
                "step committed twice",
                "decided twice",
                "webhook-id",
                "wait ended twice",
                "signal counted twice",
            )
        )
    )

    def row(name: str, at: str, runs: set[str], down: str, recovery: str) -> str:
        ended = sum(1 for r in runs if recorded.runs.get(r, {}).get("status") in TERMINAL)
        cells = [name, at, len(runs), ended, len(runs & gaps), len(runs & duplicates), down, recovery]
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [
        "| fault | at (s) | runs in flight | terminal | with gaps | with duplicates | down (s)"
        " | recovery (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        recovery = "none" if o.recovery is None else f"{o.recovery:.1f}"
        lines.append(row(o.fault.name, f"{o.at - start:.0f}", o.in_flight, f"{o.down:.1f}", recovery))
    lines.append(row("all runs", "-", set(recorded.runs), "-", "-"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full run (about 15 minutes)")
    args = parser.parse_args(argv)
    plan = FULL if args.full else SHORT
    logs = ROOT / ".devstack" / "chaos" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(logs)
    receivers = Receivers()
    ledger = Ledger()
    workload: Workload | None = None
    say: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    try:
        receivers.start()
        say(f"chaos: {'full' if args.full else 'short'} run; logs in {logs.relative_to(ROOT)}")
        stack.start()
        start = time.monotonic()
        say(f"chaos: stack up (emulator :{stack.moto_port}, API :{stack.api_port}); workload starting")
        workload = Workload(stack.base, stack.api_key, receivers.url, ledger, plan.threads)
        workload.start()
        probe = definitions(receivers.url)["probe"]
        client = Client(stack.base, stack.api_key, ledger)
        outcomes: list[Outcome] = []
        for i in range(plan.faults):
            time.sleep(plan.spacing)
            fault = CYCLE[i % len(CYCLE)]
            at = time.monotonic()
            in_flight = ledger.in_flight(at)
            inject(stack, fault)
            down = time.monotonic() - at
            recovery = recovery_time(client, probe, plan.probe_patience)
            outcomes.append(Outcome(fault, at, in_flight, down, recovery))
            shown = "no recovery" if recovery is None else f"recovered in {recovery:.1f} s"
            say(f"chaos: {fault.name} at {at - start:.0f} s with {len(in_flight)} runs in flight: {shown}")
        say("chaos: faults done; clients finishing, then waiting for every run to end")
        stopper = threading.Thread(target=workload.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=150)
        runs, waited = drain(client, plan.drain)
        say(f"chaos: {len(runs)} runs; drained in {waited:.0f} s; checking")
        with ledger.lock:
            recorded = Recorded(
                runs={r["run_id"]: r for r in runs},
                answers={k: list(v) for k, v in ledger.answers.items()},
                unanswered=set(ledger.unanswered),
                deliveries=list(receivers.deliveries),
                signal_answers={k: list(v) for k, v in ledger.signal_answers.items()},
                signal_plans=dict(ledger.signal_plans),
            )
        recorded.events = {run_id: all_events(client, run_id) for run_id in recorded.runs}
        violations = check(recorded)
        if any(o.recovery is None for o in outcomes):
            violations.append(Violation("recovery", "*", "a probe run did not end after a fault"))
        violations += [Violation("client", "*", error) for error in workload.errors]
        say("")
        say(table(outcomes, recorded, violations, start))
        say("")
        statuses: dict[str, int] = {}
        for r in runs:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        say(
            f"runs by status: {dict(sorted(statuses.items()))}; keys: {len(recorded.answers)}, "
            f"unanswered: {len(recorded.unanswered)}; webhook requests: {len(recorded.deliveries)}, "
            f"repeats of a webhook-id: {repeated_deliveries(recorded.deliveries)}; "
            f"elapsed {time.monotonic() - start:.0f} s"
        )
        sent = sum(len(answers) for answers in recorded.signal_answers.values())
        taken = sum(
            1
            for events in recorded.events.values()
            for e in events
            if e.get("event_type") == "signal_received"
        )
        say(
            f"signals: {len(recorded.signal_answers)} ids accepted in {sent} requests "
            f"({sent - len(recorded.signal_answers)} repeats of an id), {taken} taken; "
            f"{len(recorded.signal_plans)} runs held to the signals they were sent"
        )
        silence, quiet_run = longest_silence(recorded)
        if quiet_run:
            say(
                f"longest wait between two events of a run: {silence:.0f} s "
                f"({ledger.scenarios.get(quiet_run, 'unknown')} run {quiet_run})"
            )
        for v in violations[:30]:
            say(f"VIOLATION {v.rule}: {v.subject}: {v.detail}")
        if violations:
            say(f"chaos: {len(violations)} violations (logs in {logs.relative_to(ROOT)})")
            return 1
        say("chaos: every promise held")
        return 0
    finally:
        if workload is not None:
            workload.stop_now()
        stack.stop()
        receivers.stop()


if __name__ == "__main__":
    sys.exit(main())
