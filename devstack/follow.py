"""`python -m devstack.follow RUN_ID [--since N]`: follow a run live over the WebSocket API.

Prints each frame the service sends as one JSON line (`events`, then `end` when the run has
ended and the service closes the connection). The key comes from --key, else $API_KEY, else
$WORKFLOWS_API_KEY; it is sent in the X-API-KEY header (`--browser` sends it as a browser must:
in the Sec-WebSocket-Protocol header, `workflows.v1, key.<key>`). The URL is the local stack's
(ws://127.0.0.1:8001/v1) unless --url names another, such as a deployed stack's WebSocketUrl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlencode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.follow", description=__doc__.split("\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--since", type=int, default=0, help="events after this event_seq (default 0)")
    parser.add_argument("--url", default="ws://127.0.0.1:8001/v1", help="the WebSocket API's stage URL")
    parser.add_argument("--key", default=os.environ.get("API_KEY") or os.environ.get("WORKFLOWS_API_KEY"))
    parser.add_argument("--browser", action="store_true", help="send the key as a browser does")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("no API key: pass --key or set API_KEY")

    from websockets.exceptions import ConnectionClosedOK, InvalidStatus
    from websockets.sync.client import connect

    url = f"{args.url}?{urlencode({'run_id': args.run_id, 'since': args.since})}"
    options: dict[str, object] = (
        {"subprotocols": ["workflows.v1", f"key.{args.key}"]}
        if args.browser
        else {"additional_headers": {"X-API-KEY": args.key}}
    )
    try:
        with connect(url, open_timeout=10, **options) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"action": "follow"}))
            while True:
                print(ws.recv(), flush=True)
    except ConnectionClosedOK:
        return 0
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace") if exc.response.body else ""
        print(f"refused: {exc.response.status_code} {body}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
