"""DlqRetryFunction entry point: retries failed webhook deliveries on a schedule."""

from workflows.webhooks.lambda_handler import handle as handler

__all__ = ["handler"]
