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

The figures above run the working tree (`layers/shared` on sys.path, its own bytecode caches
warm). The `*_built_*` figures run what is deployed: the `sam build` output (a function's code
folder and the layer's `python/` folder on sys.path, nothing else beyond the standard library:
`-I -S`), read-only as in Lambda (`-B`: a module without bytecode is compiled on every sample),
against baselines built by the same Makefile rule and measured the same way. The same samples
are taken in a copy of that output without its `__pycache__` folders, the build as it was
before it shipped bytecode.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
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
MINIMAL_API_MODULE = """
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
"""
MINIMAL_API = MINIMAL_API_MODULE + "\n\nresponse = handler(EVENT, Context())\n"
# The dispatcher's built baseline: what the workers import (boto3, pydantic, Powertools) and a
# batch handler like theirs that parses each record's body with a pydantic model.
MINIMAL_WORKER_MODULE = """
import boto3, pydantic
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

logger, metrics, tracer = Logger(), Metrics(), Tracer()


class Message(pydantic.BaseModel):
    kind: str
    run_id: str


def record_handler(record):
    return Message.model_validate_json(record.body).kind


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
"""
# The floor, for scale: a handler importing nothing but boto3 (the runtime has its own copy).
BOTO3_ONLY_MODULE = """
import boto3


def handler(event, context):
    return {"statusCode": 200}
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
# The dispatcher's first batch: one record whose body is no message (refused when parsed, before
# any AWS call; the batch reports it failed).
RECORD_SETUP = """
EVENT = json.loads(open({event!r}).read())
EVENT["Records"][0]["body"] = json.dumps({{"v": 1, "kind": "not-a-message"}})


class Context:
    function_name = "DispatcherFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:DispatcherFunction"
    aws_request_id = "cold-start"

    def get_remaining_time_in_millis(self):
        return 119_000


response = None
"""
HARNESS = """
import json, sys, time
sys.path[:0] = {paths!r}
{setup}
started = time.perf_counter()
{body}
elapsed = time.perf_counter() - started
status = response.get("statusCode") if isinstance(response, dict) else None
failed = len(response.get("batchItemFailures", [])) if isinstance(response, dict) else None
print(json.dumps({{"seconds": elapsed, "forbidden": [m for m in {forbidden!r} if m in sys.modules],
                  "status": status, "failed": failed}}))
"""


# The first requests measured (none calls AWS): name -> (method, path, body, expected status).
FIRST_REQUESTS = {
    "api_first_request": ("GET", "/api/v1/workflows/runs/not-a-run-id", "", 404),
    "api_first_health_request": ("GET", "/api/v1/workflows/health", "", 200),
    "api_first_definitions_request": ("POST", "/api/v1/workflows/validate", '{"name": "x"}', 200),
}
HEALTH = ("GET", "/api/v1/workflows/health", "")


def _code(
    body: str,
    *,
    request: tuple[str, str, str] | None = None,
    record: bool = False,
    paths: tuple[Path, ...] = (common.LAYER,),
) -> str:
    setup = "response = None"
    if request is not None:
        method, path, payload = request
        event = str(common.EVENTS / "ApiFunction/health.json")
        setup = REQUEST_SETUP.format(event=event, method=method, path=path, body=payload, key=common.API_KEY)
    if record:
        setup = RECORD_SETUP.format(event=str(common.EVENTS / "DispatcherFunction/sqs.json"))
    return HARNESS.format(paths=[str(p) for p in paths], setup=setup, body=body, forbidden=FORBIDDEN)


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


def _importtime(code: str, *flags: str) -> dict[str, tuple[float, float]]:
    """Module -> (self ms, cumulative ms), from `python -X importtime`."""
    stderr = _sample(code, *flags, "-X", "importtime").stderr
    rows = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s*(\S+)", line)
        if match:
            rows[match.group(3)] = (int(match.group(1)) / 1000, int(match.group(2)) / 1000)
    return rows


def top_imports(code: str, baseline: str, count: int = 10, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the entry module imports beyond its baseline, largest self time first."""
    ours, base = _importtime(code, *flags), _importtime(baseline, *flags)
    extra = {name: times for name, times in ours.items() if name not in base}
    top = sorted(extra.items(), key=lambda kv: -kv[1][0])[:count]
    return {
        "extra_modules": len(extra),
        "extra_self_ms": round(sum(t[0] for t in extra.values()), 1),
        "top_extra_self_ms": [[name, round(t[0], 1)] for name, t in top],
    }


