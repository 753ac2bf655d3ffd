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
STEP_ENDS = frozenset({"step_completed", "step_failed", "step_timeout"})


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


@dataclass(frozen=True)
class SignalPlan:
    """What a client expects of a run it sent signals to: how many its wait step takes (of those
    it sent, repeats of an id not counted), and whether the step times out instead."""

    step_id: str
    received: int
    timed_out: bool = False


@dataclass
class Recorded:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> GET /runs/{id}
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run id -> its events
    answers: dict[str, list[str]] = field(default_factory=dict)  # Idempotency-Key -> run ids of its 202s
    unanswered: set[str] = field(default_factory=set)  # keys whose client gave up without a 202
    deliveries: list[Delivery] = field(default_factory=list)
    # signal id -> the 202 answers of every POST that sent it (a repeat of an id included)
    signal_answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    signal_plans: dict[str, SignalPlan] = field(default_factory=dict)  # run id -> what it expects


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
    """At most one step_completed per step attempt (round, step, attempt); an item run inside
    the run has one per item (inline_item_violations)."""
    seen = Counter(
        (round_, e.get("step_id"), (e.get("payload") or {}).get("attempt"))
        for round_, e in _rounds(events)
        if e.get("event_type") == "step_completed"
        and "index" not in (e.get("payload") or {})
        and "branch" not in (e.get("payload") or {})
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
    branches, a map's items) per round of the run (a retry runs again, in place, the children
    that did not succeed), and never recorded before it was started."""
    started: Counter[tuple[int, Any]] = Counter()
    ended: Counter[tuple[int, Any]] = Counter()
    for round_, e in _rounds(events):
        payload = e.get("payload") or {}
        if e.get("event_type") == "children_started":
            started.update((round_, child.get("run_id")) for child in payload.get("children", []))
        elif e.get("event_type") == "child_ended":
            ended[(round_, payload.get("run_id"))] += 1
    ever = {child for _, child in started}
    found = [
        Violation("child started twice", run_id, str(c))
        for (_, c), n in sorted(started.items(), key=str)
        if n > 1
    ]
    found += [
        Violation("child counted twice", run_id, str(c))
        for (_, c), n in sorted(ended.items(), key=str)
        if n > 1
    ]
    found += [
        Violation("child ended unstarted", run_id, str(c))
        for c in sorted({c for _, c in ended} - ever, key=str)
    ]
    return found


def inline_item_violations(run_id: str, events: list[dict[str, Any]]) -> list[Violation]:
    """Items run inside their parent (a map's `index`, a parallel's `branch` on a step's event):
    each item's step is recorded once per round of its map or parallel, and a map's items in
    order (a batch is one commit; a batch recorded twice or out of order is a lost race that
    landed)."""
    found: list[Violation] = []
    seen: Counter[tuple[int, Any, Any]] = Counter()
    last_index: dict[tuple[int, Any], int] = {}
    for round_, e in _rounds(events):
        payload = e.get("payload") or {}
        if e.get("event_type") not in ("step_completed", "step_failed"):
            continue
        name = payload.get("index", payload.get("branch"))
        if name is None:
            continue
        seen[(round_, e.get("step_id"), name)] += 1
        if isinstance(name, int):
            key = (round_, e.get("step_id"))
            if name < last_index.get(key, -1):
                found.append(Violation("item recorded out of order", run_id, f"{e.get('step_id')}[{name}]"))
            last_index[key] = name
    found += [
        Violation("item recorded twice", run_id, f"{step}[{name}]")
        for (_, step, name), n in sorted(seen.items(), key=str)
        if n > 1
    ]
    return found


def signal_wait_violations(run_id: str, events: list[dict[str, Any]]) -> list[Violation]:
    """Each wait for signals (a `waiting_signal` event) ends exactly once: completed, failed or
    timed out (not at all only when the run was cancelled); the signals it takes come between its
    beginning and its end, a name once; a signal id is taken once per round however often it was
    sent; and a completed step's output holds what it took."""
    cancelled = any(e.get("event_type") == "run_cancelled" for e in events)
    found: list[Violation] = []
    taken: Counter[tuple[int, Any, Any]] = Counter()
    open_waits: dict[Any, dict[str, Any]] = {}  # step id -> {"names": [...], "ends": n}
    passes: list[tuple[Any, dict[str, Any]]] = []
    for round_, e in _rounds(events):
        kind, step = e.get("event_type"), e.get("step_id")
        payload = e.get("payload") or {}
        if kind == "waiting_signal":
            current: dict[str, Any] = {"names": [], "ends": 0}
            open_waits[step] = current
            passes.append((step, current))
        elif kind == "signal_received":
            wait = open_waits.get(step)
            if wait is None or wait["ends"]:
                found.append(
                    Violation("signal outside a wait", run_id, f"step {step} took {payload.get('id')}")
                )
                continue
            taken[(round_, step, payload.get("id"))] += 1
            if payload.get("name") in wait["names"]:
                found.append(
                    Violation("signal counted twice", run_id, f"step {step}: {payload.get('name')} again")
                )
            wait["names"].append(payload.get("name"))
        elif kind in STEP_ENDS and step in open_waits:
            wait = open_waits[step]
            wait["ends"] += 1
            output = (payload.get("output") or {}).get("signals")
            if kind == "step_completed" and set(output or {}) != set(wait["names"]):
                found.append(
                    Violation("signal output", run_id, f"step {step} took {wait['names']}, outputs {output}")
                )
    found += [
        Violation("signal counted twice", run_id, f"round {r} step {s}: id {i} taken {n} times")
        for (r, s, i), n in sorted(taken.items(), key=str)
        if n > 1
    ]
    for step, wait in passes:
        if wait["ends"] > 1:
            found.append(Violation("wait ended twice", run_id, f"step {step}: {wait['ends']} ends"))
        elif wait["ends"] == 0 and not cancelled:
            found.append(Violation("wait never ended", run_id, f"step {step}"))
    return found


def signal_answer_violations(answers: Mapping[str, list[dict[str, Any]]]) -> list[Violation]:
    """A signal id names one signal: every 202 for it answers the same signal (name, sent_at),
    and at most one of them is not a duplicate, however often and however concurrently it was
    sent."""
    found: list[Violation] = []
    for signal_id, seen in sorted(answers.items()):
        firsts = sum(1 for answer in seen if not answer.get("duplicate"))
        if firsts > 1:
            found.append(
                Violation("signal id sent twice", signal_id, f"{firsts} answers were not duplicates")
            )
        signals = {(answer.get("name"), answer.get("sent_at")) for answer in seen}
        if len(signals) > 1:
            found.append(
                Violation("signal id sent twice", signal_id, f"answers name {sorted(signals, key=str)}")
            )
    return found


def signal_plan_violations(run_id: str, plan: SignalPlan, events: list[dict[str, Any]]) -> list[Violation]:
    """The run's wait took as many signals as the client sent that it waits for (a repeat of an
    id counted once; in `mode: any` one, whichever came first), or timed out when none was sent."""
    received = [
        e for e in events if e.get("event_type") == "signal_received" and e.get("step_id") == plan.step_id
    ]
    timed_out = any(
        e.get("event_type") == "step_timeout" and e.get("step_id") == plan.step_id for e in events
    )
    found: list[Violation] = []
    if len(received) != plan.received:
        ids = [(e.get("payload") or {}).get("id") for e in received]
        found.append(
            Violation("signals taken", run_id, f"step {plan.step_id} took {ids}, expected {plan.received}")
        )
    if timed_out != plan.timed_out:
        found.append(
            Violation(
                "signals taken",
                run_id,
                f"step {plan.step_id} {'timed out' if timed_out else 'did not time out'}",
            )
        )
    return found


def run_violations(recorded: Recorded, run_id: str) -> list[Violation]:
    events = recorded.events.get(run_id, [])
    plan = recorded.signal_plans.get(run_id)
    return [
        *terminal_violations(recorded.runs[run_id], events),
        *gap_violations(run_id, events),
        *double_commit_violations(run_id, events),
        *decision_violations(run_id, events),
        *child_violations(run_id, events),
        *inline_item_violations(run_id, events),
        *signal_wait_violations(run_id, events),
        *(signal_plan_violations(run_id, plan, events) if plan is not None else []),
    ]


def check(recorded: Recorded) -> list[Violation]:
    """Every violation of every promise, runs first."""
    found: list[Violation] = []
    for run_id in sorted(recorded.runs):
        found += run_violations(recorded, run_id)
    return [
        *found,
        *key_violations(recorded),
        *delivery_violations(recorded.deliveries),
        *signal_answer_violations(recorded.signal_answers),
    ]
