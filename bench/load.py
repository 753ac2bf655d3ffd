"""6. Local-stack load: N runs of five `log` steps submitted over HTTP at once to `make run`.

The stack is started as a subprocess on free loopback ports (its own moto server included) and
stopped at the end. Runs are submitted from a bounded thread pool; completion is read from each
run's `ended_at`, so polling granularity does not blur the rate. Every run's events are then
checked for gaps: event_seq must be exactly 1..n with the expected n.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bench import common

API_KEY = "bench-load-key"
STEPS = 5
EXPECTED_EVENTS = 2 + 2 * STEPS  # run_started, step_started/step_completed per step, run_completed
SUBMITTERS = 16


def _definition() -> dict[str, Any]:
    return {
        "name": "load",
        "steps": [
            {"id": f"s{i}", "type": "log", "config": {"message": f"step {i}"}} for i in range(1, STEPS + 1)
        ],
    }


def _parse(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _start_stack() -> tuple[subprocess.Popen[bytes], str]:
    port, moto_port = common.free_port(), common.free_port()
    env = {
        **os.environ,
        **{k: v for k, v in common.ENVIRONMENT.items() if k.startswith("AWS_")},
        "PORT": str(port),
        "MOTO_PORT": str(moto_port),
        "WORKFLOWS_API_KEY": API_KEY,
        "LOG_LEVEL": "ERROR",
        "DEVSTACK_VISIBILITY_TIMEOUT": "30",
        "WORKFLOWS_WEBHOOK_DLQ_ENABLED": "false",
        # No activity lines: one events query per dispatch for the terminal costs a fifth of the
        # throughput, and the figure is the service's, not the convenience's.
        "DEVSTACK_ACTIVITY": "off",
        # Its sam local files apart from those of a stack the developer runs.
        "DEVSTACK_LOCAL_EVENTS": tempfile.mkdtemp(prefix="bench-load-events-"),
        # The layer on the path from the start, as in Lambda (the stack adds it itself too).
        "PYTHONPATH": os.pathsep.join(p for p in (str(common.LAYER), os.environ.get("PYTHONPATH", "")) if p),
    }
    env.pop("AWS_ENDPOINT_URL", None)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=common.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}/api/v1/workflows"


def _stop_stack(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(quick: bool = False) -> dict[str, Any]:
    import httpx

    runs = 200 if quick else 1000
    deadline_seconds = 120 if quick else 240
    process, base = _start_stack()
    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    client = httpx.Client(base_url=base, headers={"X-API-KEY": API_KEY}, timeout=30, limits=limits)
    try:
        ready_by = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError("the local stack exited during start-up")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > ready_by:
                raise RuntimeError("the local stack did not come up within 120 s")
            time.sleep(0.25)

        body = {"definition": _definition(), "inputs": {"name": "Ada"}}

        def submit(_: int) -> str | None:
            response = client.post("/runs", json=body)
            return str(response.json()["run_id"]) if response.status_code == 202 else None

        started_wall = time.time()
        started = time.monotonic()
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            submitted = list(pool.map(submit, range(runs)))
        submit_seconds = time.monotonic() - started
        run_ids = [r for r in submitted if r]

        pending = set(run_ids)
        finished: dict[str, dict[str, Any]] = {}
        deadline = started + deadline_seconds

        def read(run_id: str) -> dict[str, Any]:
            return dict(client.get(f"/runs/{run_id}").json())

        with ThreadPoolExecutor(4) as pool:
            while pending and time.monotonic() < deadline:
                time.sleep(2.0)  # the stack is one process: polling competes with the work
                for run in pool.map(read, sorted(pending)):
                    if run.get("status") in ("succeeded", "failed", "cancelled"):
                        finished[run["run_id"]] = run
                        pending.discard(run["run_id"])

            def gap_free(run_id: str) -> bool:
                events = client.get(f"/runs/{run_id}/events", params={"since": 0, "limit": 1000}).json()[
                    "events"
                ]
                return [e["event_seq"] for e in events] == list(range(1, EXPECTED_EVENTS + 1))

            checked = list(pool.map(gap_free, sorted(finished)))
    finally:
        client.close()
        _stop_stack(process)
    succeeded = [r for r in finished.values() if r["status"] == "succeeded"]
    ended = [_parse(r["ended_at"]) for r in succeeded if r.get("ended_at")]
    elapsed = (max(ended) - started_wall) if ended else float("nan")
    return {
        "runs": runs,
        "steps_per_run": STEPS,
        "accepted": len(run_ids),
        "succeeded": len(succeeded),
        "unfinished": len(pending),
        "gap_free_runs": sum(checked),
        "submit_seconds": submit_seconds,
        "submissions_per_second": len(run_ids) / submit_seconds,
        "seconds_to_last_completion": elapsed,
        "runs_per_second": len(succeeded) / elapsed if ended else 0.0,
        "steps_per_second": len(succeeded) * STEPS / elapsed if ended else 0.0,
    }
