"""ApiFunction entry point: the public HTTP API."""

from workflows.roots.startup import init_phase

with init_phase():
    from workflows.roots.api import handle as handler

__all__ = ["handler"]
