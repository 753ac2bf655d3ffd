"""Long waits priced whole, on a moved clock (part of the cost section, bench/cost.py).

A one-day `delay` and an approval left to time out after its 7-day default cannot be waited for:
time is moved instead. Every composition root (API, dispatcher, sweeper) is built with one
clock the bench moves (roots/parts.py `clock=`), and SQS delays follow that clock: each
SendMessage's `DelaySeconds` is taken off the request (moto would wait it in real time) and
kept as the moment the message becomes visible, and the event source hands a message to the
dispatcher only once the clock has reached it. The sweeper's real handler runs at every moment
its schedule (template.yaml, SweeperFunction) would run it while the run waits.

What a wait costs is then, all parts: the run's own requests and Lambda time as for any run
(its submission, the suspend commit, the resuming commit and the run's end), plus the sweeper's
work. The sweeper runs on its schedule whatever waits, and reads the sparse `active` index by
key range (runs whose deadline is not near are not read), so an idle sweep costs the same
whether one run waits or thousands: each waiting run is charged its share of the sweeps made
during its wait at `WAITING_RUNS` runs waiting at once, plus everything a sweep does beyond an
idle one because of this run (the wake's read and kick).
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bench import common
from bench.prices import PRICES

if TYPE_CHECKING:
    from bench.cost import Driver, Usage

# Runs waiting at once that share the sweeper's invocations and its index reads.
WAITING_RUNS = 1000
DAY = 86_400
# (definition, wait priced in seconds, stand-in wait with --quick). A stand-in is still a long
# wait (over an hour: filed under its deadline, woken by the sweeper), so it takes the same path;
# the sweeps of the wait it stands for are counted at the idle sweep's measured cost.
SCENARIOS: dict[str, tuple[dict[str, Any], int, int]] = {
    "delay_1d": (
        {"name": "bench-delay-1d", "steps": [{"id": "wait", "type": "delay", "config": {"seconds": DAY}}]},
        DAY,
        2 * 3600,
    ),
    # The approval's own default timeout (7 days), and what it does then (`on_timeout: reject`):
    # nobody decides, the step is rejected and the one-step run ends failed.
    "approval_7d": (
        {"name": "bench-approval-7d", "steps": [{"id": "review", "type": "approval", "config": {}}]},
        7 * DAY,
        3 * 3600,
    ),
}
TERMINAL = ("succeeded", "failed", "cancelled")


def _stand_in(definition: dict[str, Any], seconds: int) -> dict[str, Any]:
    """The same one-step definition waiting `seconds` instead."""
    step = dict(definition["steps"][0])
    key = "seconds" if step["type"] == "delay" else "timeout_seconds"
    step["config"] = {**step["config"], key: seconds}
    return {"name": f"{definition['name']}-stand-in", "steps": [step]}


# ---- the template's sweeper -------------------------------------------------------------------


@dataclass(frozen=True)
class SweeperDeployment:
    schedule: str
    period_seconds: int
    memory_mb: int


def sweeper_deployment() -> SweeperDeployment:
    """SweeperFunction's schedule and memory as template.yaml declares them."""
    from devstack import provision

    template = provision.load_sam_template()
    function = template["Resources"]["SweeperFunction"]["Properties"]
    (event,) = (e for e in function["Events"].values() if e["Type"] in ("Schedule", "ScheduleV2"))
    expression = event["Properties"]["ScheduleExpression"]
    memory = function.get("MemorySize") or template.get("Globals", {}).get("Function", {}).get("MemorySize")
    return SweeperDeployment(expression, rate_seconds(expression), int(memory or 128))


def rate_seconds(expression: str) -> int:
    """The period of a `rate(...)` schedule expression, in seconds."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if match is None:
        raise ValueError(f"not a rate() schedule: {expression!r}")
    unit = {"minute": 60, "hour": 3600, "day": DAY}[match.group(2).removesuffix("s")]
    return int(match.group(1)) * unit


def history_retention_days() -> int:
    """HistoryRetentionDays' default in template.yaml (WORKFLOWS_RUN_RETENTION_DAYS)."""
    from devstack import provision

    return int(provision.load_sam_template()["Parameters"]["HistoryRetentionDays"]["Default"])


