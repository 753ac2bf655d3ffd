"""DispatcherFunction entry point: advances runs from the dispatch queue."""

from workflows.roots.startup import init_phase

with init_phase():
    from workflows.roots.dispatcher import handle as handler

__all__ = ["handler"]
