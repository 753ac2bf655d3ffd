"""2. Cold start: import time of each function's entry module against its bare dependencies.

Each sample is a fresh interpreter; the variants are interleaved so drift hits them alike.

The API is also measured the way a client meets it: the import plus its first request, through
the handler, against a one-route FastAPI app behind Mangum and the same Powertools decorators
answering one request. FastAPI builds an included router's routes when a request first walks
them, and the API function builds the routes of a group of paths when the group's first request
arrives, so much of its cold start happens in that request. The figure with a target is a run
read (`GET /runs/{id}`, authenticated, the id refused before any storage read, so no AWS call):
the runs routes, the ones most clients meet first. Informational: the health route (no route
module) and a definition's dry run (`POST /validate`, the definitions routes and models).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from typing import Any

from bench import common

FORBIDDEN = ("fastapi", "starlette", "mangum")
POWERTOOLS = "from aws_lambda_powertools import Logger, Metrics, Tracer\nLogger(); Metrics(); Tracer()\n"
BASELINES = {
    "api": "import fastapi, mangum, pydantic, boto3\n" + POWERTOOLS,
    # Only what the workers import at cold start: httpx (loaded on first use) would drag click
    # and rich from the dev virtualenv into the baseline and flatter the ratio.
    "worker": "import boto3, pydantic\n" + POWERTOOLS,
}
FUNCTION = """
import importlib.util
spec = importlib.util.spec_from_file_location("function_app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""
# The first request, after the import, through the real handler.
FIRST_REQUEST = "response = module.handler(EVENT, Context())\n"
# The baseline's equivalent: one route, wrapped like ours (Mangum, Powertools decorators).
MINIMAL_API = """
import fastapi, mangum, pydantic, boto3
from aws_lambda_powertools import Logger, Metrics, Tracer

logger, metrics, tracer = Logger(), Metrics(), Tracer()
app = fastapi.FastAPI()


@app.get("/api/v1/workflows/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


asgi = mangum.Mangum(app, lifespan="off", api_gateway_base_path="/")


@logger.inject_lambda_context(
    correlation_id_path="requestContext.requestId", clear_state=True, log_event=False
)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return asgi(event, context)


response = handler(EVENT, Context())
"""
# Untimed: the event and a Lambda context with what Powertools reads.
REQUEST_SETUP = """
EVENT = json.loads(open({event!r}).read())
EVENT.update(rawPath={path!r}, headers={{**EVENT["headers"], "x-api-key": {key!r}}})
EVENT["requestContext"]["http"].update(path={path!r}, method={method!r})
if {body!r}:
    EVENT.update(body={body!r})
    EVENT["headers"].update({{"content-type": "application/json", "content-length": str(len({body!r}))}})


class Context:
    function_name = "ApiFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"
    aws_request_id = "cold-start"

    def get_remaining_time_in_millis(self):
        return 29_000


response = None
"""
HARNESS = """
import json, sys, time
sys.path.insert(0, {layer!r})
{setup}
started = time.perf_counter()
{body}
elapsed = time.perf_counter() - started
status = response.get("statusCode") if isinstance(response, dict) else None
print(json.dumps({{"seconds": elapsed, "forbidden": [m for m in {forbidden!r} if m in sys.modules],
                  "status": status}}))
"""


# The first requests measured (none calls AWS): name -> (method, path, body, expected status).
FIRST_REQUESTS = {
    "api_first_request": ("GET", "/api/v1/workflows/runs/not-a-run-id", "", 404),
    "api_first_health_request": ("GET", "/api/v1/workflows/health", "", 200),
    "api_first_definitions_request": ("POST", "/api/v1/workflows/validate", '{"name": "x"}', 200),
}
HEALTH = ("GET", "/api/v1/workflows/health", "")


def _code(body: str, *, request: tuple[str, str, str] | None = None) -> str:
    setup = "response = None"
    if request is not None:
        method, path, payload = request
        event = str(common.EVENTS / "ApiFunction/health.json")
        setup = REQUEST_SETUP.format(event=event, method=method, path=path, body=payload, key=common.API_KEY)
    return HARNESS.format(layer=str(common.LAYER), setup=setup, body=body, forbidden=FORBIDDEN)


def _function_body(name: str) -> str:
    return FUNCTION.format(path=str(common.ROOT / "functions" / name / "app.py"))


def _sample(code: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **common.ENVIRONMENT, "WORKFLOWS_API_KEY": common.API_KEY}
    # Bytecode caches are written and then used (warm): any value of this variable, "0"
    # included, stops Python writing them, and every changed module would be compiled per sample.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [sys.executable, *extra, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )


def _importtime(code: str) -> dict[str, tuple[float, float]]:
    """Module -> (self ms, cumulative ms), from `python -X importtime`."""
    stderr = _sample(code, "-X", "importtime").stderr
    rows = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s*(\S+)", line)
        if match:
            rows[match.group(3)] = (int(match.group(1)) / 1000, int(match.group(2)) / 1000)
    return rows


def top_imports(code: str, baseline: str, count: int = 10) -> dict[str, Any]:
    """What the entry module imports beyond its baseline, largest self time first."""
    ours, base = _importtime(code), _importtime(baseline)
    extra = {name: times for name, times in ours.items() if name not in base}
    top = sorted(extra.items(), key=lambda kv: -kv[1][0])[:count]
    return {
        "extra_modules": len(extra),
        "extra_self_ms": round(sum(t[0] for t in extra.values()), 1),
        "top_extra_self_ms": [[name, round(t[0], 1)] for name, t in top],
    }


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 7 if quick else 9
    variants = {
        "api": _code(_function_body("api")),
        "dispatcher": _code(_function_body("dispatcher")),
        "dlq_retry": _code(_function_body("dlq_retry")),
        "api_baseline": _code(BASELINES["api"]),
        "worker_baseline": _code(BASELINES["worker"]),
        "api_first_request_baseline": _code(MINIMAL_API, request=HEALTH),
    }
    for name, (method, path, payload, _) in FIRST_REQUESTS.items():
        variants[name] = _code(_function_body("api") + FIRST_REQUEST, request=(method, path, payload))
    for code in variants.values():  # warm the bytecode caches once, unmeasured
        _sample(code)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    forbidden: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, code in variants.items():
            out = json.loads(_sample(code).stdout.strip().splitlines()[-1])
            expected = (
                FIRST_REQUESTS.get(name, (None, None, None, 200))[3] if name.startswith("api_first") else None
            )
            if expected is not None and out["status"] != expected:
                raise RuntimeError(f"{name}: the first request answered {out['status']}, not {expected}")
            samples[name].append(out["seconds"])
            forbidden[name] = out["forbidden"]
    medians = {name: statistics.median(values) for name, values in samples.items()}
    result: dict[str, Any] = {"repeats": repeats}
    # The API's import alone has no target: work moved from the import into the first request
    # (FastAPI's own route building included) is counted by the first-request figures.
    result["api_import_ms"] = medians["api"] * 1000
    result["api_import_ratio"] = medians["api"] / medians["api_baseline"]
    targets = {"dispatcher": 1.25, "dlq_retry": 1.25}
    for name, target in targets.items():
        base = "worker_baseline"
        ratio = medians[name] / medians[base]
        result[f"{name}_ms"] = medians[name] * 1000
        result[f"{name}_baseline_ms"] = medians[base] * 1000
        result[f"{name}_ratio"] = ratio
        result[f"{name}_target"] = target
        result[f"{name}_forbidden_modules"] = forbidden[name]
        if ratio > target:
            result[f"{name}_imports_beyond_baseline"] = top_imports(variants[name], variants[base])
    first_base = medians["api_first_request_baseline"]
    result["api_first_request_baseline_ms"] = first_base * 1000
    for name in FIRST_REQUESTS:
        result[f"{name}_ms"] = medians[name] * 1000
        result[f"{name}_ratio"] = medians[name] / first_base
    result["api_first_request_target"] = 1.25
    if result["api_first_request_ratio"] > 1.25:
        result["api_first_request_imports_beyond_baseline"] = top_imports(
            variants["api_first_request"], variants["api_first_request_baseline"]
        )
    return result
