"""What each command does: one function per command, taking the App, returning an exit code."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from workflows_cli import config
from workflows_cli.client import ApiError, Client
from workflows_cli.events import TERMINAL_EVENTS, TERMINAL_STATUSES, describe, pages
from workflows_cli.inputs import (
    InputError,
    parse_object,
    parse_pairs,
    read_object,
    read_source,
    workflow_id,
)
from workflows_cli.watch import STATE_STYLES, Progress, watch

EXIT_OK = 0
EXIT_NOT_DELIVERED = 1


class UsageError(Exception):
    """Arguments argparse accepts but the command cannot use together."""


@dataclass
class App:
    args: argparse.Namespace
    env: Mapping[str, str]
    out: Console
    err: Console
    _target: config.Target | None = field(default=None, init=False)
    watching: str | None = field(default=None, init=False)

    def target(self) -> config.Target:
        if self._target is None:
            self._target = config.resolve(
                self.env,
                url=getattr(self.args, "url", None),
                api_key=getattr(self.args, "api_key", None),
                profile=getattr(self.args, "profile", None),
            )
        return self._target

    def client(self) -> Client:
        target = self.target()
        if not target.api_key:
            raise config.ConfigError(
                "no API key: set WORKFLOWS_API_KEY (or pass --api-key, or set api_key in a profile of "
                f"{config.config_path(self.env)}); `make run` prints the local stack's key"
            )
        return Client(target.url, target.api_key)

    def url_source(self) -> str:
        try:
            return self.target().url_source
        except config.ConfigError:
            return "the settings"

    def hint_for(self, exc: ApiError) -> str:
        if exc.status == 401:
            return "check the API key (WORKFLOWS_API_KEY, --api-key or the profile's api_key)"
        if exc.status in (404, 405) and exc.message.startswith(("no route", "Method Not Allowed")):
            url = self.target().url
            if not url.endswith("/api/v1/workflows"):
                return f"is {url} the API's base URL? It ends in /api/v1/workflows"
            return "the service at this URL does not know this route: an older version?"
        return ""

    def interrupted_note(self) -> str:
        if self.watching:
            return f"stopped watching; the run goes on (workflows runs get {self.watching})"
        return "interrupted"

    def wants_json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def print_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def watch(self, client: Client, run_id: str) -> int:
        self.watching = run_id
        return watch(client, run_id, self.out, self.err, json_lines=self.wants_json())


# Columns of ids: never cut or folded, however narrow the terminal (other columns fold).
ID_COLUMNS = frozenset({"RUN", "WORKFLOW", "ROW"})


class _Rows:
    """A table whose id columns are as wide as their longest id."""

    def __init__(self, *columns: str) -> None:
        self.columns = columns
        self.rows: list[tuple[str | Text, ...]] = []

    def add(self, *cells: Any) -> None:
        self.rows.append(tuple(cell if isinstance(cell, Text) else str(cell or "") for cell in cells))

    def print(self, out: Console) -> None:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for index, name in enumerate(self.columns):
            if name in ID_COLUMNS:
                width = max([len(name), *(len(str(row[index])) for row in self.rows)])
                table.add_column(name, no_wrap=True, min_width=width)
            else:
                table.add_column(name, overflow="fold")
        for row in self.rows:
            table.add_row(*row)
        out.print(table)


def _status(value: Any) -> Text:
    status = str(value)
    style = STATE_STYLES.get({"succeeded": "completed", "running": "running"}.get(status, status), "")
    return Text(status, style=style)


def _more(app: App, page: dict[str, Any], command: str) -> None:
    if page.get("next_cursor"):
        app.err.print(f"more: {command} --cursor {page['next_cursor']}")


# ---- runs -------------------------------------------------------------------------------


def runs_submit(app: App) -> int:
    args = app.args
    source = read_source(args.file)
    inputs: dict[str, Any] = {}
    if args.inputs_file:
        inputs.update(read_object(args.inputs_file, "--inputs-file"))
    inputs.update(parse_pairs(args.input, "--input"))
    if source.definition is not None and args.workflow_version is not None:
        raise UsageError("--version applies to a saved workflow (a workflow id), not to a definition file")
    with app.client() as client:
        if source.definition is not None:
            accepted = client.submit(source.definition, inputs, args.idempotency_key)
        else:
            assert source.workflow_id is not None
            accepted = client.submit_saved(
                source.workflow_id, inputs, args.workflow_version, args.idempotency_key
            )
        run_id = str(accepted["run_id"])
        if not args.watch:
            if app.wants_json():
                app.print_json(accepted)
            else:
                app.out.print(run_id)
            return EXIT_OK
        if not app.wants_json():
            app.out.print(Text(f"run {run_id} submitted ({accepted.get('status')})"))
        return app.watch(client, run_id)


def runs_watch(app: App) -> int:
    with app.client() as client:
        return app.watch(client, app.args.run)


def runs_ls(app: App) -> int:
    args = app.args
    with app.client() as client:
        page = client.runs(
            statuses=args.status, workflow_id=args.workflow, limit=args.limit, cursor=args.cursor
        )
    if app.wants_json():
        app.print_json(page)
        return EXIT_OK
    table = _Rows("RUN", "NAME", "STATUS", "STEP", "CREATED")
    for run in page.get("runs", []):
        name = f"{run.get('definition_name')} v{run.get('definition_version')}"
        table.add(
            run.get("run_id"),
            name,
            _status(run.get("status")),
            run.get("current_step_id") or "",
            run.get("created_at"),
        )
    table.print(app.out)
    _more(app, page, "workflows runs ls")
    return EXIT_OK


def runs_get(app: App) -> int:
    with app.client() as client:
        run = client.run(app.args.run)
        if app.wants_json():
            app.print_json(run)
            return EXIT_OK
        steps = _steps(client, run)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()

    def row(label: str, value: Any) -> None:
        if value not in (None, "", {}, []):
            grid.add_row(label, value if isinstance(value, Text) else str(value))

    def as_json(value: Any) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    status = _status(run.get("status"))
    if run.get("status_reason"):
        status.append(f" ({run['status_reason']})")
    row("run", run.get("run_id"))
    row("workflow", f"{run.get('definition_name')} v{run.get('definition_version')}")
    row("workflow id", run.get("workflow_id"))
    row("status", status)
    row("current step", run.get("current_step_id"))
    row("attempt", run.get("attempt") if run.get("attempt", 1) > 1 else None)
    row("created", run.get("created_at"))
    row("started", run.get("started_at"))
    row("ended", run.get("ended_at"))
    row("steps executed", (run.get("usage") or {}).get("steps_executed"))
    row("inputs", as_json(run.get("inputs")) if run.get("inputs") else None)
    row("outputs", as_json(run.get("outputs")) if run.get("outputs") is not None else None)
    error = run.get("error")
    if isinstance(error, dict):
        row("error", f"{error.get('code')}: {error.get('message')}")
    app.out.print(grid)
    if steps is not None:
        app.out.print()
        app.out.print(steps)
    return EXIT_OK


def _steps(client: Client, run: dict[str, Any]) -> RenderableType | None:
    """What became of each step, as its events tell (None when they cannot be read)."""
    run_id = str(run.get("run_id"))
    progress = Progress(run_id, run_status=str(run.get("status")))
    try:
        progress.plan(client.run_definition(run_id))
        for page in pages(client, run_id):
            for event in page.get("events") or []:
                progress.apply(event)
    except ApiError:
        return None
    progress.run_status = str(run.get("status"))
    if progress.run_status in TERMINAL_STATUSES:
        progress.ended()
    return progress.render(title=False)


def runs_control(app: App) -> int:
    args = app.args
    with app.client() as client:
        result = client.control(args.run, args.action, getattr(args, "from_step", None))
    return _control_result(app, result)


def _control_result(app: App, result: dict[str, Any]) -> int:
    if app.wants_json():
        app.print_json(result)
        return EXIT_OK
    done = "applied" if result.get("result") == "applied" else "already applied"
    line = Text(f"{result.get('run_id')}: {result.get('action')} {done}; status ")
    line.append_text(_status(result.get("status")))
    app.out.print(line)
    return EXIT_OK


def decide(app: App) -> int:
    args = app.args
    fields = parse_pairs(args.field, "--field")
    with app.client() as client:
        result = client.decide(args.run, args.step, args.decision, comment=args.comment, fields=fields)
    return _control_result(app, result)


# ---- events -----------------------------------------------------------------------------


def events_tail(app: App) -> int:
    """Prints the run's events; with -f, follows until the run has ended."""
    args = app.args
    types = [t.strip() for t in (args.types or "").split(",") if t.strip()] or None
    if args.follow:
        app.watching = args.run
    with app.client() as client:
        for page in pages(
            client, args.run, since=args.since, follow=args.follow, types=types, notice=_warn(app)
        ):
            ended = False
            for event in page.get("events") or []:
                ended = ended or event.get("event_type") in TERMINAL_EVENTS
                if app.wants_json():
                    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    app.out.print(
                        Text(f"{event.get('event_seq'):>5}  {event.get('created_at')}  {describe(event)}")
                    )
            caught_up = args.follow and not page.get("has_more")
            # With a type filter the terminal event may never show: ask the run itself.
            if caught_up and (ended or types) and client.run(args.run).get("status") in TERMINAL_STATUSES:
                break
    return EXIT_OK


