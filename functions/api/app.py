"""ApiFunction entry point: the public HTTP API."""

from workflows.api.lambda_handler import handle as handler

__all__ = ["handler"]
