"""11. Steps side by side: `parallel` branches and `map` items (child runs, or run inside their
parent when made only of `log` and `branch` steps) in wall time and in dollars.

As bench/cost.py drives runs: the submission through the API function's handler, the dispatcher
function's handler fed from the dispatch queue the way Lambda's SQS event source feeds it, on
in-process moto. moto's SQS holds a delayed message until its DelaySeconds have passed, so a
`delay` step really waits.

- Wall time, submission to the run's end (its `created_at` to its `ended_at`): one `parallel`
  step of three branches, each a 2 s delay then a log step; a `map` of 50 items, each a 1 s
  delay, at most 10 at once (and the most children running at once, from the parent's
  `children_started` and `child_ended` events); a `map` of 10,000 `log` items (1,000 with
  --quick) at most 100 at once, run inside the run, and without --quick 1,000 of them as child
  runs (`mode: child_runs`), with the largest DynamoDB item written meanwhile (every put is
  sized as the request carries it, with DynamoDB's item size rules).
- Cost: dollars per million item steps of a map of 100 `log` items and of a parallel of 10
  one-`log` branches, inside the run and as child runs, priced by bench/cost.py's code (the
  second run of each is measured), beside the 10-step `log` run measured the same way here; and
  the requests per item step by kind.

One thing differs from the other sections, for the emulator's sake:
- The dispatcher works a batch's records one after another (RECORD_THREADS = 1). Its ten threads
  only contend for one interpreter lock here (three times slower), and moto's backends take no
  locks (the local stack serialises DynamoDB requests for that reason). So no two ends of one
  parent's children race: what a lost race costs (a read and a write again) is not counted.
The emulator's Query and SQS receive costs are devstack/moto_patches.py's, for every section.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bench import common, cost
from bench.meter import Meter, item_size

TENANT = "default"
RUN_SK = "RUN"  # the run item's sort key (adapters/run_items.py)
TERMINAL = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 0.05
DYNAMODB_ITEM_LIMIT = 400 * 1024

PARALLEL_BRANCHES = 3
PARALLEL_DELAY_SECONDS = 2
MAP_DELAY_ITEMS = 50
MAP_DELAY_SECONDS = 1
MAP_DELAY_CONCURRENCY = 10
BIG_MAP_ITEMS = 10_000
BIG_MAP_ITEMS_QUICK = 1_000
BIG_MAP_CONCURRENCY = 100
# A run that has not ended by then is reported with its time so far (a lower bound).
DEADLINE_SECONDS = 120.0
BIG_MAP_DEADLINE_SECONDS = 1800.0
# Cost scenarios (the same with --quick: per-step figures must not depend on the mode).
COST_MAP_ITEMS = 100
COST_PARALLEL_BRANCHES = 10
# The figure the specification sets for a map's or a parallel's step against a plain log step.
COST_TARGET_RATIO = 1.25


def _log(step_id: str, message: str) -> dict[str, Any]:
    return {"id": step_id, "type": "log", "config": {"message": message}}


def parallel_delays(branches: int, seconds: int) -> dict[str, Any]:
    return {
        "name": "side-by-side-parallel",
        "steps": [
            {
                "id": "both",
                "type": "parallel",
                "config": {
                    "branches": {
                        f"b{i}": [
                            {"id": f"nap{i}", "type": "delay", "config": {"seconds": seconds}},
                            _log(f"done{i}", "{{ branch }} done"),
                        ]
                        for i in range(branches)
                    }
                },
            }
        ],
    }


def parallel_logs(branches: int, mode: str = "auto") -> dict[str, Any]:
    """A parallel of one-`log` branches: run inside the run (`auto`), or as child runs."""
    return {
        "name": f"side-by-side-parallel-logs-{mode}",
        "steps": [
            {
                "id": "both",
                "type": "parallel",
                "config": {
                    "branches": {f"b{i}": [_log(f"log{i}", "branch {{ branch }}")] for i in range(branches)},
                    "mode": mode,
                },
            }
        ],
    }


def map_of(items: int, step: dict[str, Any], concurrency: int, mode: str = "auto") -> dict[str, Any]:
    """A map over range(items): `log` items run inside the run (`auto`), or as child runs."""
    return {
        "name": f"side-by-side-map-{items}-{mode}",
        "steps": [
            {
                "id": "each",
                "type": "map",
                "config": {
                    "items": f"{{{{ range({items}) | list }}}}",
                    "steps": [step],
                    "max_concurrency": concurrency,
                    "mode": mode,
                },
            }
        ],
    }


# --- the emulator --------------------------------------------------------------------------


class LargestItems:
    """The size of every DynamoDB item written (the largest write of each key), as DynamoDB
    counts it: puts sized from the request, an update by reading the item back after it."""

    def __init__(self, raw_dynamodb: Any) -> None:
        self._raw = raw_dynamodb  # unhooked: its reads are not seen here
        self._lock = threading.Lock()
        self._session: Any = None
        self.recording = False
        self.sizes: dict[tuple[str, str, str], int] = {}
        # The largest item written, by attribute: what makes it large.
        self.largest_attributes: dict[str, int] = {}

    def install(self) -> None:
        import boto3

        self._session = boto3._get_default_session()
        self._session.events.register("before-parameter-build.dynamodb", self._before)
        self._session.events.register("after-call.dynamodb", self._after)

    def uninstall(self) -> None:
        if self._session is not None:
            self._session.events.unregister("before-parameter-build.dynamodb", self._before)
            self._session.events.unregister("after-call.dynamodb", self._after)
            self._session = None

    def reset(self) -> None:
        with self._lock:
            self.sizes = {}
            self.largest_attributes = {}

    def largest(self, where: Callable[[tuple[str, str, str]], bool] = lambda key: True) -> tuple[Any, int]:
        with self._lock:
            found = [(key, size) for key, size in self.sizes.items() if where(key)]
        return max(found, key=lambda kv: kv[1]) if found else (None, 0)

    def _saw(self, table: str, item: dict[str, Any]) -> None:
        sort = item.get("sk") or item.get("event_seq") or {"S": ""}
        key = (table, str(item.get("pk", {}).get("S", "")), str(next(iter(sort.values()))))
        size = item_size(item)
        with self._lock:
            if size > self.sizes.get(key, 0):
                self.sizes[key] = size
            if size > sum(self.largest_attributes.values()):
                self.largest_attributes = {name: item_size({name: value}) for name, value in item.items()}

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if not self.recording:
            return
        operation = model.name
        if operation == "PutItem":
            self._saw(params["TableName"], params["Item"])
        elif operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        self._saw(table, request["PutRequest"]["Item"])
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                if "Put" in entry:
                    self._saw(entry["Put"]["TableName"], entry["Put"]["Item"])
                elif "Update" in entry:
                    context.setdefault("side_by_side_updates", []).append(entry["Update"])
        elif operation == "UpdateItem":
            context["side_by_side_updates"] = [params]

    def _after(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        for update in context.pop("side_by_side_updates", []):
            if "Error" in parsed:
                continue
            item = self._raw.get_item(TableName=update["TableName"], Key=update["Key"], ConsistentRead=True)
            if "Item" in item:
                self._saw(update["TableName"], item["Item"])


# --- driving runs --------------------------------------------------------------------------


def _drive(driver: cost.Driver, definition: dict[str, Any], deadline_s: float) -> tuple[str, cost.Usage]:
    """Submit through the API handler and deliver dispatch messages until the run ends."""
    usage = cost.Usage(steps=1)
    run_id = str(driver.call_api(usage, "POST", "/runs", {"definition": definition, "inputs": {}})["run_id"])
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if driver.deliver(usage):
            continue
        if driver.status(run_id)["status"] in TERMINAL:
            break
        time.sleep(POLL_SECONDS)  # a delayed kick is not visible yet
    return run_id, usage


def _parse(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _ended(driver: cost.Driver, run_id: str) -> dict[str, Any]:
    """Status and seconds from submission to the end (to now, a lower bound, if it runs on)."""
    run = driver.container.runs.get(TENANT, run_id)
    end = _parse(run.ended_at) if run.ended_at else time.time()
    return {
        "status": run.status.value,
        "wall_s": round(end - _parse(run.created_at), 3),
        "lower_bound": run.ended_at is None,
    }


def most_running(events: list[Any]) -> int:
    """The most children running at once, from a parent's events in order: `children_started`
    names those created, `child_ended` one that ended (a commit holds the ends it records before
    the children it starts)."""
    running = peak = 0
    for event in events:
        if event.event_type == "children_started":
            running += len(event.payload["children"])
        elif event.event_type == "child_ended":
            running -= 1
        peak = max(peak, running)
    return peak


def _events(driver: cost.Driver, run_id: str) -> list[Any]:
    runs = driver.container.runs
    events: list[Any] = []
    since = 0
    while True:
        page = runs.list_events(TENANT, run_id, since=since, limit=100)
        events += page.events
        if not page.has_more or page.next_since == since:
            return events
        since = page.next_since


def _wall_times(
    driver: cost.Driver, largest: LargestItems, quick: bool, seconds: dict[str, float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    started = time.monotonic()
    run_id, _ = _drive(driver, parallel_delays(PARALLEL_BRANCHES, PARALLEL_DELAY_SECONDS), DEADLINE_SECONDS)
    ended = _ended(driver, run_id)
    out["parallel_3x2s_wall_s"] = ended["wall_s"]
    out["parallel_3x2s_status"] = ended["status"]
    out["parallel_3x2s_max_running"] = most_running(_events(driver, run_id))

    delay = {"id": "nap", "type": "delay", "config": {"seconds": MAP_DELAY_SECONDS}}
    run_id, _ = _drive(driver, map_of(MAP_DELAY_ITEMS, delay, MAP_DELAY_CONCURRENCY), DEADLINE_SECONDS)
    ended = _ended(driver, run_id)
    out["map_50x1s_c10_wall_s"] = ended["wall_s"]
    out["map_50x1s_c10_status"] = ended["status"]
    out["map_50x1s_c10_max_running"] = most_running(_events(driver, run_id))

    seconds["delays"] = round(time.monotonic() - started, 1)

    items = BIG_MAP_ITEMS_QUICK if quick else BIG_MAP_ITEMS
    started = time.monotonic()
    out.update(_big_map(driver, largest, items, "auto", f"map_{items // 1000}k"))
    out["big_map_label"] = f"map_{items // 1000}k"
    seconds["big_map"] = round(time.monotonic() - started, 1)
    if not quick:
        # The same items as child runs (`mode: child_runs`): a run each, at the emulator's pace.
        started = time.monotonic()
        label = f"map_{BIG_MAP_ITEMS_QUICK // 1000}k_child_runs"
        out.update(_big_map(driver, largest, BIG_MAP_ITEMS_QUICK, "child_runs", label))
        seconds["big_map_child_runs"] = round(time.monotonic() - started, 1)
    return out


def _big_map(driver: cost.Driver, largest: LargestItems, items: int, mode: str, label: str) -> dict[str, Any]:
    """A map of `items` one-`log` items, at most 100 at once: its wall time and the largest
    DynamoDB item written meanwhile."""
    definition = map_of(items, _log("each_log", "item {{ index }}"), BIG_MAP_CONCURRENCY, mode)
    largest.reset()
    largest.recording = True
    try:
        run_id, usage = _drive(driver, definition, BIG_MAP_DEADLINE_SECONDS)
    finally:
        largest.recording = False
    ended = _ended(driver, run_id)
    settings = driver.container.settings
    tables = {settings.runs_table: "runs", settings.run_events_table: "run_events"}
    (table, pk, sk), size = largest.largest()
    parent_pk = f"{TENANT}#{run_id}"

    def run_item(key: tuple[str, str, str]) -> bool:
        return key[0] == settings.runs_table and key[2] == RUN_SK

    _, parent_size = largest.largest(lambda key: run_item(key) and key[1] == parent_pk)
    _, child_size = largest.largest(lambda key: run_item(key) and key[1] != parent_pk)
    return {
        f"{label}_items": items,
        f"{label}_log_wall_s": ended["wall_s"],
        f"{label}_status": ended["status"],
        f"{label}_wall_lower_bound": ended["lower_bound"],
        f"{label}_items_per_second": round(items / ended["wall_s"], 1),
        f"{label}_dispatch_messages": usage.messages_consumed,
        f"{label}_largest_item_bytes": size,
        f"{label}_largest_item": {
            "table": tables.get(table, table),
            "of_the_parent": pk == parent_pk,
            "sk": sk,
        },
        f"{label}_largest_item_bytes_by_attribute": dict(
            sorted(largest.largest_attributes.items(), key=lambda kv: -kv[1])[:6]
        ),
        f"{label}_parent_run_item_max_bytes": parent_size,
        f"{label}_child_run_item_max_bytes": child_size,
        f"{label}_max_running": most_running(_events(driver, run_id)),
    }


# --- cost ----------------------------------------------------------------------------------

_KINDS = (
    ("PutItem", "dynamodb.PutItem"),
    ("GetItem", "dynamodb.GetItem"),
    ("BatchGetItem", "dynamodb.BatchGetItem"),
    ("Query", "dynamodb.Query"),
    ("SQS sends", "sqs.messages_sent"),
)


def per_step(usage: cost.Usage) -> dict[str, Any]:
    """What one step costs in requests, by kind (the event source's receives and deletes are
    priced from the messages consumed, as in bench/cost.py)."""
    c, n = usage.counts, usage.steps
    return {
        "dynamodb_by_operation": {
            k.split(".", 1)[1]: round(v / n, 3)
            for k, v in sorted(c.items())
            if k.startswith("dynamodb.") and k[9].isupper()
        },
        "sqs_messages_sent": round(c.get("sqs.messages_sent", 0) / n, 3),
        "sqs_send_requests": round((c.get("sqs.SendMessage", 0) + c.get("sqs.SendMessageBatch", 0)) / n, 3),
        "dispatch_messages_consumed": round(usage.messages_consumed / n, 3),
        "s3_requests": round(c.get("s3.requests", 0) / n, 3),
        "wru": round((c.get("dynamodb.wru", 0) + c.get("dynamodb.wru_index", 0)) / n, 3),
        "rru": round(c.get("dynamodb.rru", 0) / n, 3),
        "kinds": {label: round(c.get(key, 0) / n, 2) for label, key in _KINDS},
    }


def _costs(driver: cost.Driver) -> dict[str, Any]:
    log10, log_steps, _ = cost.definitions("http://127.0.0.1/unused")["log10"]
    item = _log("each_log", "item {{ index }}")
    scenarios = {
        "log": (log10, log_steps),
        "map": (map_of(COST_MAP_ITEMS, item, 10), COST_MAP_ITEMS),
        "parallel": (parallel_logs(COST_PARALLEL_BRANCHES), COST_PARALLEL_BRANCHES),
        "map_child_runs": (map_of(COST_MAP_ITEMS, item, 10, "child_runs"), COST_MAP_ITEMS),
        "parallel_child_runs": (parallel_logs(COST_PARALLEL_BRANCHES, "child_runs"), COST_PARALLEL_BRANCHES),
    }
    summaries: dict[str, Any] = {}
    steps: dict[str, Any] = {}
    for name, (definition, count) in scenarios.items():
        # As in bench/cost.py: the first run of a definition stores its snapshots.
        driver.run(definition, count)
        usage = driver.run(definition, count)
        summaries[name] = usage.summary()
        steps[name] = per_step(usage)
    log = summaries["log"]["usd_per_million_steps"]
    out: dict[str, Any] = {
        "log_usd_per_million_steps": log,
        "target_ratio": COST_TARGET_RATIO,
        "map_items": COST_MAP_ITEMS,
        "parallel_branches": COST_PARALLEL_BRANCHES,
        "per_step": steps,
        "scenarios": summaries,
    }
    for name in ("map", "parallel", "map_child_runs", "parallel_child_runs"):
        s = summaries[name]
        out[f"{name}_status"] = s["status"]
        out[f"{name}_usd_per_million_steps"] = s["usd_per_million_steps"]
        out[f"{name}_ratio_to_log"] = s["usd_per_million_steps"] / log
        out[f"{name}_usd_per_million_steps_by_part"] = {
            k: round(v, 3) for k, v in s["usd_per_million_steps_by_part"].items()
        }
    return out


def run(quick: bool = False) -> dict[str, Any]:
    import boto3

    seconds: dict[str, float] = {}
    with common.records_in_turn():
        # Hooks reach only the clients built after them: each part has its own moto, built anew.
        started = time.monotonic()
        with common.moto_resources() as env:
            raw = boto3.session.Session().client("dynamodb")
            meter = Meter(common.table_properties(env), raw)
            meter.install()
            try:
                driver = cost.Driver(meter)
                # One unmeasured run first: imports, the container and first-request costs.
                driver.run(map_of(2, _log("warm", "x"), 2), 2)
                costs = _costs(driver)
            finally:
                meter.uninstall()
        seconds["cost"] = round(time.monotonic() - started, 1)
        with common.moto_resources() as env:
            raw = boto3.session.Session().client("dynamodb")
            largest = LargestItems(raw)
            largest.install()
            try:
                driver = cost.Driver(Meter(common.table_properties(env), raw))  # no meter installed
                _drive(driver, map_of(2, _log("warm", "x"), 2), DEADLINE_SECONDS)
                result = _wall_times(driver, largest, quick, seconds)
            finally:
                largest.uninstall()
    result["cost"] = costs
    result["part_seconds"] = seconds
    return result