def _warn(app: App) -> Any:
    def notice(message: str) -> None:
        app.err.print(Text(f"warning: {message}", style="yellow"))

    return notice


# ---- approvals --------------------------------------------------------------------------


def approvals_ls(app: App) -> int:
    args = app.args
    with app.client() as client:
        page = client.approvals(assignee=args.assignee, limit=args.limit, cursor=args.cursor)
    if app.wants_json():
        app.print_json(page)
        return EXIT_OK
    table = _Rows("RUN", "STEP", "NAME", "APPROVALS", "ASSIGNEES", "REQUESTED", "EXPIRES", "INSTRUCTIONS")
    for item in page.get("approvals", []):
        given = item.get("approvals")
        count = len(given) if isinstance(given, list) else given
        table.add(
            item.get("run_id"),
            item.get("step_id"),
            item.get("definition_name") or item.get("workflow_id") or "",
            f"{count or 0}/{item.get('required_approvals', 1)}",
            ", ".join(map(str, item.get("assignees") or [])) or "anyone",
            item.get("requested_at") or "",
            item.get("expires_at") or "",
            item.get("instructions") or "",
        )
    table.print(app.out)
    # The next page must be asked with the same filter, or its cursor is refused.
    whose = {None: " --all", "me": ""}.get(args.assignee, f" --assignee {args.assignee}")
    _more(app, page, f"workflows approvals ls{whose}")
    return EXIT_OK


