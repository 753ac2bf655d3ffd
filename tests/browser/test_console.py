"""The operators' console in headless Chromium, against the local stack (conftest.py).

Each page is exercised as a person uses it, and photographed (into docs/console/ with
WORKFLOWS_SCREENSHOTS=update).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from tests.browser.conftest import Stack, Tab, browser_only
from tests.localstack import free_port, wait_for
from workflows_cli.main import main as workflows_cli

pytestmark = [pytest.mark.e2e, pytest.mark.browser, browser_only]

FIRST_PAGE_BUDGET = 200 * 1024
MARKUP = "<img src=x onerror=alert(1)>"

# Fetch, branch the wrong way, fail twice, fall back to a person: every kind of edge and status.
REVIEW = {
    "name": "order-review",
    "steps": [
        {"id": "fetch", "type": "log", "config": {"message": "order {{ inputs.order }} fetched"}},
        {
            "id": "check",
            "type": "branch",
            "config": {"condition": "inputs.total > 100", "true_next": "large", "false_next": "render"},
        },
        {"id": "large", "type": "log", "config": {"message": "large order"}, "on_success": "_end"},
        {
            "id": "render",
            "type": "log",
            "config": {"message": "{{ inputs.missing.field }}"},
            "retry": {"max_attempts": 2, "initial_interval_seconds": 0.1},
            "on_failure": "review",
        },
        {
            "id": "review",
            "type": "approval",
            "config": {"instructions": "The summary did not render. Ship it?"},
        },
        {"id": "ship", "type": "log", "config": {"message": "shipped by {{ steps.review.output.approver }}"}},
    ],
}


def approval_flow(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "prepare", "type": "log", "config": {"message": "ready"}},
            {"id": "sign_off", "type": "approval", "config": {"instructions": f"Publish {name}?"}},
            {"id": "publish", "type": "log", "config": {"message": "published"}},
        ],
    }


# A rejected approval routes to notify_rejected, around ship and archive, which never run. In
# rows, ship and notify_rejected sit side by side and notify_rejected -> _end passes archive's row.
REFUND = {
    "name": "refund-review",
    "steps": [
        {"id": "prepare", "type": "log", "config": {"message": "refund {{ inputs.refund }}"}},
        {
            "id": "review",
            "type": "approval",
            "config": {"instructions": "Refund the order?"},
            "on_failure": "notify_rejected",
        },
        {"id": "ship", "type": "log", "config": {"message": "refunded"}},
        {"id": "archive", "type": "log", "config": {"message": "archived"}, "on_success": "_end"},
        {"id": "notify_rejected", "type": "log", "config": {"message": "refund refused"}},
    ],
}

# Every point of every edge's path (sampled each pixel along it) against the box of every step
# and terminal that is not one of its two ends.
EDGES_THROUGH_STEPS = """() => {
    const svg = document.querySelector("svg.graph");
    const boxes = [...svg.querySelectorAll("g.node, g.terminal")].map((g) => {
        const m = g.transform.baseVal.consolidate().matrix;
        const r = g.querySelector("rect");
        const id = g.dataset.stepId || g.dataset.terminal;
        return { id, x: m.e, y: m.f, w: r.width.baseVal.value, h: r.height.baseVal.value };
    });
    const crossings = [];
    for (const edge of svg.querySelectorAll("g.edge")) {
        const path = edge.querySelector("path");
        const ends = [edge.dataset.from, edge.dataset.to];
        const length = path.getTotalLength();
        for (let d = 0; d <= length; d += 1) {
            const p = path.getPointAtLength(d);
            for (const b of boxes) {
                if (ends.includes(b.id)) continue;
                if (p.x > b.x && p.x < b.x + b.w && p.y > b.y && p.y < b.y + b.h) {
                    crossings.push(`${edge.dataset.from} -> ${edge.dataset.to} crosses ${b.id}`);
                }
            }
        }
    }
    return [...new Set(crossings)];
}"""


def edges_through_steps(tab: Tab) -> list[str]:
    found: list[str] = tab.page.evaluate(EDGES_THROUGH_STEPS)
    return found


def statuses(tab: Tab) -> dict[str, str]:
    found: dict[str, str] = tab.page.eval_on_selector_all(
        "svg.graph g.node",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.stepId, n.dataset.status]))",
    )
    return found


def taken_edges(tab: Tab) -> set[tuple[str, str]]:
    pairs: list[list[str]] = tab.page.eval_on_selector_all(
        "svg.graph g.edge.taken", "edges => edges.map(e => [e.dataset.from, e.dataset.to])"
    )
    return {(a, b) for a, b in pairs}


def test_the_first_page_is_small_and_comes_from_the_service_alone(tab: Tab) -> None:
    # Given a browser that has never seen the console
    responses: list[Any] = []
    tab.page.on("response", lambda response: responses.append(response))

    # When the console is opened
    tab.page.goto(tab.stack.console)
    tab.page.wait_for_selector("form.sign-in")
    tab.page.wait_for_load_state("networkidle")

    # Then everything it loaded came from the service, in under 200 KB
    loaded = [r for r in responses if not r.url.startswith("data:")]
    sizes = [r.request.sizes() for r in loaded]
    transferred = sum(s["responseBodySize"] + s["responseHeadersSize"] for s in sizes)
    assert transferred < FIRST_PAGE_BUDGET, transferred
    assert all(r.url.startswith(tab.stack.console) for r in loaded), [r.url for r in loaded]
    page = next(r for r in responses if r.url == tab.stack.console)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    assert all("immutable" in r.headers["cache-control"] for r in loaded if "/assets/" in r.url)
    tab.screenshot("sign-in", full_page=False)


def test_the_credential_lives_in_the_tab_until_sign_out(tab: Tab) -> None:
    tab.sign_in()
    # A reload keeps the session; the key is in sessionStorage and nowhere else
    tab.page.reload()
    tab.page.wait_for_selector(".who .identity")
    assert tab.page.evaluate("() => localStorage.length") == 0
    assert tab.page.evaluate("() => document.cookie") == ""
    assert tab.stack.keys["operator"] in tab.page.evaluate("() => JSON.stringify(sessionStorage)")
    assert tab.page.inner_text(".who .identity") == "acme / olivia"

    tab.page.click("button.sign-out")

    tab.page.wait_for_selector("form.sign-in")
    assert tab.page.evaluate("() => sessionStorage.length") == 0


def test_a_refused_credential_is_not_kept(tab: Tab) -> None:
    tab.page.goto(tab.stack.console)
    tab.page.fill("#credential", "wfk_not-a-key-anyone-was-given")
    tab.page.click("form.sign-in button[type=submit]")
    tab.page.wait_for_selector(".sign-in-status .error-box")
    assert "refused" in tab.page.inner_text(".sign-in-status")
    assert tab.page.evaluate("() => sessionStorage.length") == 0


def test_the_graph_marks_each_steps_status_and_the_path_taken(tab: Tab) -> None:
    # Given a run that branched, failed a step twice and waits for a person
    run_id = tab.stack.submit(REVIEW, {"order": "A-17", "total": 40})
    tab.stack.wait_status(run_id, "waiting_approval")
    tab.sign_in()

    # When its page is opened
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector("svg.graph g.node[data-step-id=review][data-status=waiting]")

    # Then each step shows what happened to it, and the path is drawn
    assert statuses(tab) == {
        "fetch": "succeeded",
        "check": "succeeded",
        "large": "pending",
        "render": "failed",
        "review": "waiting",
        "ship": "pending",
    }
    assert taken_edges(tab) == {
        ("_start", "fetch"),
        ("fetch", "check"),
        ("check", "render"),
        ("render", "review"),
    }
    meta = tab.page.text_content("g.node[data-step-id=render] .node-meta") or ""
    assert meta.startswith("failed · \u00d72"), meta  # two attempts
    assert edges_through_steps(tab) == []

    # And a step's details are one click away
    tab.page.click("g.node[data-step-id=render]")
    tab.page.wait_for_selector(".step-detail .error-box")
    assert "template_error" in tab.page.inner_text(".step-detail")
    tab.page.click("g.node[data-step-id=fetch]")
    tab.page.wait_for_selector(".step-detail .step-output")
    assert "order A-17 fetched" in tab.page.inner_text(".step-detail .step-output")
    tab.screenshot("run")


def test_an_event_appears_without_reloading_while_the_run_advances(tab: Tab) -> None:
    # Given a run's page open while the run waits
    run_id = tab.stack.submit(approval_flow("live-page"))
    tab.stack.wait_status(run_id, "waiting_approval")
    tab.sign_in()
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector("li.event[data-type=waiting_approval]")
    tab.page.wait_for_selector(".live[data-state=live]")
    tab.page.evaluate("() => { window.sameDocument = true; }")
    assert tab.page.locator("li.event[data-type=run_completed]").count() == 0

    # When the run advances (someone approves it elsewhere)
    decided = tab.stack.client().post(f"/runs/{run_id}/steps/sign_off/approve", json={"comment": "go"})
    assert decided.status_code == 200, decided.text

    # Then its events and its graph follow, in the same document
    tab.page.wait_for_selector("li.event[data-type=run_completed]")
    tab.page.wait_for_selector("g.node[data-step-id=publish][data-status=succeeded]")
    assert tab.page.evaluate("() => window.sameDocument") is True
    assert "approved by olivia" in tab.page.inner_text("li.event[data-type=approval_granted]")
    assert tab.page.inner_text(".run-header .badge") == "succeeded"


def test_the_approve_button_releases_a_waiting_run(tab: Tab) -> None:
    # Given a run waiting for an approval, in the inbox
    run_id = tab.stack.submit(approval_flow("inbox-release"))
    tab.stack.wait_status(run_id, "waiting_approval")
    tab.sign_in()
    tab.open("#/approvals")
    card = tab.page.locator(f"article.approval[data-run-id='{run_id}']")
    card.wait_for()
    assert "Publish inbox-release?" in card.inner_text()
    tab.screenshot("approvals")

    # When it is approved with a comment
    card.locator("textarea[aria-label=comment]").fill("looks right")
    card.locator("button[data-action=approve]").click()

    # Then the run goes on to the end, and the inbox no longer shows it
    run = tab.stack.wait_status(run_id, "succeeded", "failed")
    assert run["status"] == "succeeded"
    assert run["outputs"]["message"] == "published"
    card.wait_for(state="detached")
    events = tab.stack.client().get(f"/runs/{run_id}/events", params={"types": "approval_granted"}).json()
    assert events["events"][0]["payload"]["comment"] == "looks right"


class Receiver:
    """A webhook receiver on loopback that accepts every delivery."""

    def __init__(self, port: int) -> None:
        self.received: list[dict[str, str]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def refusing_port() -> int:
    return free_port()  # nothing listens there (yet): connections are refused


def test_replay_delivers_a_dead_lettered_webhook_again(tab: Tab, refusing_port: int) -> None:
    # Given a webhook step whose receiver refused the delivery, so it waits in the DLQ
    definition = {
        "name": "notify-partner",
        "steps": [
            {
                "id": "notify",
                "type": "webhook",
                "config": {
                    "url": f"http://127.0.0.1:{refusing_port}/hooks/orders",
                    "method": "POST",
                    "body": {"order": "A-17"},
                    "on_delivery_failure": "dlq",
                },
            }
        ],
    }
    run_id = tab.stack.submit(definition)
    tab.stack.wait_status(run_id, "succeeded")
    rows = tab.stack.client().get("/webhooks/dlq", params={"run_id": run_id}).json()["rows"]
    assert len(rows) == 1, rows
    row_id = rows[0]["id"]
    tab.sign_in()
    tab.open("#/webhooks")
    row = tab.page.locator(f"tr[data-row-id='{row_id}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "pending"
    assert row.locator("td.attempts").inner_text() == "1"
    assert row.locator("td.last-error").inner_text() != ""
    tab.screenshot("webhook-dlq")

    # When the receiver is back and the row is replayed from the page
    receiver = Receiver(refusing_port)
    try:
        row.locator("button[data-action=replay]").click()
        delivered = tab.page.locator(f"tr[data-row-id='{row_id}'][data-status=delivered]")
        delivered.wait_for()

        # Then it was delivered once more, with the same webhook-id, and the row says so
        assert delivered.locator("td.attempts").inner_text() == "2"
        assert len(receiver.received) == 1
        assert receiver.received[0]["webhook-id"] == rows[0]["webhook_id"]
    finally:
        receiver.close()


def test_markup_in_names_and_outputs_renders_as_text_and_runs_nothing(tab: Tab) -> None:
    # Given a run whose definition name, inputs and output hold markup
    definition = {"name": MARKUP, "steps": [{"id": "echo", "type": "log", "config": {"message": MARKUP}}]}
    run_id = tab.stack.submit(definition, {"note": MARKUP})
    tab.stack.wait_status(run_id, "succeeded")
    tab.sign_in()

    # When the list and the run's page show them
    tab.open("#/runs")
    tab.page.wait_for_selector(f"tr[data-run-id='{run_id}']")
    assert MARKUP in tab.page.inner_text(f"tr[data-run-id='{run_id}']")
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector(".run-outputs")
    tab.page.click("g.node[data-step-id=echo]")
    tab.page.wait_for_selector(".step-output")

    # Then the markup is visible as text, no element came of it, and no script ran
    assert MARKUP in tab.page.inner_text(".run-header h1")
    assert MARKUP in tab.page.inner_text(".step-output")
    assert MARKUP in tab.page.inner_text(".run-outputs")
    assert MARKUP in tab.page.inner_text(".run-inputs")
    assert tab.page.locator("img").count() == 0
    tab.page.wait_for_load_state("networkidle")
    assert tab.dialogs == []
    assert not any(url.endswith("/x") for url in tab.requests)


def test_the_page_refuses_html_sinks_and_inline_script(tab: Tab) -> None:
    tab.sign_in()
    # Trusted Types: a string given to an HTML or script sink throws, whoever tries
    for sink in (
        "document.body.innerHTML = '<b>x</b>'",
        "document.createElement('script').textContent = 'window.ran = true'",
    ):
        outcome = tab.page.evaluate(
            f"() => {{ try {{ {sink}; return 'assigned'; }} catch (e) {{ return e.name; }} }}"
        )
        assert outcome == "TypeError", sink
    # CSP: an inline event handler never runs
    ran = tab.page.evaluate(
        """() => {
            try {
                const button = document.createElement('button');
                button.setAttribute('onclick', 'window.handlerRan = true');
                document.body.append(button);
                button.click();
            } catch (e) {
                // refused outright: fine too
            }
            return window.handlerRan === true;
        }"""
    )
    assert ran is False


def test_a_viewer_sees_no_control_buttons(tab: Tab) -> None:
    # Given a run waiting for approval and a failed run, both of the viewer's tenant
    waiting = tab.stack.submit(approval_flow("viewer-sees"))
    failed = tab.stack.submit(
        {
            "name": "broken",
            "steps": [{"id": "only", "type": "log", "config": {"message": "{{ inputs.x.y }}"}}],
        }
    )
    tab.stack.wait_status(waiting, "waiting_approval")
    tab.stack.wait_status(failed, "failed")

    # When a viewer looks at them
    tab.sign_in("viewer")
    assert [a.inner_text() for a in tab.page.locator("#nav a").all()] == ["Runs", "Approvals", "Schedules"]
    tab.open(f"#/runs/{waiting}")
    tab.page.wait_for_selector("g.node[data-step-id=sign_off][data-status=waiting]")
    tab.page.wait_for_selector(".approval-panel .approval")

    # Then they see the run and the request, and no button that would act on them
    assert tab.page.locator("[data-action]").count() == 0
    assert tab.page.locator(".controls button").count() == 0
    assert "You may not decide" in tab.page.inner_text(".approval-panel")
    tab.screenshot("viewer-run", full_page=False)
    tab.open(f"#/runs/{failed}")
    tab.page.wait_for_selector("g.node[data-step-id=only][data-status=failed]")
    assert tab.page.locator("[data-action]").count() == 0
    tab.open("#/webhooks")
    tab.page.wait_for_selector("text=Your permissions do not include this page.")


def test_an_owner_without_the_read_permission_sees_the_whole_graph(tab: Tab) -> None:
    # Given a run of a caller who holds no permission, which branched
    response = tab.stack.client("owner").post(
        "/runs", json={"definition": REVIEW, "inputs": {"order": "B-2", "total": 40}}
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    tab.stack.wait_status(run_id, "waiting_approval")

    # When its owner opens it (any caller may list the step types)
    tab.sign_in("owner")
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector("g.node[data-step-id=review][data-status=waiting]")

    # Then the run and its whole graph are shown: the branch's targets too, the one taken marked
    assert statuses(tab)["check"] == "succeeded"
    assert ("check", "render") in taken_edges(tab)
    assert tab.page.locator("svg.graph g.edge[data-from=check][data-to=large]").count() == 1
    assert tab.page.locator(".error-box").count() == 0


def test_schedules_show_their_last_fire(tab: Tab) -> None:
    # Given a saved workflow with a schedule that fired once and one that has not fired yet
    client = tab.stack.client()
    workflow = client.post(
        "",
        json={
            "name": "nightly-report",
            "steps": [{"id": "report", "type": "log", "config": {"message": "ok"}}],
        },
    )
    assert workflow.status_code == 201, workflow.text
    workflow_id = workflow.json()["workflow_id"]
    soon = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S")
    once = client.post("/schedules", json={"workflow_id": workflow_id, "expression": f"at({soon})"})
    assert once.status_code == 201, once.text
    nightly = client.post(
        "/schedules",
        json={"workflow_id": workflow_id, "expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin"},
    )
    assert nightly.status_code == 201, nightly.text

    def fired() -> dict[str, Any] | None:
        last: dict[str, Any] | None = client.get(f"/schedules/{once.json()['schedule_id']}").json()[
            "last_fire"
        ]
        return last

    last_fire = wait_for(fired, 60, "the one-time schedule's fire")

    # When the schedules page is opened
    tab.sign_in()
    tab.open("#/schedules")
    row = tab.page.locator(f"tr[data-schedule-id='{once.json()['schedule_id']}']")
    row.wait_for()

    # Then the fire and the run it started are shown, and the other schedule's next fire
    assert "started" in row.locator("td.last-fire").inner_text()
    assert row.locator(f"td.last-fire a[href='#/runs/{last_fire['run_id']}']").count() == 1
    other = tab.page.locator(f"tr[data-schedule-id='{nightly.json()['schedule_id']}']")
    assert "never fired" in other.inner_text()
    tab.screenshot("schedules", full_page=False)


def test_the_list_shows_a_new_run_without_reloading(tab: Tab) -> None:
    # Given the runs list open
    tab.sign_in()
    tab.open("#/runs")
    tab.page.wait_for_selector("table.runs")
    tab.page.evaluate("() => { window.sameDocument = true; }")

    # When a run is submitted elsewhere
    run_id = tab.stack.submit(
        {"name": "fresh-run", "steps": [{"id": "hello", "type": "log", "config": {"message": "hi"}}]}
    )

    # Then it appears at the top of the list, newest first
    tab.page.wait_for_selector(f"table.runs tbody tr[data-run-id='{run_id}']", timeout=20_000)
    first = tab.page.locator("table.runs tbody tr").first
    assert first.get_attribute("data-run-id") == run_id
    assert tab.page.evaluate("() => window.sameDocument") is True
    tab.page.wait_for_selector(f"tr[data-run-id='{run_id}'][data-status=succeeded]", timeout=20_000)
    tab.screenshot("runs", full_page=False)

    # And the status filter narrows it
    tab.page.check("input[type=checkbox][value=failed]")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_function("() => location.hash.includes('status=failed')")
    tab.page.wait_for_selector(f"tr[data-run-id='{run_id}']", state="detached")
    shown = tab.page.eval_on_selector_all("table.runs tbody tr", "rows => rows.map(r => r.dataset.status)")
    assert set(shown) <= {"failed"}


def test_the_stack_is_the_one_under_test(stack: Stack) -> None:
    # The keys are the tenant's, with the roles the tests rely on
    me = stack.client("viewer").get("/me").json()
    assert me == {
        "tenant_id": "acme",
        "user_id": "victor",
        "roles": ["viewer"],
        "permissions": ["workflows.runs.read"],
    }


def test_a_rejected_approval_leaves_the_steps_it_routed_around_not_run_and_no_edge_crosses_a_step(
    tab: Tab,
) -> None:
    # Given a run whose approval was rejected, so it went on to notify_rejected instead of ship
    run_id = tab.stack.submit(REFUND, {"refund": "R-5"})
    tab.stack.wait_status(run_id, "waiting_approval")
    rejected = tab.stack.client().post(f"/runs/{run_id}/steps/review/reject", json={"comment": "no"})
    assert rejected.status_code == 200, rejected.text
    tab.stack.wait_status(run_id, "succeeded")
    tab.sign_in()

    # When its page is opened
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector("svg.graph.ended g.node[data-step-id=notify_rejected][data-status=succeeded]")

    # Then the steps it never reached say so, the path is the one it took, and no edge is
    # drawn through a step it does not join
    assert statuses(tab) == {
        "prepare": "succeeded",
        "review": "failed",
        "ship": "not_run",
        "archive": "not_run",
        "notify_rejected": "succeeded",
    }
    assert taken_edges(tab) == {
        ("_start", "prepare"),
        ("prepare", "review"),
        ("review", "notify_rejected"),
        ("notify_rejected", "_end"),
    }
    assert tab.page.text_content("g.node[data-step-id=ship] .node-meta") == "not run"
    assert edges_through_steps(tab) == []
    tab.screenshot("run-rejected")


def _shown_in(text: str, zone: str) -> str:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    offset = moment.strftime("%z")
    label = "UTC" if zone == "UTC" else f"UTC{offset[:3]}:{offset[3:]}"
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + label


@pytest.mark.parametrize("browser_timezone", ["Australia/Adelaide"])
def test_times_say_their_zone_utc_first_and_the_browsers_after_the_toggle(tab: Tab) -> None:
    # Given a run, and a browser in Adelaide (UTC+09:30, or +10:30 in summer)
    run_id = tab.stack.submit(
        {"name": "zoned", "steps": [{"id": "hello", "type": "log", "config": {"message": "hi"}}]}
    )
    run = tab.stack.wait_status(run_id, "succeeded")
    tab.sign_in()
    tab.open("#/runs")
    created = tab.page.locator(f"tr[data-run-id='{run_id}'] td").first
    created.wait_for()

    # Then times are in UTC, and say so
    assert created.inner_text() == _shown_in(run["created_at"], "UTC")
    assert tab.page.inner_text(".zone-toggle") == "Times: UTC"

    # When the toggle is used
    tab.page.click(".zone-toggle")
    tab.page.wait_for_selector(f"tr[data-run-id='{run_id}'] time[data-zone=local]")

    # Then they are in the browser's zone, say which, and stay so for the tab's session
    local = _shown_in(run["created_at"], "Australia/Adelaide")
    assert created.inner_text() == local
    assert tab.page.inner_text(".zone-toggle") == "Times: Australia/Adelaide"
    tab.page.reload()
    tab.page.wait_for_selector(f"tr[data-run-id='{run_id}'] time[data-zone=local]")
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector("li.event[data-type=run_completed]")
    shown = tab.page.eval_on_selector_all("time", "times => times.map(t => t.textContent)")
    assert shown, "the run's page shows no time"
    zoned = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d " + re.escape(local.rsplit(" ", 1)[1]))
    assert all(zoned.fullmatch(text) for text in shown), shown


def test_a_schedule_paused_from_the_console_does_not_fire(tab: Tab) -> None:
    # Given two schedules of one workflow due at the same moment, a little ahead
    client = tab.stack.client()
    workflow = client.post(
        "", json={"name": "runaway", "steps": [{"id": "work", "type": "log", "config": {"message": "ok"}}]}
    )
    assert workflow.status_code == 201, workflow.text
    workflow_id = workflow.json()["workflow_id"]
    due = (datetime.now(UTC) + timedelta(seconds=25)).replace(microsecond=0)
    expression = f"at({due.strftime('%Y-%m-%dT%H:%M:%S')})"
    created = [
        client.post("/schedules", json={"workflow_id": workflow_id, "expression": expression})
        for _ in range(2)
    ]
    assert all(answer.status_code == 201 for answer in created), [a.text for a in created]
    paused_id, witness_id = (answer.json()["schedule_id"] for answer in created)

    # When one is paused from the console before that moment
    tab.sign_in()
    tab.open("#/schedules")
    tab.page.locator(f"tr[data-schedule-id='{paused_id}'] button[data-action=pause]").click()
    row = tab.page.locator(f"tr[data-schedule-id='{paused_id}'][data-enabled=false]")
    row.wait_for()
    assert datetime.now(UTC) < due, "the pause landed after the fire time: nothing was tested"
    assert row.locator("td.state").inner_text() == "paused"
    assert client.get(f"/schedules/{paused_id}").json()["enabled"] is False

    # Then the other one fires, and the paused one does not: no fire, no run
    wait_for(
        lambda: client.get(f"/schedules/{witness_id}").json()["last_fire"], 90, "the other schedule's fire"
    )
    assert client.get(f"/schedules/{paused_id}").json()["last_fire"] is None
    runs = client.get("/runs", params={"workflow_id": workflow_id}).json()["runs"]
    assert [run["owner_id"] for run in runs] == [f"schedule:{witness_id}"]

    # And it resumes from the console
    row.locator("button[data-action=resume]").click()
    tab.page.locator(f"tr[data-schedule-id='{paused_id}'][data-enabled=true]").wait_for()
    assert client.get(f"/schedules/{paused_id}").json()["enabled"] is True


def test_the_inbox_lists_what_workflows_approvals_ls_lists_for_the_same_caller(
    tab: Tab, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a run waiting for an approval
    run_id = tab.stack.submit(approval_flow("same-inbox"))
    tab.stack.wait_status(run_id, "waiting_approval")

    # When the operator opens the inbox, and lists approvals with the command-line client
    tab.sign_in()
    tab.open("#/approvals")
    tab.page.locator(f"article.approval[data-run-id='{run_id}']").wait_for()
    shown = tab.page.eval_on_selector_all(
        "article.approval", "cards => cards.map(c => [c.dataset.runId, c.dataset.stepId])"
    )
    capsys.readouterr()
    env = {
        "WORKFLOWS_URL": tab.stack.base,
        "WORKFLOWS_API_KEY": tab.stack.keys["operator"],
        "WORKFLOWS_CONFIG": str(tmp_path / "absent.toml"),
    }
    assert workflows_cli(["approvals", "ls", "--json"], env=env) == 0
    listed = [(a["run_id"], a["step_id"]) for a in json.loads(capsys.readouterr().out)["approvals"]]

    # Then both asked the same question and got the same approvals
    inbox = [urlsplit(url) for url in tab.requests if urlsplit(url).path.endswith("/approvals")]
    assert inbox, tab.requests
    assert parse_qs(inbox[0].query) == {"status": ["pending"], "assignee": ["me"]}
    assert {tuple(pair) for pair in shown} == set(listed)
    assert (run_id, "sign_off") in listed


def test_an_approval_says_what_it_is_for_and_that_the_caller_already_approved(tab: Tab) -> None:
    # Given a step two people must approve, which the operator approved already
    quorum = {
        "name": "two-keys",
        "steps": [
            {
                "id": "sign_off",
                "type": "approval",
                "config": {
                    "instructions": "Two of you: release the invoice?",
                    "assignees": ["olivia", "victor"],
                    "required_approvals": 2,
                },
            },
            {"id": "release", "type": "log", "config": {"message": "released"}},
        ],
    }
    run_id = tab.stack.submit(quorum, {"invoice": "INV-9"})
    tab.stack.wait_status(run_id, "waiting_approval")
    approved = tab.stack.client().post(f"/runs/{run_id}/steps/sign_off/approve", json={})
    assert approved.status_code == 200, approved.text

    # When the operator opens the inbox
    tab.sign_in()
    tab.open("#/approvals")
    card = tab.page.locator(f"article.approval[data-run-id='{run_id}']")
    card.wait_for()
    card.locator(".run-inputs").wait_for()

    # Then the card says what it is for, shows the run's inputs, and that only the rest of the
    # quorum is awaited: no approve button, reject still possible
    text = card.inner_text()
    for said in ("Two of you: release the invoice?", "two-keys", "sign_off", "1 of 2 (olivia)", "times out"):
        assert said in text, said
    assert "INV-9" in card.locator(".run-inputs").inner_text()
    assert card.get_attribute("data-decided") == "approved"
    assert "You approved" in card.locator(".yours").inner_text()
    assert card.locator("button[data-action=approve]").count() == 0
    assert card.locator("button[data-action=reject]").count() == 1


def test_runs_are_found_by_their_workflows_name(tab: Tab) -> None:
    # Given a run of a saved workflow and a run of another
    client = tab.stack.client()
    name = f"found-by-name-{uuid.uuid4().hex[:6]}"
    steps = [{"id": "hello", "type": "log", "config": {"message": "hi"}}]
    workflow = client.post("", json={"name": name, "steps": steps})
    assert workflow.status_code == 201, workflow.text
    workflow_id = workflow.json()["workflow_id"]
    started = client.post(f"/{workflow_id}/runs", json={"inputs": {}})
    assert started.status_code == 202, started.text
    other = tab.stack.submit({"name": "someone-else", "steps": steps})

    # When the runs list is filtered by the workflow's name
    tab.sign_in()
    tab.open("#/runs")
    tab.page.fill("input[aria-label=workflow]", name)
    tab.page.click("form.filters button[type=submit]")

    # Then it lists that workflow's runs only, and says which workflow the name is
    tab.page.wait_for_selector(f"tr[data-run-id='{started.json()['run_id']}']")
    assert tab.page.locator(f"tr[data-run-id='{other}']").count() == 0
    assert tab.page.locator(f".workflow-resolved [data-workflow-id='{workflow_id}']").count() == 1


def lanes(tab: Tab, step_id: str) -> dict[str, list[str]]:
    """The lanes drawn inside a step of the graph: each lane's name -> the steps drawn in it."""
    found: dict[str, list[str]] = tab.page.eval_on_selector_all(
        f"svg.graph g.node[data-step-id={step_id}] g.lane",
        "rows => Object.fromEntries(rows.map(row => [row.dataset.lane,"
        " [...row.querySelectorAll('g.lane-step')].map(step => step.dataset.innerStep)]))",
    )
    return found


