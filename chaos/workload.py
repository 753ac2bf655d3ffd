"""The chaos run's clients and webhook receivers: what a busy, impatient user base does.

Every client call is bounded (a timeout per request, a deadline per retry loop); a submission is
retried with its Idempotency-Key on any answer but a 202, as a careful client does.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from chaos.invariants import TERMINAL, Delivery, SignalPlan

# The receivers' behaviours: a fast 200, a 503, a slow 200 and one that answers long after the
# step's timeout (bounded, so that no handler thread outlives the run by more than this).
SLOW_SEC = 3.0
HANG_SEC = 15.0
# How long a run waits for a signal its client sends (far longer than any fault: a wait that times
# out with its signal sent is a signal lost), and one that never comes.
SIGNAL_WAIT_SEC = 60
SIGNAL_TIMEOUT_SEC = 3
SIGNAL_LOOKBACK_SEC = 300


class Receivers:
    """Webhook receivers on 127.0.0.1 that record every request's run, step and webhook-id."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                with receivers._lock:
                    receivers.deliveries.append(
                        Delivery(
                            str(body.get("run")), str(body.get("step")), self.headers.get("webhook-id", "")
                        )
                    )
                status = 200
                if self.path.endswith("/fail"):
                    status = 503
                elif self.path.endswith("/slow"):
                    time.sleep(SLOW_SEC)
                elif self.path.endswith("/hang"):
                    time.sleep(HANG_SEC)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the table is the report."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="receivers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Ledger:
    """What the clients saw: each key's 202s, when each run was submitted and seen ended."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)
    submitted_at: dict[str, float] = field(default_factory=dict)
    ended_at: dict[str, float] = field(default_factory=dict)
    scenarios: dict[str, str] = field(default_factory=dict)
    signal_answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    signal_plans: dict[str, SignalPlan] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def in_flight(self, moment: float) -> set[str]:
        with self.lock:
            return {
                run
                for run, at in self.submitted_at.items()
                if at <= moment and self.ended_at.get(run, float("inf")) > moment
            }


class Client:
    def __init__(self, base: str, api_key: str, ledger: Ledger) -> None:
        self._base = base
        self._http = httpx.Client(headers={"X-API-KEY": api_key}, timeout=10.0)
        self._ledger = ledger

    def close(self) -> None:
        self._http.close()

    def call(
        self, method: str, path: str, body: Any = None, *, patience: float = 60.0
    ) -> httpx.Response | None:
        """The answer, retried through timeouts and 5xx for `patience` seconds; None if none came."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                answer = self._http.request(method, f"{self._base}{path}", json=body)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code < 500:
                return answer
            time.sleep(random.uniform(0.3, 1.0))
        return None

    def submit(
        self,
        scenario: str,
        definition: dict[str, Any],
        *,
        inputs: dict[str, Any] | None = None,
        patience: float = 90.0,
    ) -> str | None:
        """POST /runs with one Idempotency-Key, retried on any answer but a 202."""
        key = f"chaos-{uuid.uuid4().hex}"
        deadline = time.monotonic() + patience
        first = time.monotonic()
        request = {"definition": definition, "inputs": inputs or {}}
        with self._ledger.lock:
            self._ledger.answers[key] = []
        while time.monotonic() < deadline:
            try:
                answer = self._http.post(f"{self._base}/runs", json=request, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 202:
                run_id = str(answer.json()["run_id"])
                with self._ledger.lock:
                    self._ledger.answers[key].append(run_id)
                    self._ledger.submitted_at.setdefault(run_id, first)
                    self._ledger.scenarios.setdefault(run_id, scenario)
                # A second try with the same key must name the same run (one run per key).
                if random.random() < 0.2:
                    continue
                return run_id
            time.sleep(random.uniform(0.3, 1.0))
        with self._ledger.lock:
            if not self._ledger.answers[key]:
                self._ledger.unanswered.add(key)
            runs = self._ledger.answers[key]
        return runs[0] if runs else None

    def signal(self, name: str, signal_id: str, data: dict[str, Any], *, run_id: str | None = None) -> bool:
        """POST /signals (or /runs/{id}/signals), retried through timeouts and 5xx with the same
        id, as a sender that lost the answer does; every 202 is recorded. Whether one came."""
        path = f"/runs/{run_id}/signals" if run_id else "/signals"
        answer = self.call("POST", path, {"name": name, "id": signal_id, "data": data}, patience=60.0)
        if answer is None or answer.status_code != 202:
            return False
        with self._ledger.lock:
            self._ledger.signal_answers.setdefault(signal_id, []).append(answer.json())
        return True

    def waiting_signal(self, run_id: str, patience: float) -> bool:
        """Whether the run began waiting for signals (its `waiting_signal` event) in time."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            answer = self.call("GET", f"/runs/{run_id}/events?types=waiting_signal", patience=20.0)
            if answer is not None and answer.status_code == 200 and answer.json()["events"]:
                return True
            time.sleep(0.5)
        return False

    def status(self, run_id: str) -> dict[str, Any] | None:
        answer = self.call("GET", f"/runs/{run_id}", patience=20.0)
        return answer.json() if answer is not None and answer.status_code == 200 else None

    def wait(
        self, run_id: str, until: Callable[[dict[str, Any]], bool], patience: float
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            run = self.status(run_id)
            if run is not None and until(run):
                if run["status"] in TERMINAL:
                    with self._ledger.lock:
                        self._ledger.ended_at.setdefault(run_id, time.monotonic())
                return run
            time.sleep(0.5)
        return None


def _terminal(run: dict[str, Any]) -> bool:
    return run["status"] in TERMINAL


def _webhook(url: str, *, timeout: float = 5.0, attempts: int = 2) -> dict[str, Any]:
    return {
        "id": "notify",
        "type": "webhook",
        "config": {"url": url, "body": {"run": "{{ run.id }}", "step": "notify"}, "timeout_seconds": timeout},
        "retry": {"max_attempts": attempts, "initial_interval_seconds": 1, "jitter": "none"},
    }


def _log(step_id: str) -> dict[str, Any]:
    return {"id": step_id, "type": "log", "config": {"message": f"{step_id} of {{{{ run.id }}}}"}}


def _wait_for(step_id: str, *names: str, **config: Any) -> dict[str, Any]:
    """A wait_for_signal step for signals of `names` about this run's order (an input)."""
    return {
        "id": step_id,
        "type": "wait_for_signal",
        "config": {
            "signals": [{"name": name, "match": {"order": "{{ inputs.order }}"}} for name in names],
            "timeout_seconds": SIGNAL_WAIT_SEC,
            **config,
        },
    }


def definitions(receivers: str) -> dict[str, dict[str, Any]]:
    delay = {"id": "wait", "type": "delay", "config": {"seconds": 2}}
    return {
        "delay": {"name": "chaos-delay", "steps": [_log("first"), delay, _log("last")]},
        "webhook-ok": {"name": "chaos-webhook-ok", "steps": [_log("first"), _webhook(f"{receivers}/ok")]},
        "webhook-slow": {
            "name": "chaos-webhook-slow",
            "steps": [_webhook(f"{receivers}/slow"), _log("last")],
        },
        "webhook-fail": {"name": "chaos-webhook-fail", "steps": [_webhook(f"{receivers}/fail")]},
        "webhook-hang": {
            "name": "chaos-webhook-hang",
            "steps": [_webhook(f"{receivers}/hang", timeout=2, attempts=1)],
        },
        "approval": {
            "name": "chaos-approval",
            "steps": [
                {
                    "id": "review",
                    "type": "approval",
                    "config": {"instructions": "either"},
                    "on_failure": "_end",
                },
                _log("after"),
            ],
        },
        "cancel": {
            "name": "chaos-cancel",
            "steps": [_log("first"), {"id": "long", "type": "delay", "config": {"seconds": 60}}],
        },
        "map": {
            "name": "chaos-map",
            "steps": [
                {
                    "id": "each",
                    "type": "map",
                    "config": {
                        "items": [1, 2, 3, 4, 5, 6],
                        "steps": [_log("item"), {"id": "pause", "type": "delay", "config": {"seconds": 1}}],
                        "max_concurrency": 3,
                    },
                },
                _log("after"),
            ],
        },
        "parallel-any": {
            "name": "chaos-parallel-any",
            "steps": [
                {
                    "id": "race",
                    "type": "parallel",
                    "config": {
                        "branches": {
                            "fast": [_log("quick")],
                            "slow": [{"id": "nap", "type": "delay", "config": {"seconds": 30}}],
                        },
                        "join": "any",
                    },
                },
                _log("after"),
            ],
        },
        "map-inline": {
            "name": "chaos-map-inline",
            "steps": [
                {
                    "id": "each",
                    "type": "map",
                    "config": {
                        "items": "{{ range(250) | list }}",
                        "steps": [
                            {
                                "id": "odd",
                                "type": "branch",
                                "config": {
                                    "condition": "item % 2 == 1",
                                    "true_next": "said",
                                    "false_next": "_end",
                                },
                            },
                            _log("said"),
                        ],
                    },
                },
                {
                    "id": "both",
                    "type": "parallel",
                    "config": {"branches": {"a": [_log("a1")], "b": [_log("b1")]}},
                },
                _log("after"),
            ],
        },
        "map-cancel": {
            "name": "chaos-map-cancel",
            "steps": [
                {
                    "id": "each",
                    "type": "map",
                    "config": {
                        "items": list(range(8)),
                        "steps": [{"id": "long", "type": "delay", "config": {"seconds": 60}}],
                        "max_concurrency": 4,
                    },
                }
            ],
        },
        "signal-any": {
            "name": "chaos-signal-any",
            "steps": [_wait_for("paid", "chaos.paid", "chaos.voided"), _log("after")],
        },
        "signal-all": {
            "name": "chaos-signal-all",
            "steps": [_wait_for("both", "chaos.packed", "chaos.shipped", mode="all"), _log("after")],
        },
        "signal-lookback": {
            "name": "chaos-signal-lookback",
            "steps": [_wait_for("ready", "chaos.ready", lookback_seconds=SIGNAL_LOOKBACK_SEC), _log("after")],
        },
        "signal-timeout": {
            "name": "chaos-signal-timeout",
            "steps": [
                {
                    **_wait_for("never", "chaos.never", timeout_seconds=SIGNAL_TIMEOUT_SEC),
                    "on_timeout": "gave_up",
                },
                {**_log("came"), "on_success": "_end"},
                _log("gave_up"),
            ],
        },
        "probe": {"name": "chaos-probe", "steps": [_log("only")]},
    }


class Workload:
    """Client threads, each running scenarios one after another until told to stop."""

    SCENARIOS = (
        "delay",
        "webhook-ok",
        "webhook-slow",
        "webhook-fail",
        "webhook-hang",
        "approval",
        "cancel",
        "map",
        "parallel-any",
        "map-cancel",
        "map-inline",
        "signal-any",
        "signal-all",
        "signal-lookback",
        "signal-timeout",
    )

    def __init__(self, base: str, api_key: str, receivers: str, ledger: Ledger, threads: int) -> None:
        self._base = base
        self._key = api_key
        self._defs = definitions(receivers)
        self._ledger = ledger
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"client-{i}", daemon=True)
            for i in range(threads)
        ]
        self.errors: list[str] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Each client ends after its scenario (every wait in one is bounded)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)

    def stop_now(self) -> None:
        self._stop.set()

    def _loop(self, index: int) -> None:
        client = Client(self._base, self._key, self._ledger)
        rng = random.Random(index)
        try:
            while not self._stop.is_set():
                scenario = rng.choice(self.SCENARIOS)
                try:
                    self._run(client, scenario)
                except Exception as exc:  # noqa: BLE001 (a client's own bug is reported, not fatal to the run)
                    self.errors.append(f"{scenario}: {exc!r}")
        finally:
            client.close()

    def _run(self, client: Client, scenario: str) -> None:
        if scenario.startswith("signal-"):
            self._signals(client, scenario)
            return
        run_id = client.submit(scenario, self._defs[scenario])
        if run_id is None:
            return
        if scenario == "approval":
            run = client.wait(run_id, lambda r: r["status"] == "waiting_approval" or _terminal(r), 60)
            if run is not None and run["status"] == "waiting_approval":
                self._race_decisions(client, run_id)
        elif scenario in ("cancel", "map-cancel"):
            time.sleep(random.uniform(0.5, 3.0))
            client.call("POST", f"/runs/{run_id}/cancel", {})
        elif scenario == "webhook-fail":
            run = client.wait(run_id, _terminal, 60)
            if run is not None and run["status"] == "failed":
                client.call("POST", f"/runs/{run_id}/retry", {})
        client.wait(run_id, _terminal, 90)

    def _race_decisions(self, client: Client, run_id: str) -> None:
        """Approve and reject at the same moment: exactly one may be recorded."""

        def decide(decision: str) -> Callable[[], None]:
            def send() -> None:
                client.call("POST", f"/runs/{run_id}/steps/review/{decision}", {"comment": decision})

            return send

        _together(decide("approve"), decide("reject"))

    def _signals(self, client: Client, scenario: str) -> None:
        """A run waiting for signals, and its signals sent twice each (the same id), two senders
        at the same moment: the wait must take each once and end once."""
        order = f"order-{uuid.uuid4().hex}"
        data = {"order": order}
        accepted: set[str] = set()
        plan: SignalPlan | None

        def twice(
            name: str, *, run_id: str | None = None, about: dict[str, Any] = data
        ) -> Callable[[], None]:
            def send() -> None:
                for _ in range(2):
                    if client.signal(name, f"{name}-{order}", about, run_id=run_id):
                        accepted.add(name)

            return send

        if scenario == "signal-lookback":
            # Sent before the run exists: the wait's lookback finds it when it begins; then twice
            # more (the same id) once it has been submitted.
            if client.signal("chaos.ready", f"chaos.ready-{order}", data):
                accepted.add("chaos.ready")
            run_id = client.submit(scenario, self._defs[scenario], inputs=data)
            if run_id is None:
                return
            twice("chaos.ready")()
            plan = SignalPlan("ready", received=1) if accepted else None
        else:
            run_id = client.submit(scenario, self._defs[scenario], inputs=data)
            if run_id is None:
                return
            if not client.waiting_signal(run_id, 60):
                # A run whose kick waits for the sweeper: a signal sent now would come before its
                # wait (which counts none sent before it) and leave it waiting past the drain.
                client.call("POST", f"/runs/{run_id}/cancel", {})
                client.wait(run_id, _terminal, 90)
                return
            if scenario == "signal-any":
                # Either ends the wait, whichever is first; the other finds it no longer waiting.
                # Two senders of the same id at once too: one signal, taken at most once.
                _together(twice("chaos.paid"), twice("chaos.paid"), twice("chaos.voided"))
                plan = SignalPlan("paid", received=1) if accepted else None
            elif scenario == "signal-all":
                # One to every waiting run, one to this run only.
                _together(twice("chaos.packed"), twice("chaos.shipped", run_id=run_id))
                plan = SignalPlan("both", received=2) if len(accepted) == 2 else None
            else:
                # Another order's signal of the awaited name: not taken; the wait times out.
                twice("chaos.never", about={"order": f"other-{order}"})()
                plan = SignalPlan("never", received=0, timed_out=True)
        if plan is not None:
            with self._ledger.lock:
                self._ledger.signal_plans[run_id] = plan
        client.wait(run_id, _terminal, 90)


def _together(*actions: Callable[[], None]) -> None:
    """Each action in a thread of its own, all released at the same moment; bounded."""
    start = threading.Barrier(len(actions))

    def go(action: Callable[[], None]) -> None:
        # A racer slow to start breaks the barrier: the actions still run, less at once.
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=10)
        action()

    racers = [threading.Thread(target=go, args=(action,)) for action in actions]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=90)
