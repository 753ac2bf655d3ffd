"""DlqRetryFunction entry point: retries failed webhook deliveries on a schedule."""

from workflows.roots.startup import init_phase

with init_phase():
    from workflows.roots.dlq_worker import handle as handler

__all__ = ["handler"]
