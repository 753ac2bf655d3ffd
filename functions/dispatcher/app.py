"""DispatcherFunction entry point: advances runs from the dispatch queue."""

from workflows.engine.lambda_handler import handle as handler

__all__ = ["handler"]
