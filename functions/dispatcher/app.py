"""DispatcherFunction entry point: advances runs from the dispatch queue."""

from workflows.roots.dispatcher import handle as handler

__all__ = ["handler"]
