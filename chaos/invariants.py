"""The promises a chaos run checks, on what it recorded: plain data in, violations out.

Kept free of processes and HTTP so that tests can hold each rule to recorded cases.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_EVENTS = frozenset({"run_completed", "run_failed", "run_cancelled"})
DECISIONS = frozenset({"approval_granted", "approval_rejected"})


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str  # a run id, an idempotency key or a webhook-id
    detail: str


@dataclass(frozen=True)
class Delivery:
    """One request a receiver saw: the run and step its body named, and its `webhook-id` header."""

    run_id: str
    step_id: str
    webhook_id: str


@dataclass
class Recorded:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> GET /runs/{id}
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run id -> its events
    answers: dict[str, list[str]] = field(default_factory=dict)  # Idempotency-Key -> run ids of its 202s
    unanswered: set[str] = field(default_factory=set)  # keys whose client gave up without a 202
    deliveries: list[Delivery] = field(default_factory=list)


def terminal_violations(run: Mapping[str, Any], events: list[dict[str, Any]]) -> list[Violation]:
    """Every run ended, its last event says how, and a failed one names an error code."""
    run_id = str(run["run_id"])
    status = run.get("status")
    if status not in TERMINAL:
        return [Violation("terminal", run_id, f"still {status}")]
    found: list[Violation] = []
    if not events or events[-1].get("event_type") not in TERMINAL_EVENTS:
        last = events[-1].get("event_type") if events else "no events"
        found.append(Violation("terminal", run_id, f"{status}, but its last event is {last}"))
    if status == "failed" and not (run.get("error") or {}).get("code"):
        found.append(Violation("terminal", run_id, "failed without an error code"))
    return found


def gap_violations(run_id: str, events: list[dict[str, Any]]) -> list[Violation]:
    """event_seq is exactly 1..n, in order."""
    seqs = [int(e["event_seq"]) for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        repeated = sorted(s for s, n in Counter(seqs).items() if n > 1)
        return [Violation("gaps", run_id, f"missing {missing[:5]} repeated {repeated[:5]}")]
    return []


def _rounds(events: Iterable[dict[str, Any]]) -> Iterable[tuple[int, dict[str, Any]]]:
    """Each event with the round it belongs to: a retry of the failed run starts the next one."""
    round_ = 0
    for event in events:
        if event.get("event_type") == "run_resumed" and (event.get("payload") or {}).get("reason") == "retry":
            round_ += 1
        yield round_, event


def double_commit_violations(run_id: str, events: list[dict[str, Any]]) -> list[Violation]:
    """At most one step_completed per step attempt (round, step, attempt)."""
    seen = Counter(
        (round_, e.get("step_id"), (e.get("payload") or {}).get("attempt"))
        for round_, e in _rounds(events)
        if e.get("event_type") == "step_completed"
    )
    return [
        Violation("step committed twice", run_id, f"round {r} step {s} attempt {a}: {n} completions")
        for (r, s, a), n in sorted(seen.items(), key=str)
        if n > 1
    ]


def decision_violations(run_id: str, events: list[dict[str, Any]]) -> list[Violation]:
    """One decision per approval round: granted or rejected, once, per waiting_approval.

    The chaos workload's approvals need one approver, so a second decision is a duplicate."""
    decided = Counter((r, e.get("step_id")) for r, e in _rounds(events) if e.get("event_type") in DECISIONS)
    return [
        Violation("decided twice", run_id, f"round {r} step {s}: {n} decisions")
        for (r, s), n in sorted(decided.items(), key=str)
        if n > 1
    ]


def key_violations(recorded: Recorded) -> list[Violation]:
    """One run per Idempotency-Key: every 202 for a key named one run, and no listed run is unclaimed.

    A key whose client gave up may have made one run nobody heard of: one such run per such key.
    A child run (a parallel's branch, a map's item) was started by its parent, not by a client."""
    found: list[Violation] = []
    claimed: set[str] = set()
    for key, run_ids in sorted(recorded.answers.items()):
        distinct = sorted(set(run_ids))
        claimed.update(distinct)
        if len(distinct) > 1:
            found.append(Violation("one run per key", key, f"202s named {len(distinct)} runs: {distinct}"))
    children = {run_id for run_id, run in recorded.runs.items() if run.get("parent_run_id")}
    orphans = sorted(set(recorded.runs) - claimed - children)
    if len(orphans) > len(recorded.unanswered):
        found.append(
            Violation(
                "one run per key",
                "*",
                f"{len(orphans)} runs no 202 named, {len(recorded.unanswered)} keys unanswered:"
                f" {orphans[:5]}",
            )
        )
    return found


def delivery_violations(deliveries: Iterable[Delivery]) -> list[Violation]:
    """A delivery repeated (a retry, a crash, the DLQ worker) carries the step's one webhook-id."""
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for d in deliveries:
        ids[(d.run_id, d.step_id)].add(d.webhook_id)
    return [
        Violation("webhook-id", run_id, f"step {step_id} sent {len(found)} webhook-ids")
        for (run_id, step_id), found in sorted(ids.items())
        if len(found) > 1
    ]


def repeated_deliveries(deliveries: Iterable[Delivery]) -> int:
    """Requests beyond the first per webhook-id: allowed (receivers drop them), reported."""
    counts = Counter(d.webhook_id for d in deliveries)
    return sum(n - 1 for n in counts.values())


def child_violations(run_id: str, events: list[dict[str, Any]]) -> list[Violation]:
    """Each child run is started once and its end recorded once by its parent (a parallel's
    branches, a map's items), and never recorded before it was started."""
    started = Counter(
        child.get("run_id")
        for e in events
        if e.get("event_type") == "children_started"
        for child in (e.get("payload") or {}).get("children", [])
    )
    ended = Counter(
        (e.get("payload") or {}).get("run_id") for e in events if e.get("event_type") == "child_ended"
    )
    found = [
        Violation("child started twice", run_id, str(c)) for c, n in sorted(started.items(), key=str) if n > 1
    ]
    found += [
        Violation("child counted twice", run_id, str(c)) for c, n in sorted(ended.items(), key=str) if n > 1
    ]
    found += [
        Violation("child ended unstarted", run_id, str(c)) for c in sorted(set(ended) - set(started), key=str)
    ]
    return found


def run_violations(recorded: Recorded, run_id: str) -> list[Violation]:
    events = recorded.events.get(run_id, [])
    return [
        *terminal_violations(recorded.runs[run_id], events),
        *gap_violations(run_id, events),
        *double_commit_violations(run_id, events),
        *decision_violations(run_id, events),
        *child_violations(run_id, events),
    ]


def check(recorded: Recorded) -> list[Violation]:
    """Every violation of every promise, runs first."""
    found: list[Violation] = []
    for run_id in sorted(recorded.runs):
        found += run_violations(recorded, run_id)
    return found + key_violations(recorded) + delivery_violations(recorded.deliveries)