# ---- signals ----------------------------------------------------------------------------

# What a run did with a signal sent to it (`delivery`).
DELIVERIES = {
    "completed": "its step completed",
    "received": "it took the signal and waits for more",
    "ignored": "it waits, but not for this signal (another value of a field)",
    "not_waiting": "it is not waiting for this signal",
}


def signal(app: App) -> int:
    """Sends a signal; without --id, a new id, printed so that a retry can send the same one."""
    args = app.args
    data: dict[str, Any] = {}
    if args.data_json is not None:
        data.update(parse_object(args.data_json, "--data-json"))
    data.update(parse_pairs(args.data, "--data"))
    signal_id = args.signal_id or str(uuid.uuid4())
    with app.client() as client:
        sent = client.signal(args.name, signal_id, data, run_id=args.run)
    if app.wants_json():
        app.print_json(sent)
        if not args.signal_id:
            app.err.print(f"to retry without sending it twice: --id {signal_id}")
        return EXIT_OK
    line = f"signal {sent.get('name')} {sent.get('id')}: "
    if sent.get("duplicate"):
        line += f"sent before, at {sent.get('sent_at')}; nothing new was sent"
    elif args.run is None:
        line += "sent to the runs waiting for it"
    else:
        line += "sent"
    if args.run is not None:
        delivery = str(sent.get("delivery"))
        line += f"; run {sent.get('run_id')}: {DELIVERIES.get(delivery, delivery)}"
    app.out.print(Text(line))
    if not args.signal_id:
        app.err.print(f"to retry without sending it twice: --id {signal_id}")
    return EXIT_OK