# ---- the `sam build` output ------------------------------------------------------------------

BUILDS = common.ROOT / ".aws-sam" / "bench"
SAM = common.ROOT / ".venv-tools" / "bin" / "sam"
LAMBDA_BUILD = common.LAYER / "sam"
# Built by the functions' own Makefile rule (every function's target runs the same recipe).
BUILT_BASELINES = {
    "ApiBaseline": MINIMAL_API_MODULE,
    "WorkerBaseline": MINIMAL_WORKER_MODULE,
    "Boto3Only": BOTO3_ONLY_MODULE,
}
BUILT_FOLDERS = ("SharedLayer", "ApiFunction", "DispatcherFunction", *BUILT_BASELINES)
# What Lambda gives the code: its folder, the layer, the standard library; nothing is written.
BUILT_FLAGS = ("-I", "-S", "-B")
BUILT_TARGET = 1.25


def _architecture() -> str:
    """The template's Architecture for this machine: the layer's wheels must load here."""
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


def _sources_key(arch: str) -> str:
    """A hash of everything the build reads: the template, the layer's folder (requirements,
    package, Makefiles), the functions' folders and the baselines' code."""
    digest = hashlib.sha256(arch.encode())
    files = [common.ROOT / "template.yaml"]
    for folder in (common.LAYER, common.ROOT / "functions"):
        files += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(common.ROOT)).encode() + b"\0" + path.read_bytes())
    for name, source in sorted(BUILT_BASELINES.items()):
        digest.update(name.encode() + b"\0" + source.encode())
    return digest.hexdigest()[:16]


def _run_logged(args: list[str], log: Path, **kwargs: Any) -> None:
    with log.open("a") as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=900, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed (log: {log})")


