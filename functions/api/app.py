"""ApiFunction entry point: the public HTTP API."""

from workflows.roots.api import handle as handler

__all__ = ["handler"]