# Items that fail (tolerated) or hold: a map that stays running with one failed item.
HOLDING_MAP = {
    "name": "fan-out",
    "steps": [
        {
            "id": "each",
            "type": "map",
            "config": {
                "items": [2, 5],
                "steps": [
                    {"id": "divide", "type": "log", "config": {"message": "{{ 10 // (item - 2) }}"}},
                    {"id": "hold", "type": "delay", "config": {"seconds": 120}},
                ],
                "tolerated_failures": 1,
            },
        }
    ],
}


def holding_map(tab: Tab) -> str:
    """A run of HOLDING_MAP once one item failed and the other runs."""
    run_id = tab.stack.submit(HOLDING_MAP)

    def settled() -> dict[str, Any] | None:
        children = tab.stack.run(run_id).get("children")
        return children if children and children["failed"] == 1 and children["running"] == 1 else None

    wait_for(settled, 60.0, "one item failed and one running")
    return run_id


def test_a_map_shows_its_items_by_state_and_links_parent_and_child(tab: Tab) -> None:
    # Given a map whose first item failed (tolerated) while the other still runs
    run_id = holding_map(tab)
    tab.sign_in()

    # When the run's page is opened
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector(".children .failures a")

    # Then it counts its items by state and links the failed item's run
    text = tab.page.inner_text(".children")
    assert "0 succeeded, 1 failed, 1 running, 0 not started (of 2)" in text, text
    assert "each a child run" in text, text
    # And its step in the graph draws the item steps once, saying how many items run them
    assert lanes(tab, "each") == {"\u00d7 2 items": ["divide", "hold"]}
    assert edges_through_steps(tab) == []
    tab.page.click(".children .failures a")
    tab.page.wait_for_selector("dl.facts dd a")
    assert "step each (item 0)" in tab.page.inner_text("dl.facts")
    tab.screenshot("map")
    tab.stack.client().post(f"/runs/{run_id}/cancel")


