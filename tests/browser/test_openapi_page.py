"""The API's OpenAPI page (Swagger UI) in headless Chromium, against the local stack
(conftest.py: multi-user mode, and a browser that can reach nothing but 127.0.0.1).

The `tab` fixture fails a test whose page requested anything but the service or raised a script
error; here the page also records every Content-Security-Policy violation, so that the policy
is known to be as strict as the page allows and no stricter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Tab, browser_only

pytestmark = [pytest.mark.e2e, pytest.mark.browser, browser_only]

RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.violations.push(`${event.violatedDirective} ${event.blockedURI} ${where}`);
});
"""
ME = "/api/v1/workflows/me"


def open_docs(tab: Tab) -> list[Any]:
    """Opens the page with its violations recorded; the responses it received."""
    responses: list[Any] = []
    tab.page.on("response", lambda response: responses.append(response))
    tab.page.add_init_script(RECORD_VIOLATIONS)
    tab.page.goto(f"{tab.stack.base}/docs")
    tab.page.wait_for_selector(f'.opblock-summary-path[data-path="{ME}"]')
    return responses


def violations(tab: Tab) -> list[str]:
    found: list[str] = tab.page.evaluate("() => window.violations")
    return found


def test_the_page_renders_from_the_service_alone(tab: Tab) -> None:
    # When the page is opened by a browser that can reach nothing but this machine
    responses = open_docs(tab)
    tab.page.wait_for_load_state("networkidle")

    # Then it shows the API's operations, every file and the document came from the service,
    # and its Content-Security-Policy refused nothing the page needed
    assert tab.page.inner_text(".info .title").startswith("Workflows")
    assert tab.page.locator(".opblock").count() >= 20
    urls = [response.url for response in responses if not response.url.startswith("data:")]
    assert all(url.startswith(tab.stack.base + "/") for url in urls), urls
    assert f"{tab.stack.base}/openapi.json" in urls
    assert sum("/docs/assets/" in url for url in urls) == 4
    assert all(response.status == 200 for response in responses if response.url in urls)
    assert violations(tab) == []


def test_try_it_out_sends_the_authorized_api_key(tab: Tab) -> None:
    key = tab.stack.keys["operator"]
    open_docs(tab)

    # Given the operator's key given to "Authorize"
    tab.page.click("button.authorize")
    dialog = tab.page.locator(".dialog-ux .modal-ux")
    dialog.locator(".auth-container", has_text="X-API-KEY").locator("input").fill(key)
    dialog.locator("button.authorize").click()
    dialog.locator("button.btn-done").click()

    # When GET /me is tried out
    operation = tab.page.locator(".opblock", has=tab.page.locator(f'.opblock-summary-path[data-path="{ME}"]'))
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    with tab.page.expect_request(lambda request: request.url.endswith(ME)) as sent:
        operation.locator("button.execute").click()

    # Then the request carried the key, and the page shows the service's 200 and who called
    assert sent.value.all_headers().get("x-api-key") == key
    live = operation.locator(".live-responses-table tr.response .response-col_status")
    live.wait_for()
    assert live.inner_text().strip() == "200"
    assert '"user_id": "olivia"' in operation.locator(".live-responses-table .microlight").first.inner_text()
    assert violations(tab) == []
