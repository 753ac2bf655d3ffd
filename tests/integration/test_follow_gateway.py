"""The local WebSocket API of `make run` (devstack/websocket.py) with the real management adapter:
on 127.0.0.1 only, a handler of the test's own standing in for FollowFunction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from devstack.websocket import LocalWebSocketApi, WebSocketServer
from tests.localstack import free_port, wait_for
from workflows.adapters.connections import ApiGatewayConnections


class Handler:
    """Answers $connect 200 unless the key is wrong; records every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        if event["requestContext"]["eventType"] == "CONNECT" and headers.get("x-api-key") != "k":
            return {"statusCode": 401, "body": json.dumps({"code": "unauthenticated", "message": "no"})}
        return {"statusCode": 200}

    def connection_id(self) -> str:
        connection_id: str = self.events[0]["requestContext"]["connectionId"]
        return connection_id


@pytest.fixture
def gateway() -> Iterator[tuple[str, Handler, ApiGatewayConnections]]:
    handler = Handler()
    port = free_port()
    server = WebSocketServer(LocalWebSocketApi(handler), host="127.0.0.1", port=port)
    server.start()
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield f"ws://127.0.0.1:{port}/v1", handler, ApiGatewayConnections(client)
    finally:
        server.stop()


def _connect(url: str, **options: Any) -> Any:
    def attempt() -> Any:
        try:
            return connect(f"{url}?run_id=r&since=3", open_timeout=5, **options)
        except ConnectionRefusedError:
            return None  # the server is still starting

    return wait_for(attempt, 10, "the local WebSocket API")


def test_connect_message_post_and_gone(gateway: tuple[str, Handler, ApiGatewayConnections]) -> None:
    url, handler, connections = gateway
    with _connect(url, additional_headers={"X-API-KEY": "k"}) as ws:
        ws.send('{"action": "follow"}')
        wait_for(lambda: len(handler.events) == 2, 5, "the message")
        connection_id = handler.connection_id()

        assert connections.post(connection_id, b'{"type": "events"}')
        assert json.loads(ws.recv(timeout=5)) == {"type": "events"}

    wait_for(lambda: len(handler.events) == 3, 5, "the disconnect")
    kinds = [e["requestContext"]["eventType"] for e in handler.events]
    assert kinds == ["CONNECT", "MESSAGE", "DISCONNECT"]
    assert handler.events[0]["queryStringParameters"] == {"run_id": "r", "since": "3"}
    assert handler.events[1]["body"] == '{"action": "follow"}'
    assert not connections.post(connection_id, b"{}")  # GoneException
    connections.close(connection_id)  # gone: nothing to do


def test_a_refused_connect_answers_the_handlers_status_and_body(
    gateway: tuple[str, Handler, ApiGatewayConnections],
) -> None:
    url, _, _ = gateway
    with pytest.raises(InvalidStatus) as refused:
        _connect(url, additional_headers={"X-API-KEY": "wrong"})
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["code"] == "unauthenticated"


def test_close_ends_the_connection(gateway: tuple[str, Handler, ApiGatewayConnections]) -> None:
    url, handler, connections = gateway
    with _connect(url, additional_headers={"X-API-KEY": "k"}) as ws:
        connections.close(handler.connection_id())
        wait_for(lambda: len(handler.events) == 2, 5, "the disconnect")
        assert ws.close_code is None or ws.close_code == 1000
    assert handler.events[-1]["requestContext"]["eventType"] == "DISCONNECT"


def test_an_error_other_than_gone_is_a_dependency_error() -> None:
    from botocore.stub import Stubber

    from workflows.errors import DependencyUnavailable

    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        stub.add_client_error(
            "post_to_connection", service_error_code="ForbiddenException", http_status_code=403
        )
        with pytest.raises(DependencyUnavailable):
            ApiGatewayConnections(client).post("c1", b"{}")