def test_an_item_run_inside_the_run_is_named_not_linked(tab: Tab) -> None:
    # Given a map's record as the service gives it for items run inside the run: `inline`, and
    # failures without a run (this run's answer rewritten on its way to the page)
    run_id = holding_map(tab)

    def inline(route: Any) -> None:
        answer = route.fetch()
        run = answer.json()
        failures = [{"index": 3, "status": "failed", "error": {"code": "template_error"}}]
        run["children"] = {**run["children"], "inline": True, "failures": failures}
        route.fulfill(response=answer, json=run)

    tab.page.route(re.compile(rf"/runs/{run_id}$"), inline)
    tab.sign_in()

    # When the run's page is opened
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector(".children[data-inline=true] .failures li")

    # Then the failed item is named in plain text, and the items are said to run inside the run
    assert tab.page.inner_text(".children .failures li") == "item 3: failed (template_error)"
    assert tab.page.locator(".children .failures a").count() == 0
    assert "run inside this run" in tab.page.inner_text(".children")
    assert not any("undefined" in url for url in tab.requests), tab.requests
    tab.stack.client().post(f"/runs/{run_id}/cancel")


# A branch chooses between a parallel and a single step, which share a row of the graph.
FORK = {
    "name": "fork",
    "steps": [
        {
            "id": "check",
            "type": "branch",
            "config": {"condition": "inputs.both", "true_next": "both", "false_next": "single"},
        },
        {
            "id": "both",
            "type": "parallel",
            "config": {
                "branches": {
                    "fast": [{"id": "hello", "type": "log", "config": {"message": "fast"}}],
                    "slow": [
                        {"id": "first", "type": "log", "config": {"message": "one"}},
                        {"id": "second", "type": "log", "config": {"message": "two"}},
                    ],
                }
            },
            "on_success": "_end",
        },
        {"id": "single", "type": "log", "config": {"message": "alone"}},
    ],
}


def test_a_parallel_draws_each_branch_as_a_lane_inside_its_step(tab: Tab) -> None:
    # Given a run that took a parallel of two branches
    run_id = tab.stack.submit(FORK, {"both": True})
    tab.stack.wait_status(run_id, "succeeded")
    tab.sign_in()

    # When its page is opened
    tab.open(f"#/runs/{run_id}")
    tab.page.wait_for_selector("svg.graph g.node[data-step-id=both] g.lane")

    # Then the parallel's step holds a lane per branch, named by it, with the branch's steps in
    # order; it is taller than its neighbour in the row, and no edge crosses a step
    assert lanes(tab, "both") == {"fast": ["hello"], "slow": ["first", "second"]}
    heights = tab.page.eval_on_selector_all(
        "svg.graph g.node",
        "nodes => Object.fromEntries(nodes.map(n =>"
        " [n.dataset.stepId, n.querySelector('rect').height.baseVal.value]))",
    )
    assert heights["both"] > heights["single"], heights
    assert statuses(tab)["both"] == "succeeded"
    assert edges_through_steps(tab) == []
    tab.screenshot("parallel")
