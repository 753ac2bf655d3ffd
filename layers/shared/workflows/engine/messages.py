"""The dispatch queue's message protocol (versioned).

A message is a *kick*: "advance run R of tenant T, which should be at version V". What to do is
derived from the run item itself (status, current step, attempt), Step Functions style, so a
message carries no state that could disagree with the table. A kick for an older version is
stale; duplicates and late deliveries therefore change nothing.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.aws import aws_errors

PROTOCOL_VERSION = 1


class AdvanceMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    kind: Literal["advance"] = "advance"
    tenant_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    version: int = Field(ge=1)

    def to_body(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_body(cls, body: str) -> AdvanceMessage:
        return cls.model_validate(json.loads(body))


class DispatchQueue:
    """Sends kicks to the dispatch queue. SQS caps DelaySeconds at 900; longer waits chain."""

    MAX_DELAY_SECONDS = 900

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send(self, message: AdvanceMessage, *, delay_seconds: int = 0) -> None:
        delay = max(0, min(int(delay_seconds), self.MAX_DELAY_SECONDS))
        with aws_errors():
            self._client.send_message(QueueUrl=self._url, MessageBody=message.to_body(), DelaySeconds=delay)
