"""The OpenAPI page (api/routes/docs.py) and the credentials its document declares, on the
in-memory fakes.

The page itself is exercised in a real browser by tests/browser/test_openapi_page.py
(make test-browser)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, FakeClock, make_fake
from workflows.api.app import route_modules_for
from workflows.api.routes import docs
from workflows.api.schemas import PREFIX
from workflows.roots.parts import Parts

PAGE = f"{PREFIX}/docs"
ORIGIN = "http://testserver"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
}
RUN_ID = "2b1c6f0e-8a3b-4c1d-9e2f-0a1b2c3d4e5f"


class References(HTMLParser):
    """Every URL the page makes the browser load: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name) and (tag != "a" or name != "href"):
                self.urls.append(found[name] or "")


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


@pytest.fixture
def anonymous(container: Parts) -> Iterator[TestClient]:
    with APPS.lend(container) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield client


def document(container: Parts) -> dict[str, Any]:
    with APPS.lend(container) as app, TestClient(app) as client:
        answer: dict[str, Any] = client.get(f"{PREFIX}/openapi.json").json()
        return answer


# ---- the page ----------------------------------------------------------------------------


def test_the_page_and_every_file_it_loads_are_served_by_the_service(anonymous: TestClient) -> None:
    # Given the page, as a browser without credentials gets it
    page = anonymous.get(PAGE)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    urls = references(page.text)
    assert len(urls) == 4  # the icon, the stylesheet, Swagger UI and the script that starts it
    for url in urls:
        # Then: none names another host or scheme, and each answers from this service
        assert urlsplit(url).scheme == "", url
        assert urlsplit(url).netloc == "", url
        absolute = urljoin(ORIGIN + PAGE, url)
        assert absolute.startswith(f"{ORIGIN}{PREFIX}/docs/assets/{docs.bundle().version}/"), url
        response = anonymous.get(absolute)
        assert response.status_code == 200, url
        suffix = "." + url.rsplit(".", 1)[-1]
        assert response.headers["content-type"] == MEDIA_TYPES[suffix], url


def test_the_page_starts_swagger_ui_on_the_services_own_document(anonymous: TestClient) -> None:
    start = next(url for url in references(anonymous.get(PAGE).text) if url.endswith("/start.js"))
    script = anonymous.get(urljoin(ORIGIN + PAGE, start)).text
    (url,) = re.findall(r'\burl: "([^"]+)"', script)
    assert urlsplit(url).netloc == ""
    assert "validatorUrl: null" in script  # no badge from the public validator
    answer = anonymous.get(urljoin(ORIGIN + PAGE, url))
    assert answer.status_code == 200
    assert answer.json()["info"]["title"] == "Workflows"


def test_every_answer_carries_a_strict_content_security_policy(anonymous: TestClient) -> None:
    page = anonymous.get(PAGE)
    responses = [page, *(anonymous.get(urljoin(ORIGIN + PAGE, url)) for url in references(page.text))]
    responses.append(anonymous.get(PAGE + "/", follow_redirects=False))
    for response in responses:
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_the_page_is_revalidated_and_its_files_are_immutable(anonymous: TestClient) -> None:
    page = anonymous.get(PAGE)
    assert page.headers["cache-control"] == "no-cache"
    assert anonymous.get(PAGE, headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    for url in references(page.text):
        response = anonymous.get(urljoin(ORIGIN + PAGE, url))
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable", url


def test_the_path_with_a_trailing_slash_redirects_to_the_page(anonymous: TestClient) -> None:
    # The page's URLs are relative to .../docs: from .../docs/ they would all miss.
    response = anonymous.get(PAGE + "/", follow_redirects=False)
    assert response.status_code == 308
    assert urljoin(ORIGIN + PAGE + "/", response.headers["location"]) == ORIGIN + PAGE


def test_another_version_or_an_unknown_file_is_not_found(anonymous: TestClient) -> None:
    version = docs.bundle().version
    for path in (
        "assets/0000000000000000/start.js",
        f"assets/{version}/nope.js",
        f"assets/{version}/index.html",
        f"assets/{version}/LICENSE",
        f"assets/{version}/..%2Fstart.js",
    ):
        response = anonymous.get(f"{PAGE}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_swagger_ui_is_sent_gzipped(anonymous: TestClient) -> None:
    url = f"{PAGE}/assets/{docs.bundle().version}/swagger-ui-bundle.js"
    plain = anonymous.get(url, headers={"Accept-Encoding": "identity"}).content
    with anonymous.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        sent = b"".join(response.iter_raw())
    assert len(sent) < len(plain) / 3
    assert gzip.decompress(sent) == plain


def test_the_page_needs_only_its_own_routes() -> None:
    assert route_modules_for(PAGE) == ("docs",)
    assert route_modules_for(f"{PAGE}/assets/abc/swagger-ui-bundle.js") == ("docs",)
    assert "docs" not in route_modules_for(f"{PREFIX}/runs")


# ---- the credentials the document declares ------------------------------------------------


def test_the_document_declares_the_api_key_header(container: Parts) -> None:
    schemes = document(container)["components"]["securitySchemes"]
    assert set(schemes) == {"ApiKey"}  # single-user mode: no bearer tokens
    assert {k: schemes["ApiKey"][k] for k in ("type", "in", "name")} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
    }


def test_operations_name_the_credentials_exactly_where_they_are_refused_without_them(
    anonymous: TestClient, container: Parts
) -> None:
    # Given every operation of the document, called without any credential
    paths = document(container)["paths"]
    declared, refused = {}, {}
    for path, item in paths.items():
        for method, operation in item.items():
            concrete = re.sub(r"\{[^}]+\}", RUN_ID, path)
            status = anonymous.request(method.upper(), concrete).status_code
            declared[f"{method} {path}"] = operation.get("security")
            refused[f"{method} {path}"] = status == 401
    # Then each one that answers 401 names the API key, and no other names anything
    assert len(declared) >= 20
    assert {op: [{"ApiKey": []}] if was_refused else None for op, was_refused in refused.items()} == declared


def test_bearer_tokens_are_declared_where_the_deployment_names_an_issuer(clock: FakeClock) -> None:
    container = make_fake(clock, auth_mode="multi_user", jwt_issuer="https://issuer.invalid")
    found = document(container)
    assert found["components"]["securitySchemes"]["Bearer"]["scheme"] == "bearer"
    assert found["components"]["securitySchemes"]["Bearer"]["bearerFormat"] == "JWT"
    assert found["paths"][f"{PREFIX}/me"]["get"]["security"] == [{"ApiKey": []}, {"Bearer": []}]


@pytest.mark.parametrize(
    "overrides", [{}, {"auth_mode": "multi_user"}, {"jwt_issuer": "https://issuer.invalid"}], ids=str
)
def test_bearer_tokens_are_not_declared_where_they_are_refused(
    clock: FakeClock, overrides: dict[str, str]
) -> None:
    found = document(make_fake(clock, **overrides))
    assert set(found["components"]["securitySchemes"]) == {"ApiKey"}
    assert found["paths"][f"{PREFIX}/me"]["get"]["security"] == [{"ApiKey": []}]