# ---- moved time -----------------------------------------------------------------------------


class MovedClock:
    """The roots' clock: it stands still until the bench moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def move_to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


class DelaysOnClock:
    """SQS DelaySeconds on the moved clock: the delay is taken off each SendMessage and kept as
    the moment (on the clock) the message becomes visible. Registered on boto3's default session
    before the roots build their clients, as the meter is."""

    def __init__(self, clock: MovedClock) -> None:
        self.clock = clock
        self.visible_at: dict[str, datetime] = {}
        self._session: Any = None

    def install(self) -> None:
        import boto3

        self._session = boto3._get_default_session()
        self._session.events.register("before-parameter-build.sqs.SendMessage", self._before)
        self._session.events.register("after-call.sqs.SendMessage", self._after)

    def uninstall(self) -> None:
        if self._session is not None:
            self._session.events.unregister("before-parameter-build.sqs.SendMessage", self._before)
            self._session.events.unregister("after-call.sqs.SendMessage", self._after)
            self._session = None

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bench_delay"] = int(params.get("DelaySeconds") or 0)
        params["DelaySeconds"] = 0

    def _after(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        message_id = parsed.get("MessageId")
        if message_id:
            delay = context.pop("bench_delay", 0)
            self.visible_at[message_id] = self.clock() + timedelta(seconds=delay)


@contextmanager
def roots_on(clock: MovedClock) -> Iterator[None]:
    """The API's, the dispatcher's and the sweeper's parts built on `clock` (each root's parts
    are replaceable: tests do the same)."""
    from workflows.roots import api, dispatcher, sweeper
    from workflows.roots.parts import Parts
    from workflows.settings import get_settings

    saved = {root: root.parts for root in (api, dispatcher, sweeper)}
    for root in saved:
        root.parts = functools.lru_cache(maxsize=1)(lambda: Parts(get_settings(), clock=clock))
    try:
        yield
    finally:
        for root, original in saved.items():
            root.parts = original


def scheduled_event(moment: datetime) -> dict[str, Any]:
    """The event the sweeper's schedule sends (events/SweeperFunction/schedule.json) at `moment`."""
    event = dict(json.loads((common.EVENTS / "SweeperFunction" / "schedule.json").read_text()))
    event["time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


# ---- one waiting run ---------------------------------------------------------------------------


@dataclass
class Sweep:
    at: datetime
    counts: dict[str, float]
    seconds: float
    report: dict[str, Any]

    @property
    def idle(self) -> bool:
        return not any(self.report.get(k) for k in ("candidates", "woken", "rekicked", "stalled", "failed"))


@dataclass
class Waited:
    usage: Usage
    sweeps: list[Sweep] = field(default_factory=list)
    wait_seconds: float = 0.0
    woken_at: datetime | None = None
    deadline: datetime | None = None
    ended_at: datetime | None = None
    error_code: str | None = None


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in set(after) | set(before)
        if after.get(k, 0) != before.get(k, 0)
    }


