"""9. The console's first page: the bytes a browser that has never seen it transfers to show it.

The page is loaded the way a browser loads it, through the API's routes: `console/`, then
every asset it names, then every module those modules import (static `import ... from "./x"`),
each once. Each answer is counted as sent, status line and headers included, gzipped (what
browsers ask for) and plain (a client that asks for no compression). The budget is 200 KB
transferred. The API calls the page makes after sign-in (`/me`, the first runs page) are data,
not the page, and are not counted.
"""

from __future__ import annotations

import re
from typing import Any

BUDGET_BYTES = 200 * 1024
IMPORT = re.compile(r"""(?:from|import)\s*["']\./([^"']+)["']""")
REFERENCE = re.compile(r"""(?:src|href)="(assets/[^"]+)\"""")


def _sent(response: Any) -> int:
    status_line = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    headers = sum(len(name) + len(value) + 4 for name, value in response.headers.raw)
    return status_line + headers + 2 + response.num_bytes_downloaded


def _load(client: Any, page: str, encoding: str) -> dict[str, Any]:
    headers = {"Accept-Encoding": encoding}
    first = client.get(page, headers=headers)
    assert first.status_code == 200, first.text
    loaded = {page: _sent(first)}
    pending = [page + url for url in REFERENCE.findall(first.text)]
    while pending:
        url = pending.pop()
        if url in loaded:
            continue
        response = client.get(url, headers=headers)
        assert response.status_code == 200, url
        loaded[url] = _sent(response)
        if url.endswith(".js"):
            base = url.rsplit("/", 1)[0]
            pending.extend(f"{base}/{name}" for name in IMPORT.findall(response.text))
    return {"requests": len(loaded), "bytes": sum(loaded.values())}


def run(quick: bool = False) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from workflows.api.app import create_app
    from workflows.api.schemas import PREFIX

    page = f"{PREFIX}/console/"
    # The console's routes alone, as the API function builds them for these paths.
    with TestClient(create_app(modules=("console",))) as client:
        gzipped = _load(client, page, "gzip, deflate, br")
        plain = _load(client, page, "identity")
    return {
        "requests": gzipped["requests"],
        "gzip_bytes": gzipped["bytes"],
        "plain_bytes": plain["bytes"],
        "budget_bytes": BUDGET_BYTES,
        "ratio_to_budget": gzipped["bytes"] / BUDGET_BYTES,
    }
