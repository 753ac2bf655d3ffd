"""10. Fairness: how much one tenant's load slows another tenant on the local stack.

Each scenario starts its own local stack (`make run` as a subprocess on free loopback ports,
`WORKFLOWS_AUTH_MODE=multi_user`, quotas on), so no scenario inherits another's backlog. Tenant A
is the noisy one; it makes as many users as the per-user quota needs, as a hostile tenant would.
Tenant B measures, the same way in every scenario: one-step `log` runs submitted one after
another (submission to the run's `ended_at`) and `GET /runs` requests between them.

- `baseline`: B alone.
- `hanging_webhooks`: A's runs whose webhook step calls a receiver that never answers
  (timeout 60 s, three attempts), started before B measures.
- `flood`: A submits many twenty-step `log` runs at once; B measures while they are in flight.
- `dlq`: A has many webhook DLQ rows to a receiver that never answers, due now; B has one row to
  a working receiver, due just after A's: the seconds from when it is due to its delivery. The
  baseline measures B's row alone the same way.

Every wait is bounded: a scenario stops at SCENARIO_SECONDS after its stack is up and reports
what it measured with an `error` saying what did not finish. A run of B still going then counts
with the time it had waited (a lower bound: `b_runs_unfinished` says how many). Receivers are
servers on 127.0.0.1; stacks and receivers are stopped whatever happens.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bench import common

SCENARIOS = ("baseline", "hanging_webhooks", "flood", "dlq")
SCENARIO_SECONDS = 240.0
STARTUP_SECONDS = 120.0
# The target: B's p95 in a scenario within this many seconds of its p95 alone.
TARGET_DELTA_SECONDS = 2.0
# Below the per-user quota of 60 submissions a minute, so no submission of A is refused.
RUNS_PER_USER = 50
SUBMITTERS = 16
HANGING_RUNS = 8
FLOOD_STEPS = 20
LISTS_PER_RUN = 2
# The DLQ worker's deadline for one delivery (the service's default, set so the bench knows it).
DLQ_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.1
TENANT_A = "tenant-a"
TENANT_B = "tenant-b"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Sizes:
    b_runs: int
    flood_runs: int
    dlq_rows: int


FULL = Sizes(b_runs=10, flood_runs=300, dlq_rows=100)
QUICK = Sizes(b_runs=5, flood_runs=100, dlq_rows=50)


def _parse(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _log_definition(name: str, steps: int) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": f"s{i}", "type": "log", "config": {"message": f"step {i}"}} for i in range(1, steps + 1)
        ],
    }


def _webhook_definition(name: str, url: str, **config: Any) -> dict[str, Any]:
    retry = config.pop("retry", None)
    step: dict[str, Any] = {"id": "call", "type": "webhook", "config": {"url": url, **config}}
    if retry:
        step["retry"] = retry
    return {"name": name, "steps": [step]}


# --- the receivers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at: float  # time.time() when the request arrived
    path: str
    webhook_id: str
    answer: str  # "503", "200" or "hang"


@dataclass
class Receiver:
    """Webhook receivers on 127.0.0.1, chosen by the path's first segment:

    - `/hang/...`: reads the request and never answers (until the receiver stops);
    - `/fail-then-hang/...`: 503 to the first request of a `webhook-id`, then never answers;
    - `/fail-then-ok/...`: 503 to the first request of a `webhook-id`, then 200.

    A 503 is a transient failure: a webhook step with `on_delivery_failure: dlq` hands the
    delivery to the DLQ, whose worker then meets the second behaviour. Every request is recorded.
    """

    arrivals: list[Arrival] = field(default_factory=list)
    hanging: int = 0
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def answered(self, prefix: str, answer: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.path.startswith(prefix) and a.answer == answer]

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                kind = self.path.split("/")[1]
                webhook_id = self.headers.get("webhook-id", "")
                with receiver._lock:
                    first = webhook_id not in receiver._seen
                    receiver._seen.add(webhook_id)
                    if kind == "hang" or (kind == "fail-then-hang" and not first):
                        answer = "hang"
                        receiver.hanging += 1
                    elif first:
                        answer = "503"
                    else:
                        answer = "200"
                    receiver.arrivals.append(Arrival(time.time(), self.path, webhook_id, answer))
                if answer == "hang":
                    # Bounded too, though stopping the receiver is what ends it.
                    receiver._stop.wait(SCENARIO_SECONDS * 2)
                    with receiver._lock:
                        receiver.hanging -= 1
                    self.close_connection = True
                    return
                try:
                    self.send_response(int(answer))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up first

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="fairness-receiver", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# --- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    base: str
    aws_endpoint: str

    def admin_key(self, tenant: str, user: str) -> str:
        """A tenant's first admin key, from the command line as docs/auth.md shows."""
        env = {
            **os.environ,
            **{k: v for k, v in common.ENVIRONMENT.items() if k.startswith("AWS_")},
            "AWS_ENDPOINT_URL": self.aws_endpoint,
        }
        create = ["create", "--tenant", tenant, "--user", user, "--roles", "admin"]
        done = subprocess.run(
            [sys.executable, "-m", "devstack.keys", *create],
            cwd=common.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"devstack.keys create failed: {done.stderr.strip()[-300:]}")
        return done.stdout.strip()