def built_output() -> tuple[Path, dict[str, Any]]:
    """The folder holding `build/` (sam build's output plus the built baselines) and
    `no_bytecode/` (the same without `__pycache__`), built once per sources' hash."""
    arch = _architecture()
    key = _sources_key(arch)
    home = BUILDS / f"{arch}-{key}"
    info: dict[str, Any] = {"arch": arch, "sources_key": key, "folder": str(home), "sam_build_seconds": None}
    if (home / "complete").exists():
        return home, {**json.loads((home / "complete").read_text()), "reused": True}
    python = shutil.which("python3.11")
    if not SAM.exists() or python is None:
        raise RuntimeError("the built figures need the SAM CLI (make tools) and python3.11 on PATH")
    for stale in BUILDS.glob(f"{arch}-*"):
        shutil.rmtree(stale)
    build, log = home / "build", home / "build.log"
    home.mkdir(parents=True)
    # As `make build` runs it: python3.11 (the one whose pip and compileall sam build uses) first.
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}",
    }
    started = time.monotonic()
    _run_logged(
        [str(SAM), "build", "--template", str(common.ROOT / "template.yaml"), "--build-dir", str(build),
         "--no-cached", "--parameter-overrides", f"Architecture={arch}"],
        log, cwd=common.ROOT, env=env,
    )  # fmt: skip
    info["sam_build_seconds"] = round(time.monotonic() - started, 1)
    for name, source in BUILT_BASELINES.items():
        src = home / "src" / name
        src.mkdir(parents=True)
        (src / "app.py").write_text(source.lstrip())
        (src / "requirements.txt").write_text("# Code comes from the shared layer.\n")
        (build / name).mkdir()
        makefile = LAMBDA_BUILD / arch / "Makefile"
        _run_logged(
            ["make", "--makefile", str(makefile), "build-ApiFunction"],
            log, cwd=src, env={**env, "ARTIFACTS_DIR": str(build / name)},
        )  # fmt: skip
    # Measured is what ships: every module with its bytecode, or the build failed.
    _run_logged(
        [sys.executable, str(LAMBDA_BUILD / "check_bytecode.py"), *(str(build / f) for f in BUILT_FOLDERS)],
        log,
    )
    for folder in BUILT_FOLDERS:
        shutil.copytree(
            build / folder, home / "no_bytecode" / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    (home / "complete").write_text(json.dumps(info) + "\n")
    return home, info


def _built_code(root: Path, folder: str, **setup: Any) -> str:
    """A built function's (or baseline's) import and first request, its folder and the layer's
    `python/` on sys.path."""
    body = FUNCTION.format(path=str(root / folder / "app.py")) + FIRST_REQUEST
    return _code(body, paths=(root / folder, root / "SharedLayer" / "python"), **setup)


def _built_variants(home: Path) -> dict[str, str]:
    run_read = FIRST_REQUESTS["api_first_request"][:3]
    variants = {}
    for tree, suffix in (("build", ""), ("no_bytecode", "_no_bytecode")):
        root = home / tree
        variants[f"api_built{suffix}"] = _built_code(root, "ApiFunction", request=run_read)
        variants[f"api_built_baseline{suffix}"] = _built_code(root, "ApiBaseline", request=HEALTH)
        variants[f"dispatcher_built{suffix}"] = _built_code(root, "DispatcherFunction", record=True)
        variants[f"dispatcher_built_baseline{suffix}"] = _built_code(root, "WorkerBaseline", record=True)
    variants["boto3_only_built"] = _built_code(home / "build", "Boto3Only", request=HEALTH)
    return variants


def _expected(name: str) -> tuple[str, int] | None:
    """What a variant's handler must answer: ("status", HTTP status) or ("failed", records)."""
    if name.startswith("api_first"):
        return "status", FIRST_REQUESTS.get(name, (None, None, None, 200))[3]
    if name.startswith("api_built_baseline") or name == "boto3_only_built":
        return "status", 200
    if name.startswith("api_built"):
        return "status", FIRST_REQUESTS["api_first_request"][3]
    if name.startswith("dispatcher_built"):
        return "failed", 1
    return None


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 7 if quick else 9
    home, built = built_output()
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
    built_variants = _built_variants(home)
    variants.update(built_variants)
    flags = {name: BUILT_FLAGS if name in built_variants else () for name in variants}
    for name, code in variants.items():  # warm the bytecode caches (and the file cache) once, unmeasured
        _sample(code, *flags[name])
    samples: dict[str, list[float]] = {name: [] for name in variants}
    forbidden: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, code in variants.items():
            out = json.loads(_sample(code, *flags[name]).stdout.strip().splitlines()[-1])
            expected = _expected(name)
            if expected is not None and out[expected[0]] != expected[1]:
                raise RuntimeError(f"{name}: the first request answered {out}, not {expected}")
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
    # The deployed build: each function against its built baseline, with and without bytecode.
    result["built"] = built
    for name in ("api", "dispatcher"):
        for suffix in ("", "_no_bytecode"):
            ours, base = medians[f"{name}_built{suffix}"], medians[f"{name}_built_baseline{suffix}"]
            result[f"{name}_built{suffix}_ms"] = ours * 1000
            result[f"{name}_built_baseline{suffix}_ms"] = base * 1000
            result[f"{name}_built{suffix}_ratio"] = ours / base
        result[f"{name}_built_target"] = BUILT_TARGET
        result[f"{name}_built_bytecode_saves_ms"] = (
            result[f"{name}_built_no_bytecode_ms"] - result[f"{name}_built_ms"]
        )
        result[f"{name}_built_to_boto3_only_ratio"] = medians[f"{name}_built"] / medians["boto3_only_built"]
        if result[f"{name}_built_ratio"] > BUILT_TARGET:
            result[f"{name}_built_imports_beyond_baseline"] = top_imports(
                variants[f"{name}_built"], variants[f"{name}_built_baseline"], flags=BUILT_FLAGS
            )
    result["boto3_only_built_ms"] = medians["boto3_only_built"] * 1000
    return result
