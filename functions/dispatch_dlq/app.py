"""DispatchDlqFunction entry point: fails the runs whose dispatch messages were dead-lettered."""

from workflows.roots.startup import init_phase

with init_phase():
    from workflows.roots.dispatch_dlq import handle as handler

__all__ = ["handler"]