class WaitDriver:
    """Plays API Gateway, the SQS event source and the sweeper's schedule on the moved clock."""

    def __init__(
        self, driver: Driver, clock: MovedClock, delays: DelaysOnClock, deployment: SweeperDeployment
    ) -> None:
        from workflows.roots import api as api_root

        self.driver = driver
        self.clock = clock
        self.delays = delays
        self.period = deployment.period_seconds
        self.memory_mb = deployment.memory_mb
        self.sweeper = common.load_function("sweeper")
        # The bench reads the run through the API's parts (on the moved clock), unmetered.
        driver.container = api_root.parts()
        self._held: dict[str, dict[str, Any]] = {}

    def _next_tick(self) -> datetime:
        """The schedule's next moment after now (a rate schedule: every `period` seconds)."""
        epoch = self.clock().timestamp()
        return datetime.fromtimestamp((math.floor(epoch / self.period) + 1) * self.period, UTC)

    def _deliver_due(self, usage: Usage) -> None:
        """Every message visible on the clock, to the dispatcher in batches as the event source
        takes them; the others are held (received, unseen by the dispatcher) until their moment."""
        d = self.driver
        while True:
            received = d.raw_sqs.receive_message(
                QueueUrl=d.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
            ).get("Messages", [])
            for message in received:
                self._held[message["MessageId"]] = message
            now = self.clock()
            due = [m for m in self._held.values() if self.delays.visible_at.get(m["MessageId"], now) <= now]
            if not due:
                return
            for message in due[:10]:
                del self._held[message["MessageId"]]
            d.dispatch(usage, due[:10])

    def _next_visible(self) -> datetime | None:
        moments = [self.delays.visible_at[m] for m in self._held if m in self.delays.visible_at]
        return min(moments) if moments else None

    def _sweep(self, waited: Waited) -> None:
        """One invocation of the sweeper's handler, as its schedule sends it."""
        meter = self.driver.meter
        before = meter.snapshot()
        context = common.lambda_context("SweeperFunction", self.memory_mb, 120_000)
        started = time.perf_counter()
        report = dict(self.sweeper.handler(scheduled_event(self.clock()), context))
        seconds = time.perf_counter() - started
        waited.sweeps.append(Sweep(self.clock(), diff(meter.snapshot(), before), seconds, report))
        if report.get("woken"):
            waited.woken_at = self.clock()

    def run(self, definition: dict[str, Any], *, every_sweep: bool, limit_seconds: float) -> Waited:
        """One run from its submission to its end. `every_sweep`: the sweeper runs at each of its
        schedule's moments (measured); otherwise from the first one that can wake the run on
        (a warm-up run that stores the definition's snapshot)."""
        from bench.cost import Usage
        from workflows.clock import parse_iso
        from workflows.engine.kicks import MAX_DELAY_SECONDS

        d = self.driver
        usage = Usage(steps=len(definition["steps"]))
        waited = Waited(usage)
        d.meter.reset()
        d.log_bytes.reset()
        submitted = self.clock()
        run_id = d.call_api(usage, "POST", "/runs", {"definition": definition, "inputs": {"name": "Ada"}})[
            "run_id"
        ]
        end = submitted + timedelta(seconds=limit_seconds)
        while True:
            self._deliver_due(usage)
            with d.meter.paused():
                run = d.container.runs.get("default", run_id)
            if run.status.value in TERMINAL or self.clock() >= end:
                break
            if run.wait_until and waited.deadline is None:
                waited.deadline = parse_iso(run.wait_until)
            tick = self._next_tick()
            if not every_sweep and waited.deadline is not None and not waited.sweeps:
                # Straight to the sweep whose window holds the deadline: the first one scheduled
                # less than SQS's longest delay before it (engine/sweep.py).
                first = waited.deadline - timedelta(seconds=MAX_DELAY_SECONDS)
                while tick <= first:
                    tick += timedelta(seconds=self.period)
            visible = self._next_visible()
            if visible is not None and visible <= tick:
                self.clock.move_to(visible)
                continue
            self.clock.move_to(tick)
            self._sweep(waited)
        with d.meter.paused():
            run = d.container.runs.get("default", run_id)
            usage.stored_bytes = d.stored_bytes(run_id)
        usage.status = run.status.value
        total = d.meter.snapshot()
        swept: dict[str, float] = {}
        for sweep in waited.sweeps:
            for k, v in sweep.counts.items():
                swept[k] = swept.get(k, 0) + v
        usage.counts = diff(total, swept)
        usage.log_bytes = d.log_bytes.total
        waited.wait_seconds = (self.clock() - submitted).total_seconds()
        if run.ended_at:
            waited.ended_at = parse_iso(run.ended_at)
        waited.error_code = (run.error or {}).get("code")
        return waited


# ---- attribution ------------------------------------------------------------------------------


def sweeper_dollars(
    counts: dict[str, float], invocations: float, billed_seconds: float, memory_mb: int
) -> dict[str, float]:
    wru = counts.get("dynamodb.wru", 0) + counts.get("dynamodb.wru_index", 0)
    return {
        "dynamodb_write": wru * PRICES["dynamodb_per_million_wru"] / 1e6,
        "dynamodb_read": counts.get("dynamodb.rru", 0) * PRICES["dynamodb_per_million_rru"] / 1e6,
        "sqs": counts.get("sqs.billed_requests", 0) * PRICES["sqs_per_million_requests"] / 1e6,
        "lambda_requests": invocations * PRICES["lambda_per_million_requests"] / 1e6,
        "lambda_duration": billed_seconds * memory_mb / 1024 * PRICES["lambda_per_gb_second_arm64"],
    }


