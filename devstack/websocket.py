"""The local WebSocket API: what API Gateway's WebSocket stage does for FollowFunction.

A client connects to ws://127.0.0.1:<WS_PORT>/v1?run_id=...&since=N (the deployed stage is
wss://<api>.execute-api.<region>.amazonaws.com/v1). Each connect, message and disconnect
becomes the API Gateway event the deployed routes send (`$connect`, `$default`, `$disconnect`,
with the same requestContext fields) and is handed to the function's handler in-process: a
`$connect` answered with anything but 200 refuses the handshake with that status and body, as
API Gateway does, and the subprotocol the handler names is the one accepted.

The same server plays the stage's management API for the function's boto3 client
(`AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI=http://127.0.0.1:<WS_PORT>`):
`POST /@connections/{id}` sends the body as one text frame, `DELETE /@connections/{id}`
closes the connection (its `$disconnect` follows), and an unknown id answers 410
GoneException.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from devstack.functions import LambdaContext

Handler = Callable[[dict[str, Any], Any], Any]
STAGE = "v1"
# API Gateway's bound on a client's frame (32 KB per billed message; frames up to 128 KB).
MAX_FRAME_BYTES = 128 * 1024


def _gone(connection_id: str) -> Response:
    body = json.dumps({"message": f"connection {connection_id} is gone"})
    return Response(body, status_code=410, headers={"x-amzn-ErrorType": "GoneException"})


class LocalWebSocketApi:
    def __init__(
        self, handler: Handler, *, on_error: Callable[[BaseException], None] = lambda e: None
    ) -> None:
        self._handler = handler
        self._on_error = on_error
        self._connections: dict[str, tuple[WebSocket, asyncio.AbstractEventLoop]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                WebSocketRoute(f"/{STAGE}", self._session),
                Route("/@connections/{connection_id}", self._manage, methods=["POST", "DELETE", "GET"]),
            ]
        )

    # ---- API Gateway's events ---------------------------------------------------------

    def _event(
        self, websocket: WebSocket, kind: str, connection_id: str, body: str | None = None
    ) -> dict[str, Any]:
        route = {"CONNECT": "$connect", "DISCONNECT": "$disconnect", "MESSAGE": "$default"}[kind]
        now = time.time()
        event: dict[str, Any] = {
            "requestContext": {
                "routeKey": route,
                "eventType": kind,
                "connectionId": connection_id,
                "messageDirection": "IN",
                "stage": STAGE,
                "domainName": websocket.url.hostname or "127.0.0.1",
                "apiId": "local",
                "requestId": secrets.token_hex(8),
                "requestTimeEpoch": int(now * 1000),
                "connectedAt": int(now * 1000),
                "identity": {"sourceIp": websocket.client.host if websocket.client else "127.0.0.1"},
            },
            "isBase64Encoded": False,
        }
        if kind == "CONNECT":
            event["headers"] = dict(websocket.headers.items())
            event["queryStringParameters"] = dict(websocket.query_params.items()) or None
        if body is not None:
            event["body"] = body
        return event

    async def _invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            context = LambdaContext(function_name="FollowFunction", memory_limit_in_mb=256, timeout_ms=30_000)
            answer = self._handler(event, context)
            return answer if isinstance(answer, dict) else {}

        try:
            return await asyncio.to_thread(call)
        except Exception as exc:  # noqa: BLE001 - API Gateway answers a failed integration with 500
            self._on_error(exc)
            return {"statusCode": 500, "body": json.dumps({"message": "Internal server error"})}

    async def _session(self, websocket: WebSocket) -> None:
        # Like API Gateway's connection ids: 16 characters of base64 ('=' included); the URL-safe
        # alphabet, since the id is a path segment of the management API.
        connection_id = base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()
        answer = await self._invoke(self._event(websocket, "CONNECT", connection_id))
        status = int(answer.get("statusCode", 500))
        if status != 200:
            body = answer.get("body") or ""
            await websocket.send_denial_response(
                Response(body, status_code=status, media_type="application/json")
            )
            return
        subprotocol = (answer.get("headers") or {}).get("Sec-WebSocket-Protocol")
        await websocket.accept(subprotocol=subprotocol)
        with self._lock:
            self._connections[connection_id] = (websocket, asyncio.get_running_loop())
        try:
            while True:
                text = await websocket.receive_text()
                if len(text.encode()) > MAX_FRAME_BYTES:
                    await websocket.close(code=1009)
                    break
                await self._invoke(self._event(websocket, "MESSAGE", connection_id, text))
        except WebSocketDisconnect:
            pass
        finally:
            with self._lock:
                self._connections.pop(connection_id, None)
            await self._invoke(self._event(websocket, "DISCONNECT", connection_id))

    # ---- the management API -----------------------------------------------------------

    async def _manage(self, request: Request) -> Response:
        connection_id = request.path_params["connection_id"]
        with self._lock:
            found = self._connections.get(connection_id)
        if found is None:
            return _gone(connection_id)
        websocket, _ = found
        if request.method == "GET":
            return Response(json.dumps({"connectedAt": None}), media_type="application/json")
        if request.method == "DELETE":
            with self._lock:
                self._connections.pop(connection_id, None)
            await websocket.close(code=1000)
            return Response(status_code=204)
        data = await request.body()
        if len(data) > MAX_FRAME_BYTES:
            body = json.dumps({"message": "Message too long"})
            return Response(body, status_code=413, headers={"x-amzn-ErrorType": "PayloadTooLargeException"})
        try:
            await websocket.send_text(data.decode())
        except (RuntimeError, WebSocketDisconnect):
            return _gone(connection_id)
        return Response(status_code=200)


class _DenialIsNoError(logging.Filter):
    """uvicorn logs a refused handshake (an HTTP answer instead of the upgrade, as API Gateway
    gives a refused $connect) as an application that never completed it: not an error here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


class WebSocketServer:
    """The local WebSocket API served by uvicorn on its own thread (the API has the main one)."""

    def __init__(self, api: LocalWebSocketApi, *, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            api.app,
            host=host,
            port=port,
            log_level="warning",
            ws="websockets-sansio",
            ws_max_size=MAX_FRAME_BYTES,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_DenialIsNoError())
        self._thread = threading.Thread(target=self._server.run, name="websocket-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
