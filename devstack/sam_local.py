"""The SAM `--env-vars` file `make run` writes for `sam local invoke` against the local stack.

SAM applies `--env-vars` only to variables template.yaml declares, so the file holds exactly
those: the local stack's real table, queue and bucket names, its API key, its settings, and
AWS_ENDPOINT_URL as a function's container reaches the emulator.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path

from devstack.provision import ROOT, load_sam_template

# DEVSTACK_LOCAL_EVENTS moves them (the end-to-end tests' stacks write theirs elsewhere).
LOCAL_EVENTS = Path(os.environ.get("DEVSTACK_LOCAL_EVENTS") or ROOT / "events" / "local")
ENV_FILE = LOCAL_EVENTS / "env.json"
# Where `make events` finds the running stack (its API, its emulator for this machine, the
# address a function's container calls back on).
STACK_FILE = LOCAL_EVENTS / "stack.json"


def declared_variables() -> list[str]:
    template = load_sam_template()
    return list(template["Globals"]["Function"]["Environment"]["Variables"])


def function_host(bind_address: str) -> str:
    """How a function's container reaches this machine: through loopback when the stack listens
    only there (a container in the host's network, as `sam local invoke --docker-network host`
    on Linux), else through Docker's name for the host."""
    explicit = os.environ.get("FUNCTION_HOST")
    if explicit:
        return explicit
    try:
        loopback = ipaddress.ip_address(bind_address).is_loopback
    except ValueError:
        loopback = bind_address == "localhost"
    return "127.0.0.1" if loopback else "host.docker.internal"


def write_env_file(environ: Mapping[str, str], *, endpoint: str, path: Path = ENV_FILE) -> Path:
    parameters = {name: environ[name] for name in declared_variables() if name in environ}
    parameters["AWS_ENDPOINT_URL"] = endpoint
    # The file holds the stack's API key: readable by its owner only.
    write_private(path, json.dumps({"Parameters": parameters}, indent=2, sort_keys=True) + "\n")
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only (an existing file's mode is tightened too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def write_stack_file(*, api: str, aws_endpoint: str, function_base: str, dispatch_dlq_url: str) -> None:
    STACK_FILE.parent.mkdir(parents=True, exist_ok=True)
    stack = {
        "api": api,
        "aws_endpoint": aws_endpoint,
        "function_base": function_base,
        "dispatch_dlq_url": dispatch_dlq_url,
    }
    STACK_FILE.write_text(json.dumps(stack, indent=2) + "\n")


def read_stack_file() -> dict[str, str]:
    if not STACK_FILE.exists():
        raise SystemExit(f"{STACK_FILE} is missing: start the local stack first (make run)")
    stack: dict[str, str] = json.loads(STACK_FILE.read_text())
    return stack


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    if not path.exists():
        raise SystemExit(f"{path} is missing: start the local stack first (make run)")
    parameters: dict[str, str] = json.loads(path.read_text())["Parameters"]
    return parameters