def attribute(sweeps: list[Sweep], *, scale: float, waiting_runs: int, memory_mb: int) -> dict[str, Any]:
    """The sweeper's work during one run's wait charged to that run: each sweep's idle cost (the
    idle sweeps' requests and mean duration, one invocation) shared by `waiting_runs`, and
    what the sweeps that read or woke this run did beyond an idle sweep, in full. `scale`: the wait priced
    over the wait simulated (a stand-in's), applied to the shared part only."""
    idle = [s for s in sweeps if s.idle] or sweeps
    keys = {k for s in idle for k in s.counts}
    idle_counts = {k: statistics.median(s.counts.get(k, 0) for s in idle) for k in keys}
    idle_seconds = statistics.fmean(s.seconds for s in idle)
    idle_billed = math.ceil(idle_seconds * 1000) / 1000
    extra_counts: dict[str, float] = {}
    extra_seconds = 0.0
    for s in sweeps:
        if s.idle:
            continue
        for k in set(s.counts) | keys:
            extra_counts[k] = extra_counts.get(k, 0) + max(0.0, s.counts.get(k, 0) - idle_counts.get(k, 0))
        extra_seconds += max(0.0, s.seconds - idle_seconds)
    count = len(sweeps) * scale
    shared = sweeper_dollars(
        {k: v * count / waiting_runs for k, v in idle_counts.items()},
        count / waiting_runs,
        idle_billed * count / waiting_runs,
        memory_mb,
    )
    own = sweeper_dollars(extra_counts, 0, extra_seconds, memory_mb)
    return {
        "sweeps": round(count),
        "sweeps_simulated": len(sweeps),
        "idle_sweep": {
            "requests": operations(idle_counts),
            "dynamodb_rru": idle_counts.get("dynamodb.rru", 0),
            "ms": round(idle_seconds * 1000, 2),
        },
        "beyond_idle": {
            "requests": operations(extra_counts),
            "dynamodb_wru": extra_counts.get("dynamodb.wru", 0) + extra_counts.get("dynamodb.wru_index", 0),
            "dynamodb_rru": extra_counts.get("dynamodb.rru", 0),
            "ms": round(extra_seconds * 1000, 2),
        },
        "requests_shared": requests(idle_counts) * count / waiting_runs,
        "requests_own": requests(extra_counts),
        "shared_usd": sum(shared.values()),
        "own_usd": sum(own.values()),
        "usd_by_part": {k: shared[k] + own[k] for k in shared},
    }


def requests(counts: dict[str, float]) -> float:
    """AWS requests in the meter's counts (DynamoDB, SQS, S3)."""
    return sum(counts.get(f"{service}.requests", 0) for service in ("dynamodb", "sqs", "s3"))


def operations(counts: dict[str, float]) -> dict[str, float]:
    """The meter's per-operation counts (`dynamodb.Query`, `sqs.SendMessage`...), by operation."""
    out = {}
    for key, value in counts.items():
        _, _, operation = key.partition(".")
        if operation[:1].isupper() and value:
            out[operation] = value
    return out


