"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright) against
the local stack started as `make run` starts it, in multi-user mode, on free ports.

Run with `make test-browser` (which installs Chromium and Playwright first). Elsewhere, and in
`make test`, these tests are skipped.

Chromium stays on this machine: besides the flags that switch off its background traffic
(component updates, sync, metrics, safe browsing) and send the Google services it still calls
to a closed port on loopback, every request to anything but loopback is sent to a trap proxy on
127.0.0.1 that answers nothing and records the attempt, and host names do not resolve. A
session whose trap saw an attempt fails at teardown.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.localstack import ROOT, local_stack, wait_for

# The README's pictures of the console. Each run takes them all; only with
# WORKFLOWS_SCREENSHOTS=update are they written here, else into the session's temporary directory.
SCREENSHOTS = ROOT / "docs" / "console"
UPDATE_SCREENSHOTS = os.environ.get("WORKFLOWS_SCREENSHOTS") == "update"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENABLED = os.environ.get("WORKFLOWS_BROWSER_TESTS") == "1"
browser_only = pytest.mark.skipif(
    not ENABLED,
    reason="browser test: `make test-browser` runs it (headless Chromium against the local stack)",
)
TENANT = "acme"


@dataclass
class Stack:
    base: str  # the API, .../api/v1/workflows
    origin: str
    aws_endpoint: str
    keys: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def console(self) -> str:
        return f"{self.base}/console/"

    def client(self, who: str = "operator") -> httpx.Client:
        if who not in self.clients:
            self.clients[who] = httpx.Client(
                base_url=self.base, headers={"X-API-KEY": self.keys[who]}, timeout=15
            )
        return self.clients[who]

    def submit(self, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
        response = self.client().post("/runs", json={"definition": definition, "inputs": inputs or {}})
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client().get(f"/runs/{run_id}").json()
        return answer

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in statuses else None

        found: dict[str, Any] = wait_for(reached, timeout, f"run {run_id} in {statuses}")
        return found


def _create_key(env: dict[str, str], user: str, roles: str) -> str:
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack.keys",
            "create",
            "--tenant",
            TENANT,
            "--user",
            user,
            "--roles",
            roles,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not ENABLED:
        pytest.skip("browser tests run with `make test-browser`")
    settings = {
        "WORKFLOWS_AUTH_MODE": "multi_user",
        # The DLQ test decides when a failed delivery is tried again (replay from the page).
        "WORKFLOWS_WEBHOOK_DLQ_ENABLED": "false",
    }
    local_events = tmp_path_factory.mktemp("local-events")
    with local_stack("browser", local_events, settings, startup_timeout=180) as running:
        key_env = {**running.env, "AWS_ENDPOINT_URL": running.aws_endpoint}
        keys = {
            "operator": _create_key(key_env, "olivia", "operator"),
            "viewer": _create_key(key_env, "victor", "viewer"),
            # No role: submits runs and reads only its own (docs/auth.md, "Owners read their own").
            "owner": _create_key(key_env, "oscar", ""),
        }
        stack = Stack(base=running.base, origin=running.origin, aws_endpoint=running.aws_endpoint, keys=keys)
        try:
            yield stack
        finally:
            for client in stack.clients.values():
                client.close()


class TrapProxy:
    """An HTTP proxy on loopback that forwards nothing: it records each request line it is sent
    (a CONNECT or an absolute URL) and closes the connection."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="TrapProxy", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    first = connection.recv(4096).split(b"\r\n", 1)[0]
                    self.attempts.append(first.decode("latin-1") or "(connection without a request)")
                    connection.sendall(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    self.attempts.append("(connection)")

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=2)


def chromium_path() -> str:
    # Debian's /usr/bin/chromium is a launcher script that adds Google API keys and flags
    # (remote extensions, component extensions) which make the browser call Google: the
    # binary it starts is used instead.
    for candidate in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("chromium is not installed: `make browser-deps` installs it (apt-get, as root)")


# Where Chromium's Google services are sent instead: a closed port on loopback.
NOWHERE = "http://127.0.0.1:9/"


def chromium_flags(trap_port: int, empty_dir: Path) -> list[str]:
    """Beyond Playwright's own (--disable-background-networking, --disable-component-update,
    --disable-sync, --disable-default-apps, --no-first-run, ...): what this build of Chromium
    still calls at start-up or on a page with a form, found with the trap below."""
    return [
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--safebrowsing-disable-auto-update",
        "--no-pings",
        # The on-device model manifest is an on-demand component, which --disable-component-update
        # does not stop: a local (empty) manifest instead.
        f"--optimization-guide-manifest-override={empty_dir}",
        f"--component-updater=url-source={NOWHERE}",
        # Account lookups (ListAccounts) and autofill field-type queries have no off switch here.
        f"--gaia-url={NOWHERE}",
        f"--google-apis-url={NOWHERE}",
        f"--lso-url={NOWHERE}",
        f"--autofill-server-url={NOWHERE}",
        # Whatever is left goes to the trap (loopback is never proxied), and no name resolves.
        f"--proxy-server=http://127.0.0.1:{trap_port}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not ENABLED:
        pytest.skip("browser tests run with `make test-browser`")
    from playwright.sync_api import sync_playwright

    trap = TrapProxy()
    flags = chromium_flags(trap.port, tmp_path_factory.mktemp("no-models"))
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=flags)
        try:
            yield chromium
        finally:
            chromium.close()
    trap.close()
    assert trap.attempts == [], f"Chromium tried to reach beyond 127.0.0.1: {trap.attempts}"


@dataclass
class Tab:
    """A page in a fresh browser context, with what it did: dialogs it opened, requests it made."""

    page: Any
    stack: Stack
    screenshots: Path
    dialogs: list[str]
    requests: list[str]
    errors: list[str]

    def sign_in(self, who: str = "operator") -> None:
        self.page.goto(self.stack.console)
        self.page.fill("#credential", self.stack.keys[who])
        self.page.click("form.sign-in button[type=submit]")
        self.page.wait_for_selector(".who .identity")

    def open(self, fragment: str) -> None:
        self.page.evaluate("fragment => { location.hash = fragment; }", fragment)

    def screenshot(self, name: str, *, full_page: bool = True) -> None:
        """Photographs the page into `screenshots` (docs/console/ when updating them)."""
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.page.evaluate("() => window.scrollTo(0, 0)")  # the sticky bar stays on top
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        image = path.read_bytes()
        assert image.startswith(PNG_SIGNATURE), f"{path}: not a PNG"
        assert len(image) > len(PNG_SIGNATURE), f"{path}: an empty PNG"


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the console's screenshots go: docs/console/ with WORKFLOWS_SCREENSHOTS=update (to
    refresh the README's pictures), else a temporary directory, so a run leaves the tree as it was."""
    return SCREENSHOTS if UPDATE_SCREENSHOTS else tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def browser_timezone() -> str:
    """The browser's time zone; a test parametrizes it to look at the console from elsewhere."""
    return "UTC"


@pytest.fixture
def tab(stack: Stack, browser: Any, screenshots: Path, browser_timezone: str) -> Iterator[Tab]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, locale="en-GB", timezone_id=browser_timezone
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    dialogs: list[str] = []
    requests: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    tab = Tab(
        page=page, stack=stack, screenshots=screenshots, dialogs=dialogs, requests=requests, errors=errors
    )
    try:
        yield tab
    finally:
        context.close()
    elsewhere = [url for url in requests if not url.startswith((stack.origin + "/", "data:", "blob:"))]
    assert elsewhere == [], f"the console requested other origins: {elsewhere}"
    assert errors == [], f"script errors on the page: {errors}"
