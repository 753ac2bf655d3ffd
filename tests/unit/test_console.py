"""The console's static files (api/routes/console.py) and `GET /me`, on the in-memory fakes.

The page itself is exercised in a real browser by tests/browser (make test-browser)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, FakeClock, make_fake
from workflows.api.app import route_modules_for
from workflows.api.routes import console
from workflows.api.schemas import PREFIX
from workflows.roots.parts import Parts

CONSOLE = f"{PREFIX}/console/"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; "
    "trusted-types 'none'"
)
STATIC_FILES = sorted(console.STATIC.iterdir())


@pytest.fixture
def anonymous(container: Parts) -> Iterator[TestClient]:
    with APPS.lend(container) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield client


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(assets/[^"]+)"', page)


def test_the_page_is_served_without_credentials_and_revalidated_each_time(anonymous: TestClient) -> None:
    response = anonymous.get(CONSOLE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"]
    assert "%VERSION%" not in response.text
    assert len(asset_urls(response.text)) == 2  # the stylesheet and the entry module


def test_every_answer_carries_the_security_headers(anonymous: TestClient) -> None:
    page = anonymous.get(CONSOLE)
    responses = [page, *(anonymous.get(CONSOLE + url) for url in asset_urls(page.text))]
    responses.append(anonymous.get(f"{PREFIX}/console", follow_redirects=False))
    for response in responses:
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"


def test_assets_are_immutable_under_the_version_the_page_names(anonymous: TestClient) -> None:
    page = anonymous.get(CONSOLE)
    for url in asset_urls(page.text):
        response = anonymous.get(CONSOLE + url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    module = anonymous.get(CONSOLE + next(u for u in asset_urls(page.text) if u.endswith(".js")))
    assert module.headers["content-type"] == "text/javascript; charset=utf-8"


def test_modules_import_each_other_under_the_same_version(anonymous: TestClient) -> None:
    version = console.bundle().version
    for path in STATIC_FILES:
        if path.suffix != ".js":
            continue
        for imported in re.findall(r'from "\./([^"]+)"', path.read_text()):
            response = anonymous.get(f"{CONSOLE}assets/{version}/{imported}")
            assert response.status_code == 200, (path.name, imported)


def test_another_version_or_an_unknown_file_is_not_found(anonymous: TestClient) -> None:
    version = console.bundle().version
    for path in (
        "assets/0000000000000000/app.js",
        f"assets/{version}/nope.js",
        f"assets/{version}/index.html",
        f"assets/{version}/..%2Fapi.js",
        f"assets/{version}/%2e%2e%2f%2e%2e%2froutes%2fconsole.py",
    ):
        response = anonymous.get(CONSOLE + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_the_bare_path_redirects_to_the_page(anonymous: TestClient) -> None:
    response = anonymous.get(f"{PREFIX}/console", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "console/"


def test_a_known_etag_answers_304(anonymous: TestClient) -> None:
    etag = anonymous.get(CONSOLE).headers["etag"]
    again = anonymous.get(CONSOLE, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


def test_gzip_is_served_to_clients_that_accept_it(anonymous: TestClient) -> None:
    # httpx decodes gzip itself: compare what was sent with the file as served plain
    plain = anonymous.get(CONSOLE, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = anonymous.get(CONSOLE, headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == plain.content
    refused = anonymous.get(CONSOLE, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_the_version_changes_with_any_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for path in STATIC_FILES:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(console, "STATIC", tmp_path)
    console.bundle.cache_clear()
    try:
        before = console.bundle().version
        (tmp_path / "console.css").write_text((tmp_path / "console.css").read_text() + "\n/* changed */\n")
        console.bundle.cache_clear()
        assert console.bundle().version != before
        assert console.bundle().version.encode() in console.bundle().index.body
    finally:
        console.bundle.cache_clear()


@pytest.mark.parametrize("path", STATIC_FILES, ids=lambda p: p.name)
def test_no_file_holds_inline_script_html_sinks_or_another_origin(path: Path) -> None:
    text = path.read_text()
    for forbidden in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert forbidden not in text, forbidden
    assert not re.search(r"""\sstyle=|\son[a-z]+=["']""", text), "inline style or handler attribute"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), "a URL of another origin"
    if path.suffix == ".html":
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
        assert "<style" not in text


