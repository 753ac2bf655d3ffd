"""Steps side by side: a step that runs child runs (a parallel's branches, a map's items, a
saved workflow) and the record its run keeps of them until the join decides (docs/steps.md,
"Steps side by side").

Each branch or item is a run of its own (a child run), with its own commits, events, retries,
leases and sweeper: everything the service promises a run holds for it. The parent keeps one
record (`Fanout`, on the run item) that stays small whatever the number of children: how many
were started, which have ended (every index below `done_below`, and the few above it in
`ended_above`), counts, the first failures, and for a map its items, stored apart in chunks.

A child's id is derived from its parent, the step, the step's round and its index, so starting
it twice (a retried commit, a redelivered message) finds the run already there.

Items (or branches) made only of pure steps (log, branch: steps.base.Pure) are not child runs:
they run inside the parent, a batch per commit (`inline`, engine.inline), and their outputs are
kept apart batch by batch (`results`), so such an item costs a share of one commit, not a run.
"""

from __future__ import annotations

import bisect
import uuid
from typing import Any, Literal, Required, TypedDict, cast

from workflows.domain.messages import CancelChildren

Kind = Literal["parallel", "map", "workflow"]
Verdict = Literal["wait", "succeeded", "failed"]

# Items per stored chunk of a map's items: starting a window reads only the chunks it covers.
ITEMS_PER_CHUNK = 100
# Failures the record keeps (the rest are counted): each names its item or branch and its run.
KEPT_FAILURES = 10
# Children cancelled per dispatch message when a run's children are cancelled.
CANCEL_PAGE = 100
# Entries of `results` of one level folded into one entry of the next (a batch's outputs are
# level 0): the record holds at most this many per level, a handful for 10,000 items.
RESULTS_FOLD = 8
_NAMESPACE = uuid.UUID("6f1c1c9e-5b0e-4e43-9a53-2f3d1b4a7c10")


class ChildPlace(TypedDict, total=False):
    """Where a child run sits among its parent step's children (Run.child)."""

    round: Required[int]
    index: Required[int]
    branch: str


class ResultsEntry(TypedDict):
    """Outputs of consecutive inline items: `n` of them; `out` (stored inline or as a reference,
    domain.outputs) is their outputs' list at level 0, else a list of entries one level down."""

    level: int
    n: int
    out: Any


class Fanout(TypedDict, total=False):
    """The children a run's current step waits for (Run.fanout)."""

    step_id: Required[str]
    kind: Required[Kind]
    # The parent's version when the step began: children of a step run again (a retry, a loop)
    # get other ids.
    round: Required[int]
    total: Required[int]
    join: Literal["all", "any"]
    max_concurrency: int
    tolerated_failures: int
    # Children [0, started) have been created; [0, kicked) kicked too (or are kicked right after
    # the commit that moved `kicked`; a kick lost then is the sweeper's to make up).
    started: int
    kicked: int
    done_below: int
    ended_above: list[int]
    succeeded: int
    failed: int
    failures: list[dict[str, Any]]
    # `any`: the index of the first child that succeeded.
    winner: int
    # parallel: the branch names, in definition order (child i runs branch i).
    branches: list[str]
    # map: the items, ITEMS_PER_CHUNK per entry, each a list or a reference to a stored output.
    chunks: list[Any]
    # workflow: the saved workflow and version the child runs.
    workflow_id: str
    version: int
    # A retry of the run that failed at this step runs again, in place, its children that did
    # not succeed (`redrive`), of those it had started (below `redo_stop`): those below
    # `redo_cursor` were looked at, and the ones running
    # again are in `redoing` (not ended) until they end again; `redo_from` is the step they run
    # again from (else each its failed step).
    redo_cursor: int
    redo_stop: int
    redoing: list[int]
    redo_from: str
    # Items or branches run inside the parent (no child runs): a batch per commit, [0, started)
    # done. `results`: their outputs in item order, a `ResultsEntry` per batch or folded batches.
    inline: bool
    results: list[ResultsEntry]