def summarise(
    waited: Waited, *, priced_seconds: int, simulated_seconds: int, waiting_runs: int, memory_mb: int
) -> dict[str, Any]:
    run = waited.usage.summary()
    sweeper = attribute(
        waited.sweeps,
        scale=priced_seconds / simulated_seconds,
        waiting_runs=waiting_runs,
        memory_mb=memory_mb,
    )
    steps = waited.usage.steps
    parts = dict(run["usd_per_million_steps_by_part"])
    for k, v in sweeper["usd_by_part"].items():
        parts[f"sweeper_{k}"] = v / steps * 1e6
    total = run["usd_per_run"] + sweeper["shared_usd"] + sweeper["own_usd"]
    woken_before = (
        (waited.deadline - waited.woken_at).total_seconds() if waited.deadline and waited.woken_at else None
    )
    late = (
        (waited.ended_at - waited.deadline).total_seconds() if waited.ended_at and waited.deadline else None
    )
    # On AWS each request also holds its function for a network round trip, which moto in-process
    # does not: the same latency per request as the TCO's model (cost.TCO), for reading.
    from bench.cost import TCO
    from bench.prices import DISPATCHER_MEMORY_MB

    latency = TCO["aws_request_latency_ms"] / 1000
    run_requests = run["dynamodb_requests"] + run["sqs_requests_direct"] + run["s3_requests"]
    sweeper_requests = sweeper["requests_shared"] + sweeper["requests_own"]
    latency_usd = (
        latency
        * (run_requests * DISPATCHER_MEMORY_MB + sweeper_requests * memory_mb)
        / 1024
        * PRICES["lambda_per_gb_second_arm64"]
    )
    return {
        "status": run["status"],
        "error_code": waited.error_code,
        "steps": steps,
        "wait_priced_seconds": priced_seconds,
        "wait_simulated_seconds": simulated_seconds,
        "usd_per_run": total,
        "usd_per_million_steps": total / steps * 1e6,
        "usd_per_million_steps_with_request_latency": (total + latency_usd) / steps * 1e6,
        "usd_per_million_steps_by_part": {
            k: round(v, 4) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
        },
        "run": {
            k: run[k]
            for k in (
                "dynamodb_requests",
                "dynamodb_wru",
                "dynamodb_wru_index",
                "dynamodb_rru",
                "dynamodb_by_operation",
                "sqs_requests_direct",
                "sqs_messages",
                "api_invocations",
                "dispatcher_invocations",
                "dispatcher_ms",
                "usd_per_run",
            )
        },
        "sweeper": sweeper,
        "woken_seconds_before_deadline": woken_before,
        "ended_seconds_after_deadline": late,
    }


def run(
    driver: Driver, *, quick: bool, log1_usd_per_run: float, log_usd_per_million_steps: float
) -> dict[str, Any]:
    """Both waits, each run twice (the first stores the definition's snapshot, unmeasured)."""
    deployment = sweeper_deployment()
    # Later than anything the real-time scenarios wrote, on a whole minute.
    clock = MovedClock(datetime.fromtimestamp(math.ceil(time.time() / 60) * 60 + 60, UTC))
    delays = DelaysOnClock(clock)
    delays.install()
    figures: dict[str, Any] = {
        "waiting_runs_assumed": WAITING_RUNS,
        "sweeper_schedule": deployment.schedule,
        "sweeper_period_seconds": deployment.period_seconds,
        "sweeper_memory_mb": deployment.memory_mb,
        "sweeps_per_day": DAY // deployment.period_seconds,
        "hop_chain": "not reachable: a wait over an hour sends no 15-minute hops (the sweeper wakes it)",
    }
    try:
        with roots_on(clock):
            waits = WaitDriver(driver, clock, delays, deployment)
            for name, (definition, priced, stand_in) in SCENARIOS.items():
                simulated = stand_in if quick else priced
                measured_definition = _stand_in(definition, stand_in) if quick else definition
                limit = simulated + 2 * 3600
                waits.run(measured_definition, every_sweep=False, limit_seconds=limit)
                waited = waits.run(measured_definition, every_sweep=True, limit_seconds=limit)
                s = summarise(
                    waited,
                    priced_seconds=priced,
                    simulated_seconds=simulated,
                    waiting_runs=WAITING_RUNS,
                    memory_mb=deployment.memory_mb,
                )
                figures[name] = s
                # Per step, as every step's figure (cost.py's marginal figures): the run minus a
                # one-step log run, plus one log step - what the wait step costs inside a run.
                # The whole one-step run (its submission and end included) is kept beside it.
                marginal = (s["usd_per_run"] - log1_usd_per_run) * 1e6 + log_usd_per_million_steps
                figures[f"{name}_usd_per_million_steps"] = marginal
                figures[f"{name}_marginal_usd_per_million_steps"] = marginal
                figures[f"{name}_whole_run_usd_per_million_runs"] = s["usd_per_million_steps"]
    finally:
        delays.uninstall()
    figures["targets"] = {"delay_1d_usd_per_million_steps": 6.0, "approval_7d_usd_per_million_steps": 12.0}
    return figures