def test_the_first_page_is_well_under_its_budget() -> None:
    # Everything the sign-in page loads, as sent gzipped: the page, the stylesheet, every module
    bundle = console.bundle()
    sent = len(bundle.index.gzipped) + sum(len(a.gzipped) for a in bundle.assets.values())
    assert sent < 200 * 1024
    assert sum(len(a.body) for a in bundle.assets.values()) < 200 * 1024  # even uncompressed


def test_other_paths_never_build_the_console_routes() -> None:
    assert route_modules_for(CONSOLE) == ("console",)
    assert route_modules_for(f"{PREFIX}/console/assets/abc/app.js") == ("console",)
    assert "console" not in route_modules_for(f"{PREFIX}/runs")
    assert route_modules_for(f"{PREFIX}/me") == ("me",)


def test_every_console_file_is_sent_gzipped_and_smaller(anonymous: TestClient) -> None:
    bundle = console.bundle()
    urls = [CONSOLE, *(f"{CONSOLE}assets/{bundle.version}/{name}" for name in bundle.assets)]
    page = anonymous.get(CONSOLE, headers={"Accept-Encoding": "identity"}).text
    assert {CONSOLE + asset for asset in asset_urls(page)} <= set(urls)
    for url in urls:
        plain = anonymous.get(url, headers={"Accept-Encoding": "identity"}).content
        # The bytes as they travel (httpx would decode them): compressed, and the file once inflated
        with anonymous.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
            assert response.status_code == 200, url
            assert response.headers["content-encoding"] == "gzip", url
            sent = b"".join(response.iter_raw())
        assert len(sent) < len(plain), url
        assert gzip.decompress(sent) == plain, url


# ---- GET /me ---------------------------------------------------------------------------

OPERATOR = [
    "workflows.runs.control",
    "workflows.runs.read",
    "workflows.secrets.use",
    "workflows.signals.send",
]


def test_me_in_single_user_mode_is_the_admin_of_the_default_tenant(client: TestClient) -> None:
    response = client.get(f"{PREFIX}/me")
    assert response.status_code == 200
    assert response.json() == {
        "tenant_id": "default",
        "user_id": "admin",
        "roles": [],
        "permissions": [
            "workflows.admin",
            "workflows.runs.control",
            "workflows.runs.read",
            "workflows.secrets.use",
            "workflows.signals.send",
        ],
    }


@pytest.mark.parametrize(
    ("roles", "permissions"),
    [
        ([], []),
        (["viewer"], ["workflows.runs.read"]),
        (["operator"], OPERATOR),
        (["admin"], ["workflows.admin", *OPERATOR]),
        (["viewer", "operator"], OPERATOR),
    ],
)
def test_me_names_the_keys_tenant_user_roles_and_permissions(
    clock: FakeClock, roles: list[str], permissions: list[str]
) -> None:
    parts = make_fake(clock, auth_mode="multi_user")
    key, _ = parts.api_keys.create("acme", "ada", roles)
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        response = client.get(f"{PREFIX}/me", headers={"X-API-KEY": key})
    assert response.status_code == 200
    assert response.json() == {
        "tenant_id": "acme",
        "user_id": "ada",
        "roles": roles,
        "permissions": permissions,
    }


def test_admin_implies_every_permission_even_when_a_role_grants_admin_alone(clock: FakeClock) -> None:
    parts = make_fake(clock, auth_mode="multi_user", role_permissions={"root": ["workflows.admin"]})
    key, _ = parts.api_keys.create("acme", "ada", ["root"])
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        response = client.get(f"{PREFIX}/me", headers={"X-API-KEY": key})
    assert response.json()["permissions"] == [
        "workflows.admin",
        "workflows.runs.control",
        "workflows.runs.read",
        "workflows.secrets.use",
        "workflows.signals.send",
    ]


def test_me_without_credentials_is_401(anonymous: TestClient) -> None:
    response = anonymous.get(f"{PREFIX}/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"]