def child_run_id(parent_run_id: str, step_id: str, round_: int, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{parent_run_id}/{step_id}/{round_}/{index}"))


def child_id(fanout: Fanout, parent_run_id: str, index: int) -> str:
    return child_run_id(parent_run_id, fanout["step_id"], fanout["round"], index)


def plan(
    step_id: str,
    kind: Kind,
    round_: int,
    total: int,
    *,
    join: Literal["all", "any"] = "all",
    max_concurrency: int | None = None,
    tolerated_failures: int = 0,
) -> Fanout:
    return {
        "step_id": step_id,
        "kind": kind,
        "round": round_,
        "total": total,
        "join": join,
        "max_concurrency": max_concurrency or max(total, 1),
        "tolerated_failures": tolerated_failures,
        "started": 0,
        "kicked": 0,
        "done_below": 0,
        "ended_above": [],
        "succeeded": 0,
        "failed": 0,
        "failures": [],
    }


def was_ended(fanout: Fanout, index: int) -> bool:
    """Whether child `index` ended, a retry running it again or not."""
    return index < fanout["done_below"] or index in fanout["ended_above"]


def has_ended(fanout: Fanout, index: int) -> bool:
    return was_ended(fanout, index) and index not in fanout.get("redoing", ())


def ended_count(fanout: Fanout) -> int:
    return fanout["done_below"] + len(fanout["ended_above"]) - len(fanout.get("redoing", ()))


def running(fanout: Fanout) -> list[int]:
    """The children started that have not ended, by index (those a retry runs again too)."""
    above = set(fanout["ended_above"])
    fresh = [i for i in range(fanout["done_below"], fanout["started"]) if i not in above]
    return sorted([*fresh, *fanout.get("redoing", ())])


def redo_pending(fanout: Fanout) -> bool:
    """A retry's look at the children that did not succeed is not through yet."""
    return fanout.get("redo_cursor", 0) < fanout.get("redo_stop", 0)


def redrive(fanout: Fanout, redo_from: str | None) -> Fanout:
    """The record of a step whose run is retried there: its children that did not succeed run
    again in place (Children scans them from index 0, as the window allows), the others keep
    their outputs; the count of failures starts again."""
    looked = {"redo_cursor": 0, "redo_stop": fanout["started"], "redoing": []}
    changed = cast(Fanout, {**fanout, "failed": 0, "failures": [], **looked})
    changed.pop("redo_from", None)
    if redo_from is not None:
        changed["redo_from"] = redo_from
    return changed


def branch(fanout: Fanout, index: int) -> str | None:
    names = fanout.get("branches")
    return names[index] if names else None


def place(fanout: Fanout, index: int) -> ChildPlace:
    where: ChildPlace = {"round": fanout["round"], "index": index}
    name = branch(fanout, index)
    if name is not None:
        where["branch"] = name
    return where


def mark_ended(
    fanout: Fanout, index: int, status: str, run_id: str | None, error: dict[str, Any] | None
) -> Fanout:
    """The record with child `index` ended in `status` (succeeded, failed or cancelled); an item
    run inside the parent has no `run_id`."""
    if has_ended(fanout, index):
        raise ValueError(f"child {index} ended already")
    redoing = fanout.get("redoing") or []
    if index in redoing:
        # Run again by a retry: it was ended, and is again.
        changed = cast(Fanout, {**fanout, "redoing": [i for i in redoing if i != index]})
    else:
        above = list(fanout["ended_above"])
        bisect.insort(above, index)
        done = fanout["done_below"]
        while above and above[0] == done:
            above.pop(0)
            done += 1
        changed = cast(Fanout, {**fanout, "done_below": done, "ended_above": above})
    if status == "succeeded":
        changed["succeeded"] = fanout["succeeded"] + 1
        if fanout.get("join") == "any" and "winner" not in fanout:
            changed["winner"] = index
    else:
        changed["failed"] = fanout["failed"] + 1
        if len(fanout["failures"]) < KEPT_FAILURES:
            failure: dict[str, Any] = {"index": index, "status": status}
            if run_id is not None:
                failure["run_id"] = run_id
            name = branch(fanout, index)
            if name is not None:
                failure["branch"] = name
            if error:
                failure["error"] = {"code": error.get("code"), "message": error.get("message")}
            changed["failures"] = [*fanout["failures"], failure]
    return changed


def verdict(fanout: Fanout) -> Verdict:
    """What the children decide so far: `wait`, or the step `succeeded` or `failed`.

    join `all` (parallel, workflow; a map's only join): the step fails as soon as more children
    failed than `tolerated_failures` (the others are cancelled), and succeeds once every child
    ended. join `any`: the first child to succeed wins (the others are cancelled); the step fails
    once every child failed."""
    everyone = ended_count(fanout) >= fanout["total"] and not redo_pending(fanout)
    if fanout.get("join") == "any":
        if "winner" in fanout:
            return "succeeded"
        return "failed" if everyone else "wait"
    if fanout["failed"] > fanout.get("tolerated_failures", 0):
        return "failed"
    return "succeeded" if everyone else "wait"


def window(fanout: Fanout) -> range:
    """The children to start now: as many as keep `max_concurrency` running."""
    target = min(fanout["total"], ended_count(fanout) + fanout["max_concurrency"])
    return range(fanout["started"], max(target, fanout["started"]))


def chunk_of(index: int) -> tuple[int, int]:
    """The chunk holding item `index`, and its position there."""
    return divmod(index, ITEMS_PER_CHUNK)


def failure_message(fanout: Fanout) -> tuple[str, str]:
    """The step's error when its children failed it: a code and a message naming them."""
    kind = fanout["kind"]
    if kind == "workflow":
        first = fanout["failures"][0] if fanout["failures"] else {}
        error = first.get("error") or {}
        reason = error.get("message") or first.get("status", "failed")
        return "child_failed", f"child run {first.get('run_id')} {first.get('status', 'failed')}: {reason}"
    what = "branch" if kind == "parallel" else "item"
    named = [str(f.get("branch") if kind == "parallel" else f.get("index")) for f in fanout["failures"]]
    listed = ", ".join(named) + (" and more" if fanout["failed"] > len(named) else "")
    if fanout.get("join") == "any":
        plural = "branches" if kind == "parallel" else "items"
        return f"{plural}_failed", f"every {what} failed ({listed})"
    allowed = fanout.get("tolerated_failures", 0)
    tolerated = f", {allowed} tolerated" if allowed else ""
    return f"{what}_failed", f"{fanout['failed']} {what}(s) failed{tolerated}: {listed}"


def cancellation(
    tenant_id: str, run_id: str, fanout: Fanout, action: Literal["cancel", "pause", "resume"] = "cancel"
) -> CancelChildren | None:
    """The message that cancels (or pauses, or resumes: `action`) the children of `fanout`
    still running (None: none is).

    It covers too the children a commit that lost its race created past `started` (a window it
    opened that no stored record holds: they are never kicked, and the sweeper would start them
    after their step ended). Such a commit read a record with at most as many ends as this one
    and added one, so their indices lie below `ended_count + max_concurrency + 1`. Items run
    inside the parent have no runs to cancel."""
    if fanout.get("inline"):
        return None
    pending = running(fanout)
    start = pending[0] if pending else fanout["started"]
    created = min(fanout["total"], ended_count(fanout) + fanout.get("max_concurrency", fanout["total"]) + 1)
    stop = max(pending[-1] + 1 if pending else 0, created)
    if start >= stop:
        return None
    return CancelChildren(
        tenant_id=tenant_id,
        run_id=run_id,
        step_id=fanout["step_id"],
        round=fanout["round"],
        start=start,
        stop=stop,
        action=action,
    )


def to_fold(results: list[ResultsEntry]) -> int:
    """How many entries at the end of `results` fold into one of the next level: RESULTS_FOLD
    when that many of one level end it, else 0. Levels never rise along the list (each fold
    leaves one entry above the ones after it), so folding after each batch keeps at most
    RESULTS_FOLD - 1 entries per level."""
    if len(results) < RESULTS_FOLD:
        return 0
    level = results[-1]["level"]
    return RESULTS_FOLD if all(entry["level"] == level for entry in results[-RESULTS_FOLD:]) else 0


def following(
    tenant_id: str,
    run_id: str,
    record: Fanout | None,
    current_step_id: str | None,
    action: Literal["pause", "resume"],
) -> CancelChildren | None:
    """The message that pauses or resumes the children of a run paused or resumed while its
    step waits for them (`record`, the run's `fanout`); None when it waits for none."""
    if record is None or record.get("step_id") != current_step_id:
        return None
    return cancellation(tenant_id, run_id, record, action)
