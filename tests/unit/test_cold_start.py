"""The dispatcher and DLQ functions must not pay for the HTTP stack at cold start."""

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
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def _modules_loaded_by(function: str) -> set[str]:
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


@pytest.mark.parametrize("function", ["dispatcher", "dlq_retry"])
def test_worker_functions_do_not_import_the_web_stack(function: str) -> None:
    loaded = _modules_loaded_by(function)
    assert "workflows" in loaded  # the probe really imported the entry point
    assert loaded.isdisjoint(WEB_STACK), sorted(loaded & set(WEB_STACK))


def test_api_function_does_import_the_web_stack() -> None:
    # The same probe sees the web stack where it is expected, so the check above can fail.
    assert set(WEB_STACK) <= _modules_loaded_by("api")
