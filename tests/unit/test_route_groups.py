"""The API function serves each request from an app holding only the route modules its path
needs (workflows.api.app.route_modules_for). That app must answer every path exactly as the
whole app does: the same route, or the same 404, 405 or slash redirect."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from workflows.api.app import ROUTE_MODULES, ROUTE_PATHS, create_app, route_modules_for
from workflows.api.schemas import PREFIX
from workflows.roots import api as api_root
from workflows.roots.parts import Parts

RUN_ID = "2b1c6f0e-8a3b-4c1d-9e2f-0a1b2c3d4e5f"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.mark.parametrize("name", ROUTE_MODULES)
def test_the_table_of_paths_is_what_each_router_declares(name: str) -> None:
    router = importlib.import_module(f"workflows.api.routes.{name}").router
    assert set(ROUTE_PATHS[name]) == {route.path for route in router.routes}


def _concrete_paths() -> Iterator[str]:
    for templates in ROUTE_PATHS.values():
        for template in templates:
            for value in (RUN_ID, "x", "runs"):  # a UUID, an id of no kind, a fixed segment
                path = PREFIX + re.sub(r"\{[^}]+\}", value, template)
                yield path
                yield path + "/"
    yield from (
        "/",
        "/api/v1",
        PREFIX + "/health",
        PREFIX + "/health/",
        PREFIX + "/nope",
        PREFIX + f"/runs/{RUN_ID}/x/y/z",
        PREFIX + "//runs",
        PREFIX + "/openapi.json",
        PREFIX + "/openapi.json/",
    )


PATHS = sorted(set(_concrete_paths()))


def _answer(client: TestClient, method: str, path: str) -> tuple[int, str | None]:
    # No credentials: a route that matches answers 401 before any work, so what is compared
    # is which route (if any) each app chose.
    response = client.request(method, path, follow_redirects=False)
    return response.status_code, response.headers.get("location")


def test_an_app_of_the_modules_a_path_needs_answers_it_as_the_whole_app(container: Parts) -> None:
    whole = TestClient(create_app(lambda: container), raise_server_exceptions=False)
    groups: dict[tuple[str, ...], TestClient] = {}
    differences = []
    for path in PATHS:
        modules = route_modules_for(path)
        if modules not in groups:
            groups[modules] = TestClient(
                create_app(lambda: container, modules), raise_server_exceptions=False
            )
        for method in METHODS:
            expected, got = _answer(whole, method, path), _answer(groups[modules], method, path)
            if expected != got:
                differences.append((method, path, modules, expected, got))
    assert not differences
    assert len(groups) > 5  # the paths did exercise several groups, each smaller than the whole
    assert all(len(modules) <= 4 for modules in groups if modules != ROUTE_MODULES)


def test_a_run_read_needs_only_the_runs_routes() -> None:
    assert route_modules_for(f"{PREFIX}/runs/{RUN_ID}") == ("runs",)
    assert route_modules_for(f"{PREFIX}/health") == ()
    assert route_modules_for(f"{PREFIX}/docs") == ("docs",)  # the page, not the document
    assert route_modules_for(f"{PREFIX}/openapi.json") == ROUTE_MODULES


def test_where_init_runs_ahead_of_requests_the_whole_app_serves_them(monkeypatch: pytest.MonkeyPatch) -> None:
    event = {"rawPath": f"{PREFIX}/runs/{RUN_ID}"}
    assert api_root.route_modules(event) == ("runs",)
    monkeypatch.setattr(api_root, "PREBUILT", True)
    assert api_root.route_modules(event) == ROUTE_MODULES