# ---- definitions ------------------------------------------------------------------------


def _workflows_named(client: Client, name: str) -> list[dict[str, Any]]:
    """Every active saved workflow whose latest version is named `name`, newest first."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = client.definitions(limit=200, cursor=cursor)
        found += [w for w in page.get("workflows", []) if w.get("name") == name]
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def defs_push(app: App) -> int:
    """A new workflow, or a new version of the one with the same name (or of --workflow)."""
    args = app.args
    definition = read_object(args.file, "definition")
    name = definition.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{args.file}: the definition has no name")
    # Version numbers are the service's to give: a new version is always latest + 1.
    draft = {k: v for k, v in definition.items() if k != "version"}
    with app.client() as client:
        target = args.workflow
        if target is not None and workflow_id(target) is None:
            raise UsageError(f"--workflow '{target}' is not a workflow id")
        if target is None:
            matches = _workflows_named(client, name)
            if len(matches) > 1:
                ids = ", ".join(str(m.get("workflow_id")) for m in matches)
                raise UsageError(
                    f"{len(matches)} workflows are named '{name}' ({ids}): choose one with --workflow"
                )
            target = matches[0]["workflow_id"] if matches else None
        if target is None:
            try:
                saved = client.create_definition(definition)
                created = True
            except ApiError as exc:
                # Saved by someone else since the listing: add to theirs.
                if exc.code != "conflict" or not (matches := _workflows_named(client, name)):
                    raise
                saved = client.add_version(matches[0]["workflow_id"], draft)
                created = False
        else:
            saved = client.add_version(target, draft)
            created = False
    if app.wants_json():
        app.print_json(saved)
        return EXIT_OK
    what = "created workflow" if created else "new version of workflow"
    app.out.print(f"{what} {saved.get('workflow_id')}: {saved.get('name')} v{saved.get('version')}")
    return EXIT_OK


def defs_ls(app: App) -> int:
    args = app.args
    with app.client() as client:
        page = client.definitions(include_deleted=args.all, limit=args.limit, cursor=args.cursor)
    if app.wants_json():
        app.print_json(page)
        return EXIT_OK
    table = _Rows("WORKFLOW", "NAME", "VERSION", "STATUS", "UPDATED", "DESCRIPTION")
    for item in page.get("workflows", []):
        table.add(
            item.get("workflow_id"),
            item.get("name"),
            str(item.get("version")),
            item.get("status"),
            item.get("updated_at"),
            item.get("description") or "",
        )
    table.print(app.out)
    _more(app, page, "workflows defs ls")
    return EXIT_OK


# ---- webhook dead letters ---------------------------------------------------------------


def dlq_ls(app: App) -> int:
    args = app.args
    with app.client() as client:
        page = client.dlq_rows(statuses=args.status, run_id=args.run, limit=args.limit, cursor=args.cursor)
    if app.wants_json():
        app.print_json(page)
        return EXIT_OK
    table = _Rows("ROW", "RUN", "STATUS", "ATTEMPTS", "NEXT ATTEMPT", "DESTINATION", "LAST ERROR")
    for row in page.get("rows", []):
        table.add(
            row.get("id"),
            row.get("run_id"),
            row.get("status"),
            str(row.get("attempts")),
            row.get("next_attempt_at") or "",
            row.get("destination") or row.get("host") or "",
            row.get("last_error") or "",
        )
    table.print(app.out)
    _more(app, page, "workflows dlq ls")
    return EXIT_OK


def dlq_replay(app: App) -> int:
    with app.client() as client:
        result = client.replay(app.args.row)
    attempt = result.get("attempt") or {}
    delivered = attempt.get("outcome") == "delivered"
    if app.wants_json():
        app.print_json(result)
    else:
        line = f"{result.get('id')}: {attempt.get('outcome')}"
        if attempt.get("status_code"):
            line += f" (HTTP {attempt['status_code']})"
        if attempt.get("error"):
            line += f": {attempt['error']}"
        app.out.print(Text(f"{line}; the row is {result.get('status')}"))
    return EXIT_OK if delivered else EXIT_NOT_DELIVERED
