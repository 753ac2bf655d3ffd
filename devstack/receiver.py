"""A webhook receiver on the local stack: `POST /_local/webhooks/<name>` answers 204 and prints one
line; `GET /_local/webhooks` lists the last 100 deliveries (newest last), headers and body.

Workflows' webhook steps, completion webhooks and the webhook DLQ worker can deliver to it
without a server of your own; `make events` addresses its DLQ row here.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

PREFIX = "/_local/webhooks"
KEPT = 100
MAX_BODY = 256 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebhookReceiver:
    def __init__(self, *, echo: bool = True) -> None:
        self._received: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self._lock = threading.Lock()
        self._echo = echo

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"].rstrip("/") == PREFIX:
            await _answer(send, 200, json.dumps({"items": self.received()}).encode())
            return
        if scope["method"] != "POST" or not scope["path"].startswith(PREFIX + "/"):
            await _answer(send, 405 if scope["path"].startswith(PREFIX) else 404, b"")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")[: MAX_BODY - len(body)]
            more = bool(message.get("more_body"))
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        text = bytes(body).decode("utf-8", "replace")
        entry = {"path": scope["path"], "received_at": time.time(), "headers": headers, "body": text}
        with self._lock:
            self._received.append(entry)
        if self._echo:
            print(f"  webhook  POST {scope['path']}  {len(body)} bytes", file=sys.stderr, flush=True)
        await _answer(send, 204, b"")


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def with_receiver(app: ASGIApp, receiver: WebhookReceiver) -> ASGIApp:
    """`app` with the receiver answering under /_local/webhooks."""

    async def combined(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await receiver(scope, receive, send)
        else:
            await app(scope, receive, send)

    return combined