@contextmanager
def _local_stack() -> Iterator[Stack]:
    port, moto_port = common.free_port(), common.free_port()
    env = {
        **os.environ,
        **{k: v for k, v in common.ENVIRONMENT.items() if k.startswith("AWS_")},
        "PORT": str(port),
        "MOTO_PORT": str(moto_port),
        "WORKFLOWS_AUTH_MODE": "multi_user",
        "LOG_LEVEL": "ERROR",
        # As deployed, longer than the dispatcher's 120 s: a step hanging for 60 s is not handed
        # to a second dispatcher while the first still runs it (the local default, 10 s, would).
        "DEVSTACK_VISIBILITY_TIMEOUT": "150",
        # Rows a receiver refused come due again within a second or two, not half a minute.
        "WORKFLOWS_WEBHOOK_DLQ_BASE_SEC": "1",
        "WORKFLOWS_WEBHOOK_DLQ_INTERVAL_SEC": "5",
        "WORKFLOWS_WEBHOOK_DLQ_TIMEOUT_SEC": str(DLQ_TIMEOUT_SECONDS),
        # The service's figures, not the terminal's: no events query per dispatch.
        "DEVSTACK_ACTIVITY": "off",
        "DEVSTACK_LOCAL_EVENTS": tempfile.mkdtemp(prefix="bench-fairness-events-"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(common.LAYER), os.environ.get("PYTHONPATH", "")) if p),
    }
    for name in ("AWS_ENDPOINT_URL", "WORKFLOWS_DISABLE_QUOTAS", "WORKFLOWS_API_KEY"):
        env.pop(name, None)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=common.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1/workflows"
    try:
        ready_by = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError("the local stack exited during start-up")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > ready_by:
                raise RuntimeError(f"the local stack did not come up within {STARTUP_SECONDS:.0f} s")
            time.sleep(0.25)
        yield Stack(base=base, aws_endpoint=f"http://127.0.0.1:{moto_port}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Tenant:
    """A tenant's HTTP clients: its admin, and as many more users as its submissions need."""

    def __init__(self, stack: Stack, tenant: str, users: int = 1) -> None:
        limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
        self.admin = httpx.Client(
            base_url=stack.base,
            headers={"X-API-KEY": stack.admin_key(tenant, "admin")},
            timeout=30,
            limits=limits,
        )
        self.clients = [self.admin]
        try:
            for number in range(2, users + 1):
                body = {"user_id": f"user{number}", "roles": ["viewer"]}
                response = self.admin.post("/api-keys", json=body)
                if response.status_code != 201:
                    raise RuntimeError(
                        f"POST /api-keys answered {response.status_code}: {response.text[:200]}"
                    )
                key = response.json()["api_key"]
                self.clients.append(
                    httpx.Client(base_url=stack.base, headers={"X-API-KEY": key}, timeout=30, limits=limits)
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def submit_all(self, definitions: list[dict[str, Any]]) -> tuple[list[str], int]:
        """Submits every definition at once, spread over the users; run ids and refusals."""

        def submit(index: int) -> str | None:
            client = self.clients[index % len(self.clients)]
            try:
                response = client.post("/runs", json={"definition": definitions[index], "inputs": {}})
            except httpx.TransportError:
                return None
            return str(response.json()["run_id"]) if response.status_code == 202 else None

        with ThreadPoolExecutor(SUBMITTERS) as pool:
            submitted = list(pool.map(submit, range(len(definitions))))
        run_ids = [r for r in submitted if r]
        return run_ids, len(submitted) - len(run_ids)

    def ended_runs(self) -> int | None:
        """How many of the tenant's runs have ended (None: the listing failed)."""
        runs = self._pages("/runs", "runs", {"status": list(TERMINAL)})
        return None if runs is None else len(runs)

    def dlq_rows(self) -> list[dict[str, Any]]:
        return self._pages("/webhooks/dlq", "rows", {}) or []

    def _pages(self, path: str, items: str, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every page of a listing, bounded in pages; None when a request fails (a figure of the
        load, not a reason to lose the scenario's others)."""
        found: list[dict[str, Any]] = []
        cursor = None
        for _ in range(50):
            try:
                page_params = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
                response = self.admin.get(path, params=page_params)
            except httpx.TransportError:
                return None
            if response.status_code != 200:
                return None
            page = response.json()
            found += page[items]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found


def _wait(predicate: Callable[[], Any], deadline: float, interval: float) -> Any:
    """The first truthy value of `predicate` before `deadline` (monotonic), else None."""
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- B's measurement ------------------------------------------------------------------------


def _seconds(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": common.percentile(values, 50), "p95": common.percentile(values, 95)}


def _measure_b(b: Tenant, runs: int, deadline: float) -> dict[str, Any]:
    """B's one-step runs one after another, `LISTS_PER_RUN` listings before each."""
    client = b.admin
    definition = _log_definition("fairness-b", 1)
    run_seconds: list[float] = []
    list_seconds: list[float] = []
    unfinished = refused = list_errors = 0
    for _ in range(runs):
        if time.monotonic() >= deadline:
            break
        for _ in range(LISTS_PER_RUN):
            started = time.perf_counter()
            try:
                ok = client.get("/runs", params={"limit": 50}).status_code == 200
            except httpx.TransportError:
                ok = False
            list_seconds.append(time.perf_counter() - started)
            list_errors += not ok
        submitted = time.time()
        try:
            response = client.post("/runs", json={"definition": definition, "inputs": {}})
        except httpx.TransportError:
            refused += 1
            continue
        if response.status_code != 202:
            refused += 1
            continue
        run_id = response.json()["run_id"]

        def ended(run_id: str = run_id) -> str | None:
            try:
                run = client.get(f"/runs/{run_id}").json()
            except (httpx.TransportError, ValueError):
                return None
            return run.get("ended_at") if run.get("status") in TERMINAL else None

        ended_at = _wait(ended, deadline, POLL_SECONDS)
        if ended_at:
            run_seconds.append(_parse(ended_at) - submitted)
        else:
            unfinished += 1
            run_seconds.append(time.time() - submitted)  # a lower bound: it was still going
    run = _seconds(run_seconds)
    listing = _seconds(list_seconds)
    return {
        "b_runs_planned": runs,
        "b_runs_measured": len(run_seconds),
        "b_runs_unfinished": unfinished,
        "b_runs_refused": refused,
        "b_run_p50_s": run["p50"],
        "b_run_p95_s": run["p95"],
        "b_lists": len(list_seconds),
        "b_list_errors": list_errors,
        "b_list_p50_s": listing["p50"],
        "b_list_p95_s": listing["p95"],
    }


class _DlqProbe:
    """B's one DLQ row to a working receiver: submitted before B measures, read after."""

    def __init__(self, b: Tenant, receiver: Receiver) -> None:
        self._b = b
        self._receiver = receiver
        url = receiver.url("/fail-then-ok/b")
        definition = _webhook_definition("fairness-b-dlq", url, on_delivery_failure="dlq")
        run_ids, _ = b.submit_all([definition])
        if not run_ids:
            raise RuntimeError("tenant B's webhook run was refused")

    def result(self, deadline: float) -> dict[str, Any]:
        rows = _wait(self._b.dlq_rows, deadline, 0.5)
        if not rows:
            return {"b_dlq_delivery_s": None, "b_dlq_error": "B's DLQ row was never written"}
        # A row the step writes is due at once: next_attempt_at is its created_at.
        due = _parse(rows[0]["created_at"])
        delivered = _wait(lambda: self._receiver.answered("/fail-then-ok/b", "200"), deadline, 0.2)
        if not delivered:
            return {
                "b_dlq_delivery_s": time.time() - due,  # a lower bound: not delivered yet
                "b_dlq_error": "B's DLQ row was not delivered before the scenario's bound",
            }
        return {
            "b_dlq_delivery_s": delivered[0].at - due,
            "b_dlq_due_at": due,
            "b_dlq_delivered_at": delivered[0].at,
        }


# --- the scenarios --------------------------------------------------------------------------


def _scenario(name: str, sizes: Sizes) -> dict[str, Any]:
    with Receiver() as receiver, _local_stack() as stack:
        tenants: list[Tenant] = []
        try:
            return _measured(name, sizes, stack, receiver, tenants)
        finally:
            for tenant in tenants:
                tenant.close()


def _measured(
    name: str, sizes: Sizes, stack: Stack, receiver: Receiver, tenants: list[Tenant]
) -> dict[str, Any]:
    deadline = time.monotonic() + SCENARIO_SECONDS
    b = Tenant(stack, TENANT_B)
    tenants.append(b)
    out: dict[str, Any] = {}
    probe: _DlqProbe | None = None
    a: Tenant | None = None
    if name == "hanging_webhooks":
        a = Tenant(stack, TENANT_A)
        tenants.append(a)
        definitions = [
            _webhook_definition(
                f"fairness-a-hang-{i}",
                receiver.url(f"/hang/{i}"),
                timeout_seconds=60,
                retry={"max_attempts": 3},
            )
            for i in range(HANGING_RUNS)
        ]
        _, out["a_refused"] = a.submit_all(definitions)
        # Executing: the webhook request is out and held (bounded: with fewer workers than
        # hanging calls, not all of them ever start).
        _wait(lambda: receiver.hanging >= HANGING_RUNS, min(deadline, time.monotonic() + 30), 0.2)
        out["a_hanging_at_b_start"] = receiver.hanging
    elif name == "flood":
        a = Tenant(stack, TENANT_A, users=math.ceil(sizes.flood_runs / RUNS_PER_USER))
        tenants.append(a)
        definition = _log_definition("fairness-a-flood", FLOOD_STEPS)
        started = time.monotonic()
        run_ids, out["a_refused"] = a.submit_all([definition] * sizes.flood_runs)
        out["a_submitted"] = len(run_ids)
        out["a_submit_seconds"] = time.monotonic() - started
        out["a_ended_at_b_start"] = a.ended_runs()
    elif name == "dlq":
        a = Tenant(stack, TENANT_A, users=math.ceil(sizes.dlq_rows / RUNS_PER_USER))
        tenants.append(a)
        definitions = [
            _webhook_definition(
                f"fairness-a-dlq-{i}", receiver.url(f"/fail-then-hang/{i}"), on_delivery_failure="dlq"
            )
            for i in range(sizes.dlq_rows)
        ]
        _, out["a_refused"] = a.submit_all(definitions)
        tenant_a = a
        _wait(lambda: len(tenant_a.dlq_rows()) >= sizes.dlq_rows, deadline, 1.0)
        out["a_dlq_rows_at_b_start"] = len(a.dlq_rows())
    if name in ("baseline", "dlq"):
        probe = _DlqProbe(b, receiver)
    out.update(_measure_b(b, sizes.b_runs, deadline))
    if name == "flood" and a is not None:
        out["a_ended_at_b_end"] = a.ended_runs()
    if name == "hanging_webhooks":
        out["a_webhook_requests"] = len(receiver.answered("/hang/", "hang"))
    if probe is not None:
        out.update(probe.result(deadline))
    if name == "dlq":
        held = receiver.answered("/fail-then-hang/", "hang")
        out["a_dlq_requests"] = len(held)
        # Tells a worker busy with A while B's row waited from one merely between passes: A's
        # deliveries held at some moment of the wait (each for the worker's whole timeout).
        if "b_dlq_delivered_at" in out:
            due, delivered = out["b_dlq_due_at"], out["b_dlq_delivered_at"]
            out["a_dlq_requests_while_b_waited"] = sum(
                a.at < delivered and a.at + DLQ_TIMEOUT_SECONDS > due for a in held
            )
    errors = []
    out["b_run_p95_s_lower_bound"] = out["b_runs_measured"] < sizes.b_runs or out["b_runs_unfinished"] > 0
    out["b_dlq_delivery_s_lower_bound"] = "b_dlq_error" in out
    if out["b_run_p95_s_lower_bound"]:
        errors.append(
            f"{out['b_runs_measured'] - out['b_runs_unfinished']} of {sizes.b_runs} runs of B ended "
            f"within {SCENARIO_SECONDS:.0f} s"
        )
    if out.get("b_dlq_error"):
        errors.append(out["b_dlq_error"])
    if errors:
        out["error"] = "; ".join(errors)
    return out


def _compare(scenarios: dict[str, dict[str, Any]]) -> None:
    """Each scenario's p95s against the baseline's: the delta and whether it meets the target."""
    base = scenarios.get("baseline", {})
    for name, figures in scenarios.items():
        if name == "baseline":
            continue
        for key in ("b_run_p95_s", "b_list_p95_s", "b_dlq_delivery_s"):
            value, reference = figures.get(key), base.get(key)
            if value is None or reference is None:
                continue
            delta = value - reference
            figures[f"{key}_delta"] = delta
            # A lower bound (something did not finish, or was never measured) never meets it.
            incomplete = figures.get(f"{key}_lower_bound") or base.get(f"{key}_lower_bound")
            figures[f"{key}_met"] = delta <= TARGET_DELTA_SECONDS and not incomplete


def run(quick: bool = False) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    scenarios: dict[str, dict[str, Any]] = {}
    for name in SCENARIOS:
        print(f"bench: fairness: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            scenarios[name] = _scenario(name, sizes)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' figures
            scenarios[name] = {"error": f"{type(exc).__name__}: {exc}"}
        scenarios[name]["seconds"] = round(time.monotonic() - started, 1)
    _compare(scenarios)
    return {
        "b_runs": sizes.b_runs,
        "flood_runs": sizes.flood_runs,
        "flood_steps": FLOOD_STEPS,
        "hanging_runs": HANGING_RUNS,
        "dlq_rows": sizes.dlq_rows,
        "scenario_seconds": SCENARIO_SECONDS,
        "target_delta_seconds": TARGET_DELTA_SECONDS,
        "scenarios": scenarios,
    }
