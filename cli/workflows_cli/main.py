"""`workflows`: the command line, its exit codes, and how errors are shown.

Exit codes:
  0   done; with --watch, the run succeeded
  1   with --watch, the run failed; `dlq replay`, the delivery failed again
  2   with --watch, the run was cancelled, or a person rejected its approval step
  3   the service answered with an error (its code and message are printed)
  4   the service could not be reached (the URL is printed)
  5   configuration or input problem: no API key, an unknown profile, a config file holding
      a key that group or others may read (chmod 600 it), an unreadable file, a
      file holding what JSON cannot carry (a YAML set, binary data, .nan, .inf)
  64  usage: unknown command or option, a missing or malformed argument (an empty, . or .. id)
  130 interrupted (Ctrl-C); a watched run goes on
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.text import Text

from workflows_cli import __version__, commands
from workflows_cli.client import PATH_RESERVED, ApiError, Unreachable
from workflows_cli.config import ConfigError
from workflows_cli.inputs import InputError

EXIT_OK = 0
EXIT_API_ERROR = 3
EXIT_UNREACHABLE = 4
EXIT_CONFIG = 5
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130

EPILOG = __doc__.split("\n\n", 1)[1] if __doc__ else ""


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64: 1 and 2 are outcomes of a watched run."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _connection_options(*, top: bool) -> argparse.ArgumentParser:
    """--url, --api-key, --profile: accepted before the command and after it. Below the top
    level they default to SUPPRESS so an option given before the command is not reset."""
    parent = argparse.ArgumentParser(add_help=False)
    default = None if top else argparse.SUPPRESS
    parent.add_argument("--url", default=default, help="the API's base URL (WORKFLOWS_URL)")
    parent.add_argument("--api-key", default=default, help="the API key (WORKFLOWS_API_KEY)")
    parent.add_argument(
        "--profile", default=default, help="a [profiles.NAME] of the config file (WORKFLOWS_PROFILE)"
    )
    return parent


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return whole


_positive = _at_least(1)
_not_negative = _at_least(0)


def _identifier(text: str) -> str:
    """An id that goes into the request's path: never empty, `.` or `..`, which would name
    another route once the URL is resolved."""
    if not text:
        raise argparse.ArgumentTypeError("an id cannot be empty")
    if text in PATH_RESERVED:
        raise argparse.ArgumentTypeError(f"'{text}' is not an id: it would change the request's path")
    return text


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options(top=False)
    parser = _Parser(
        prog="workflows",
        description="Command-line client of the workflow-run service.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"workflows {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def command(
        parent: Any, name: str, handler: Callable[..., int], help_text: str, *, json: bool = True
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        sub.set_defaults(handler=handler)
        if json:
            sub.add_argument("--json", action="store_true", help="print the service's JSON answer")
        return sub

    def group(name: str, help_text: str) -> Any:
        sub = groups.add_parser(name, help=help_text, description=help_text)
        return sub.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # ---- runs
    runs = group("runs", "submit, list, read, watch and control runs")
    submit = command(
        runs, "submit", commands.runs_submit, "submit a run of a definition file or a saved workflow"
    )
    submit.add_argument(
        "file", metavar="FILE", help="a definition (YAML or JSON; - for stdin) or a workflow id"
    )
    submit.add_argument(
        "--input",
        "-i",
        action="append",
        metavar="KEY=VALUE",
        help="an input; VALUE is JSON when it parses (n=3 is a number), else text (repeatable)",
    )
    submit.add_argument(
        "--inputs-file", metavar="FILE", help="inputs as a YAML or JSON object (--input wins)"
    )
    submit.add_argument(
        "--version", type=_positive, dest="workflow_version", metavar="N", help="a saved workflow's version N"
    )
    submit.add_argument(
        "--idempotency-key", metavar="KEY", help="a retry with the same key submits nothing new"
    )
    submit.add_argument("--watch", "-w", action="store_true", help="follow the run; exit with its outcome")

    ls = command(runs, "ls", commands.runs_ls, "list runs, newest first")
    ls.add_argument(
        "--status", action="append", metavar="STATUS", help="only runs in this status (repeatable)"
    )
    ls.add_argument("--workflow", metavar="WORKFLOW_ID", help="only this saved workflow's runs")
    ls.add_argument("--limit", type=_positive, default=20, help="runs per page (default 20, at most 200)")
    ls.add_argument("--cursor", help="the next page (printed after a full page)")

    get = command(runs, "get", commands.runs_get, "show a run")
    get.add_argument("run", metavar="RUN", type=_identifier)

    watch = command(runs, "watch", commands.runs_watch, "follow a run until it ends; exit with its outcome")
    watch.add_argument("run", metavar="RUN", type=_identifier)

    for action, text in (
        ("cancel", "cancel a run"),
        ("pause", "pause a run"),
        ("resume", "resume a paused run"),
        ("retry", "retry a failed run"),
    ):
        control = command(runs, action, commands.runs_control, text)
        control.add_argument("run", metavar="RUN", type=_identifier)
        control.set_defaults(action=action)
        if action == "retry":
            control.add_argument("--from-step", metavar="STEP", help="the step to start again from")

    # ---- events
    events = group("events", "a run's events")
    tail = command(events, "tail", commands.events_tail, "print a run's events (-f: follow until it ends)")
    tail.add_argument("run", metavar="RUN", type=_identifier)
    tail.add_argument("-f", "--follow", action="store_true", help="follow new events until the run ends")
    tail.add_argument("--since", type=_not_negative, default=0, help="only events after this event_seq")
    tail.add_argument("--types", metavar="TYPE,...", help="only these event types (comma-separated)")

    # ---- approvals
    approvals = group("approvals", "approval steps waiting for a decision")
    pending = command(approvals, "ls", commands.approvals_ls, "list the pending approvals you may decide")
    # The same inbox as the console's (GET /approvals?status=pending&assignee=me): what the
    # caller may decide, unless they ask for someone else's or for everything they may read.
    whose = pending.add_mutually_exclusive_group()
    whose.add_argument(
        "--assignee",
        metavar="me|USER",
        default="me",
        help="those you may decide (me, the default) or those naming USER among their assignees",
    )
    whose.add_argument(
        "--all",
        dest="assignee",
        action="store_const",
        const=None,
        default="me",
        help="every pending approval you may read, whoever may decide it",
    )
    pending.add_argument("--limit", type=_positive, help="approvals per page")
    pending.add_argument("--cursor", help="the next page")

    for decision in ("approve", "reject"):
        decide = command(groups, decision, commands.decide, f"{decision} a step waiting for approval")
        decide.add_argument("run", metavar="RUN", type=_identifier)
        decide.add_argument("step", metavar="STEP", type=_identifier)
        decide.add_argument("--comment", "-m", help="why (stored with the decision)")
        decide.add_argument(
            "--field",
            action="append",
            metavar="KEY=VALUE",
            help="a field of the decision; VALUE is JSON when it parses (repeatable)",
        )
        decide.set_defaults(decision=decision)

    # ---- signals
    signal = command(
        groups,
        "signal",
        commands.signal,
        "send a signal to the runs waiting for it (or to one run, --run)",
    )
    signal.add_argument("name", metavar="NAME", help="the signal's name (payment.settled)")
    signal.add_argument(
        "--data",
        "-d",
        action="append",
        metavar="KEY=VALUE",
        help="a field of its data; VALUE is JSON when it parses (n=3 is a number), else text (repeatable)",
    )
    signal.add_argument(
        "--data-json", dest="data_json", metavar="OBJECT", help="its data as a JSON object (--data wins)"
    )
    signal.add_argument(
        "--id",
        dest="signal_id",
        metavar="ID",
        help="the signal's id: sending an id again sends nothing new (default: a new one, printed)",
    )
    signal.add_argument("--run", metavar="RUN", type=_identifier, help="send it to this run only")

    # ---- definitions
    defs = group("defs", "saved workflow definitions")
    push = command(defs, "push", commands.defs_push, "save a definition: new, or a new version of its name")
    push.add_argument("file", metavar="FILE", help="a definition (YAML or JSON; - for stdin)")
    push.add_argument("--workflow", metavar="WORKFLOW_ID", help="add the version to this workflow")
    defs_ls = command(defs, "ls", commands.defs_ls, "list saved workflows, newest first")
    defs_ls.add_argument("--all", action="store_true", help="deleted ones too")
    defs_ls.add_argument("--limit", type=_positive, default=50, help="workflows per page (at most 200)")
    defs_ls.add_argument("--cursor", help="the next page")

    # ---- webhook dead letters
    dlq = group("dlq", "webhook deliveries that failed")
    dlq_ls = command(dlq, "ls", commands.dlq_ls, "list webhook DLQ rows, newest first")
    dlq_ls.add_argument("--status", action="append", metavar="STATUS", help="pending, delivered, exhausted")
    dlq_ls.add_argument("--run", metavar="RUN", help="only this run's rows")
    dlq_ls.add_argument("--limit", type=_positive, default=50, help="rows per page (at most 200)")
    dlq_ls.add_argument("--cursor", help="the next page")
    replay = command(dlq, "replay", commands.dlq_replay, "deliver a DLQ row again now")
    replay.add_argument("row", metavar="ROW", type=_identifier)
    return parser


def _stdout_console() -> Console:
    # Off a terminal (a pipe, a file) tables keep their width instead of 80 columns.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(markup=False, highlight=False, width=width, soft_wrap=True)


def _render_api_error(err: Console, exc: ApiError, hint: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), f"{exc.code}: {exc.message} (HTTP {exc.status})"))
    for detail in exc.details:
        field = detail.get("field")
        err.print(f"  {field}: {detail.get('message')}" if field else f"  {detail.get('message')}")
    if exc.retry_after:
        err.print(f"  retry after {exc.retry_after} s")
    if hint:
        err.print(f"  {hint}")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    app = commands.App(args=args, env=os.environ if env is None else env, out=_stdout_console(), err=err)
    try:
        code: int = args.handler(app)
        return code
    except commands.UsageError as exc:
        parser.print_usage(sys.stderr)
        err.print(f"workflows: error: {exc}")
        return EXIT_USAGE
    except (ConfigError, InputError) as exc:
        err.print(Text.assemble(("error: ", "bold red"), str(exc)))
        return EXIT_CONFIG
    except ApiError as exc:
        _render_api_error(err, exc, app.hint_for(exc))
        return EXIT_API_ERROR
    except Unreachable as exc:
        err.print(
            Text.assemble(
                ("error: ", "bold red"),
                f"cannot reach the service at {exc.url}: {exc.reason}",
            )
        )
        err.print(f"  the URL comes from {app.url_source()}; is the service running there?")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        err.print(app.interrupted_note())
        return EXIT_INTERRUPTED
