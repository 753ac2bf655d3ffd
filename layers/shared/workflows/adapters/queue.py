"""The SQS dispatch queue: sends kicks. SQS caps DelaySeconds at 900; longer waits chain."""

from __future__ import annotations

from typing import Any

from workflows.adapters.aws import aws_errors
from workflows.domain.messages import QueuedMessage


class SqsDispatchQueue:
    """Sends kicks to the dispatch queue. SQS caps DelaySeconds at 900; longer waits chain."""

    MAX_DELAY_SECONDS = 900

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send(self, message: QueuedMessage, *, delay_seconds: int = 0) -> None:
        delay = max(0, min(int(delay_seconds), self.MAX_DELAY_SECONDS))
        with aws_errors():
            # The tenant as message group makes the standard queue a fair queue: while one tenant
            # has a backlog, SQS delivers the other tenants' messages first (docs/architecture.md).
            self._client.send_message(
                QueueUrl=self._url,
                MessageBody=message.to_body(),
                DelaySeconds=delay,
                MessageGroupId=message.tenant_id,
            )
