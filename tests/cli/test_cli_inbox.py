"""`workflows approvals ls` is the caller's inbox: the same query as the console's approvals page
(tests/browser/test_console.py holds the console to it), docs/approvals.md's
`GET /approvals?status=pending&assignee=me`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.conftest import Canned, Cli, Service
from tests.conftest import drain

INBOX_QUERY = {"status": ["pending"], "assignee": ["me"]}
ASSIGNED_TO_CAROL = {
    "name": "carols-review",
    "steps": [
        {
            "id": "review",
            "type": "approval",
            "config": {"instructions": "Carol decides", "assignees": ["carol"]},
        }
    ],
}


def _ls(cli: Cli, canned: Canned, *flags: str) -> dict[str, list[str]]:
    canned.replies.append((200, {"approvals": [], "next_cursor": None}, {}))
    result = cli("approvals", "ls", *flags, env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"})
    assert result.code == 0, result.err
    query: dict[str, list[str]] = canned.requests[-1]["query"]
    return query


def test_approvals_ls_asks_for_what_the_caller_may_decide_by_default(cli: Cli, canned: Canned) -> None:
    assert _ls(cli, canned) == INBOX_QUERY


def test_approvals_ls_all_asks_for_every_pending_approval(cli: Cli, canned: Canned) -> None:
    assert _ls(cli, canned, "--all") == {"status": ["pending"]}


def test_approvals_ls_assignee_asks_for_that_users_approvals(cli: Cli, canned: Canned) -> None:
    assert _ls(cli, canned, "--assignee", "bob") == {"status": ["pending"], "assignee": ["bob"]}


def test_approvals_ls_leaves_out_an_approval_only_someone_else_may_decide(
    on: Cli, service: Service, tmp_path: Path
) -> None:
    definition = tmp_path / "carol.json"
    definition.write_text(json.dumps(ASSIGNED_TO_CAROL))
    submitted = on("runs", "submit", str(definition))
    assert submitted.code == 0, submitted.err
    run_id = submitted.out.strip()
    drain(service.parts)

    mine = on("approvals", "ls", "--json")
    everything = on("approvals", "ls", "--all", "--json")

    listed: list[dict[str, Any]] = everything.json()["approvals"]
    assert mine.json()["approvals"] == []
    assert [(a["run_id"], a["step_id"]) for a in listed] == [(run_id, "review")]


def test_approvals_ls_all_names_its_filter_in_the_next_page_hint(cli: Cli, canned: Canned) -> None:
    canned.replies.append((200, {"approvals": [], "next_cursor": "abc"}, {}))

    result = cli("approvals", "ls", "--all", env={"WORKFLOWS_URL": canned.url, "WORKFLOWS_API_KEY": "k"})

    assert "more: workflows approvals ls --all --cursor abc" in result.err
