"""The dispatcher and DLQ functions must not pay for the HTTP stack at cold start, and no
function pays at import for what only some invocations use (step types that call out, webhook
delivery, templating): those modules are imported on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB_STACK = ("fastapi", "starlette", "mangum")

PROBE = """
import importlib.util, json, sys
sys.path.insert(0, {layer!r})
spec = importlib.util.spec_from_file_location("app", {entry!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert callable(module.handler)
print(json.dumps(sorted(sys.modules)))
"""
# Loaded on first use only: by a definition using the step type, a delivery, a rendering.
FIRST_USE_ONLY = (
    "workflows.steps.prompt",
    "workflows.steps.rag_search",
    "workflows.steps.webhook",
    "workflows.steps.llm",
    "workflows.steps.retrieval",
    "workflows.adapters.http.delivery",
    "workflows.adapters.http.egress",
    "workflows.services.webhooks.worker",
    "workflows.templating",
    "httpx",
    "httpcore",
    "jinja2",
)
CONFIGURED = """
import json, sys
sys.path.insert(0, {layer!r})
from workflows.roots.parts import Parts
from workflows.settings import Settings
names = Parts(Settings()).registry.names()
loaded_before = "workflows.steps.prompt" in sys.modules
print(json.dumps({{"names": names, "loaded_before": loaded_before}}))
"""


def _modules_loaded_by(function: str) -> set[str]:
    return {name.split(".")[0] for name in _all_modules_loaded_by(function)}


def _all_modules_loaded_by(function: str) -> set[str]:
    code = PROBE.format(
        layer=str(ROOT / "layers" / "shared"), entry=str(ROOT / "functions" / function / "app.py")
    )
    env = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", ["dispatcher", "dispatch_dlq", "dlq_retry", "sweeper"])
def test_worker_functions_do_not_import_the_web_stack(function: str) -> None:
    loaded = _modules_loaded_by(function)
    assert "workflows" in loaded  # the probe really imported the entry point
    assert loaded.isdisjoint(WEB_STACK), sorted(loaded & set(WEB_STACK))


def test_api_function_does_import_the_web_stack() -> None:
    # The same probe sees the web stack where it is expected, so the check above can fail.
    assert set(WEB_STACK) <= _modules_loaded_by("api")


@pytest.mark.parametrize("function", ["api", "dispatcher", "dispatch_dlq", "dlq_retry", "sweeper"])
def test_entry_points_leave_first_use_modules_unloaded(function: str) -> None:
    loaded = _all_modules_loaded_by(function)
    assert "workflows.roots.parts" in loaded
    assert loaded.isdisjoint(FIRST_USE_ONLY), sorted(loaded & set(FIRST_USE_ONLY))


def test_the_api_function_imports_no_route_module_until_a_request_needs_it() -> None:
    # Each request's app is built with the route modules of its path, on that path's first
    # request (workflows.roots.api), so the import loads none of them.
    loaded = _all_modules_loaded_by("api")
    assert "workflows.api.app" in loaded
    assert not {name for name in loaded if name.startswith("workflows.api.routes.")}


def test_every_step_type_is_known_before_its_module_is_loaded() -> None:
    code = CONFIGURED.format(layer=str(ROOT / "layers" / "shared"))
    env = {"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["names"] == [
        "approval",
        "branch",
        "delay",
        "log",
        "map",
        "parallel",
        "prompt",
        "rag_search",
        "wait_for_signal",
        "webhook",
        "workflow",
    ]
    assert result["loaded_before"] is False
