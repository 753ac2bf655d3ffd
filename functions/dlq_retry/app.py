"""DlqRetryFunction entry point: retries failed webhook deliveries on a schedule."""

from workflows.roots.dlq_worker import handle as handler

__all__ = ["handler"]
