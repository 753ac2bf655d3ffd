"""API Gateway's management API for the WebSocket stage: post a frame to a connection, close
one. A connection that is gone (the client left, or its two hours are up) answers GoneException."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from workflows.adapters.aws import aws_errors, error_code


class ApiGatewayConnections:
    def __init__(self, client: Any) -> None:
        self._client = client

    def post(self, connection_id: str, data: bytes) -> bool:
        try:
            with aws_errors():
                self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except Exception as exc:
            if _gone(exc):
                return False
            raise
        return True

    def close(self, connection_id: str) -> None:
        try:
            with aws_errors():
                self._client.delete_connection(ConnectionId=connection_id)
        except Exception as exc:
            if not _gone(exc):
                raise


def _gone(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ClientError) and error_code(cause) == "GoneException"
