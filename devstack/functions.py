"""Load each function's real entry point (functions/<name>/app.py) the way Lambda does."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "shared"


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py under a unique module name, with the layer on sys.path."""
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"function_{name}_app", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    """The attributes of a Lambda context object that the handlers and Powertools read."""

    function_name: str = "workflows-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:workflows-local"
    aws_request_id: str = "local"
    log_group_name: str = "/aws/lambda/workflows-local"
    log_stream_name: str = "local"
    timeout_ms: int = 60_000
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        import time

        self._deadline = time.monotonic() + self.timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))
