"""Every runnable example in README.md and docs/*.md, run against `make run` as a reader runs it.

An example is a fenced block in `sh`, `bash`, `shell`, `console` or `python`. A block that cannot
run on the local stack says why on the line right before its fence, `<!-- needs: aws -->`,
`<!-- needs: outside endpoint -->` (or another reason, such as `docker` or `minutes`), and is
left out; so is every block under a heading naming "Deploy" or "sam local" (AWS and a container
runtime). The rest run in order, file by file, in one bash per file that keeps its variables
from block to block, as a reader's terminal does:

- a `make run` line starts the local stack with the settings on that line (on free loopback
  ports: the docs' 127.0.0.1:8000, :5050 and :8001 are rewritten to them, and the command-line
  client's default URL is set to the stack's);
- every command must exit 0, and where a comment on or right before it (or after the block's
  last command) states what comes back, the output must hold each quoted value it names
  (`status "succeeded"`) and the first HTTP status it names (`# 422 {...}`); an answer of 400
  or more is a failure unless the comment names that status;
- a read (`curl` without `-X` or a body) that does not show what its comment states yet is
  asked again for a while, as a reader looks again at a run that has not finished;
- a block whose following prose says "in another terminal" keeps its last command running in
  the background while the next block runs (a failing command there is tried again for a
  while: the reader waits for the first terminal to show the state the prose describes), then
  that command must end with exit code 0;
- a placeholder such as `<run_id>` or `<key_id>` is the id the command left running shows,
  else the latest such id an earlier command showed.

The docs other than the README start where the README's walk-through leaves a reader: API_KEY
and BASE set for the stack its first `make run` line starts.

`make test` runs the README's walk-through section and every example of docs/*.md; every
example, the README's waits included, runs with `make test-docs` (the `docs` marker).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.localstack import LOGS, ROOT, LocalStack, local_stack

pytestmark = pytest.mark.e2e

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
NEEDS = re.compile(r"^<!--\s*needs:\s*(.+?)\s*-->$")
NOT_LOCAL_HEADINGS = ("deploy", "sam local")
FENCE = re.compile(r"^```(\S*)\s*$")
STACK_START = re.compile(r"^((?:\w+=\S*\s+)*)make run((?:\s+\w+=\S*)*)\s*$")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
PLACEHOLDER = re.compile(r"<([a-z][a-z_]*_id)>")
QUOTED = re.compile(r'"([^"]+)"')
HTTP_STATUS = re.compile(r"(?<![\w.:/-])([1-5]\d\d)(?![\w.:-])")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# `curl -s` prints no status: this reports it on stderr, which a `$(...)` does not capture.
CURL_STATUS = "curl() { command curl -w '%{stderr}<<HTTP %{http_code}>>\\n' \"$@\"; }\n"
COMMAND_TIMEOUT = 60.0
LOOK_AGAIN_FOR = 30.0
LOCAL_PORT, LOCAL_MOTO_PORT, LOCAL_WS_PORT = "127.0.0.1:8000", "127.0.0.1:5050", "127.0.0.1:8001"
# `make test` runs the README's walk-through and the docs/*.md examples (about 20 s);
# `make test-docs` runs every example (about a minute: it waits as the examples do).
QUICK_README_SECTION = "## Walk-through with curl"
EVERY_EXAMPLE = os.environ.get("WORKFLOWS_DOC_EXAMPLES") == "all"


# ---- reading the docs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first line inside the fence
    language: str
    body: list[str]
    heading: str  # the nearest
    sections: tuple[str, ...]  # every heading it is under, outermost first
    needs: str | None
    prose_after: str  # up to the next fence


@dataclass(frozen=True)
class Command:
    line: int
    code: str
    expects: str  # the comments that say what comes back


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[tuple[int, str, list[str], tuple[str, ...], str | None]] = []
    sections: tuple[str, ...] = ()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            level = len(lines[i]) - len(lines[i].lstrip("#"))
            sections = (*(h for h in sections if len(h) - len(h.lstrip("#")) < level), lines[i])
        match = FENCE.match(lines[i])
        if match:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            needs = NEEDS.match(before)
            found.append((i + 1, match.group(1), lines[i + 1 : end], sections, needs and needs.group(1)))
            i = end
        i += 1
    starts = [start for start, *_ in found] + [len(lines) + 1]
    return [
        Block(
            path=path,
            line=start + 1,
            language=language,
            body=body,
            heading=sections[-1] if sections else "",
            sections=sections,
            needs=needs,
            prose_after="\n".join(lines[start + len(body) + 1 : starts[k + 1] - 1]),
        )
        for k, (start, language, body, sections, needs) in enumerate(found)
    ]


def runs_locally(block: Block) -> bool:
    if block.language not in SHELL_LANGUAGES | {"python"} or block.needs:
        return False
    return not any(word in heading.lower() for heading in block.sections for word in NOT_LOCAL_HEADINGS)


@dataclass
class _Scan:
    """Where a shell command stands after some lines: open quotes, parentheses, compounds."""

    quote: str | None = None
    parens: int = 0
    compounds: int = 0
    continued: bool = False
    heredoc: str | None = None

    def complete(self) -> bool:
        return not (self.quote or self.parens or self.compounds or self.continued or self.heredoc)

    def line(self, text: str) -> tuple[str, str]:
        """Scans one line; returns its code and its trailing comment."""
        unquoted: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if self.quote == "'":
                if char == "'":
                    self.quote = None
            elif self.quote == '"':
                if char == "\\":
                    i += 1
                elif char == '"':
                    self.quote = None
            elif char == "\\":
                i += 1
            elif char in "'\"":
                self.quote = char
            elif char == "#" and (i == 0 or text[i - 1].isspace()):
                break
            else:
                unquoted.append(char)
            i += 1
        code, comment = text[:i].rstrip(), text[i + 1 :].strip()
        bare = "".join(unquoted)
        self.parens += bare.count("(") - bare.count(")")
        words = re.findall(r"[\w]+|[{}]", bare)
        self.compounds += sum(w in ("do", "then", "{") for w in words)
        self.compounds -= sum(w in ("done", "fi", "}") for w in words)
        self.continued = code.endswith("\\") and self.quote is None
        heredoc = HEREDOC.search(code)
        if heredoc:
            self.heredoc = heredoc.group(2)
        return code, comment


def commands(block: Block) -> list[Command]:
    if block.language == "python":
        code = "python3 - <<'DOC_EXAMPLE'\n" + "\n".join(block.body) + "\nDOC_EXAMPLE"
        return [Command(line=block.line, code=code, expects="")]
    found: list[Command] = []
    scan = _Scan()
    comments: list[str] = []
    lines: list[str] = []
    start = 0
    for offset, text in enumerate(block.body):
        if scan.heredoc:
            lines.append(text)
            if text.strip() == scan.heredoc:
                scan.heredoc = None
        elif not lines and not text.strip():
            continue
        elif not lines and text.lstrip().startswith("#"):
            comments.append(text.lstrip()[1:].strip())
            continue
        else:
            if not lines:
                start = offset
            code, comment = scan.line(text)
            lines.append(code)
            if comment:
                comments.append(comment)
        if lines and scan.complete():
            found.append(Command(line=block.line + start, code="\n".join(lines), expects=" ".join(comments)))
            lines, comments = [], []
    assert not lines, f"{block.path.name}:{block.line}: a command is left open at the end of the block"
    if comments and found:
        # A comment after the block's last command shows what that command answered.
        last = found[-1]
        found[-1] = Command(line=last.line, code=last.code, expects=f"{last.expects} {' '.join(comments)}")
    return found


def problem_with(status: int, output: str, expects: str) -> str | None:
    if status != 0:
        return f"exit code {status}"
    for value in QUOTED.findall(expects):
        if "..." not in value and "…" not in value and f'"{value}"' not in output:
            return f'the comment names "{value}", which the output does not show'
    named = HTTP_STATUS.search(expects)
    answers = re.findall(r"<<HTTP (\d{3})>>", output)
    if named and named.group(1) not in answers:
        return f"the comment names HTTP {named.group(1)}, which the answer did not have"
    # An error is an example's point only where its comment says so.
    errors = [code for code in answers if code >= "400" and not (named and code == named.group(1))]
    if errors:
        return f"HTTP {errors[0]}, which no comment names"
    return None


def is_read(code: str) -> bool:
    return "curl" in code and not re.search(r"(^|\s)(-X|-d|--data\S*)\s", code)


# ---- a reader's terminal -------------------------------------------------------------------


class Terminal:
    """One bash that keeps its variables and functions between commands."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self._scratch = cwd / ".doc-examples"
        self._scratch.mkdir(exist_ok=True)
        self._process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._count = 0
        self.run(CURL_STATUS)

    def _read(self) -> None:
        assert self._process.stdout is not None
        for text in self._process.stdout:
            self._lines.put(text)
        self._lines.put(None)

    def _script(self, code: str) -> Path:
        self._count += 1
        path = self._scratch / f"command-{self._count}.sh"
        path.write_text(code + "\n")
        return path

    def _send(self, text: str, timeout: float) -> tuple[int, str]:
        assert self._process.stdin is not None
        token = f"--done-{uuid.uuid4().hex}--"
        self._process.stdin.write(f"{text}\nprintf '\\n{token} %d\\n' $?\n")
        self._process.stdin.flush()
        deadline = time.monotonic() + timeout
        output: list[str] = []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError(f"no answer within {timeout} s:\n{''.join(output)}") from None
            assert line is not None, f"the shell exited:\n{''.join(output)}"
            if line.startswith(token):
                # The printf's leading newline is not the command's.
                return int(line.split()[1]), "".join(output).removesuffix("\n")
            output.append(line)

    def run(self, code: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        return self._send(f". {shlex.quote(str(self._script(code)))} </dev/null 2>&1", timeout)

    def start_in_background(self, code: str) -> Path:
        log = self._scratch / f"background-{self._count + 1}.log"
        self._send(f". {shlex.quote(str(self._script(code)))} >{shlex.quote(str(log))} 2>&1 </dev/null &", 5)
        self._send("doc_example_background=$!", 5)
        return log

    def wait_for_background(self, timeout: float) -> tuple[int, str]:
        tenths = int(timeout * 10)
        return self._send(
            f"for _ in $(seq {tenths}); do kill -0 $doc_example_background 2>/dev/null || break;"
            " sleep 0.1; done\n"
            "if kill -0 $doc_example_background 2>/dev/null; then kill $doc_example_background; false;"
            " else wait $doc_example_background; fi",
            timeout + 10,
        )

    def close(self) -> None:
        if self._process.poll() is None:
            os.killpg(self._process.pid, 9)
            self._process.wait()


# ---- running the examples ------------------------------------------------------------------


class NotShown(AssertionError):
    """A placeholder's value has not been shown by any command yet."""


@dataclass
class Reader:
    """Runs one file's examples in one terminal, starting stacks as its `make run` lines say."""

    stacks: Stacks
    home: Path
    env: dict[str, str]
    transcript: Path  # every command run and what it printed, for reading a failure
    stack: LocalStack | None = None
    outputs: list[str] = field(default_factory=list)
    background: Path | None = None

    def __post_init__(self) -> None:
        self.terminal = Terminal(self.home, self.env)

    def localized(self, code: str) -> str:
        assert self.stack is not None, "an example runs before any `make run`"
        code = code.replace(LOCAL_PORT, f"127.0.0.1:{self.stack.port}")
        code = code.replace(LOCAL_MOTO_PORT, f"127.0.0.1:{self.stack.moto_port}")
        code = code.replace(LOCAL_WS_PORT, f"127.0.0.1:{self.stack.ws_port}")
        return PLACEHOLDER.sub(lambda m: self.latest(m.group(1)), code)

    def latest(self, name: str) -> str:
        # While a command runs in another terminal, the reader copies the id from what it shows.
        seen = [self.background.read_text()] if self.background else self.outputs
        patterns = (rf'"{name}"\s*:\s*"([^"]+)"', rf"\b{name.removesuffix('_id')}\s+({UUID})\b")
        for output in reversed(seen):
            for pattern in patterns:
                match = re.search(pattern, output)
                if match:
                    return match.group(1)
        raise NotShown(f"no earlier command showed a {name} for <{name}>")

    def use(self, stack: LocalStack) -> None:
        self.stack = stack
        self.terminal.run(f"export WORKFLOWS_URL={stack.base}")

    def run_file(self, path: Path, wanted: Callable[[Block], bool]) -> None:
        waiting: Path | None = None
        for block in (b for b in blocks(path) if runs_locally(b) and wanted(b)):
            found = commands(block)
            for k, command in enumerate(found):
                where = f"{path.relative_to(ROOT)}:{command.line}"
                settings = stack_settings(command.code)
                if settings is not None:
                    self.use(self.stacks.start(settings))
                elif k == len(found) - 1 and "in another terminal" in block.prose_after.lower():
                    self.background = self.terminal.start_in_background(self.localized(command.code))
                else:
                    self.run_command(where, command)
            if waiting:
                status, _ = self.terminal.wait_for_background(COMMAND_TIMEOUT)
                log = waiting.read_text()
                assert status == 0, (
                    f"{path.name}: the command left running before line {block.line}"
                    f" ended with {status}:\n{log}"
                )
                self.outputs.append(log)
                self.background = waiting = None
            elif self.background:
                waiting = self.background
        assert not waiting, f"{path.name}: a command left running has no block after it"

    def run_command(self, where: str, command: Command) -> None:
        deadline = time.monotonic() + LOOK_AGAIN_FOR
        while True:
            try:
                code = self.localized(command.code)
            except NotShown as missing:
                code, status, output = command.code, -1, ""
                problem: str | None = str(missing)
            else:
                status, output = self.terminal.run(code)
                problem = problem_with(status, output, command.expects)
            with self.transcript.open("a") as transcript:
                verdict = problem or "as documented"
                transcript.write(f"--- {where} (exit {status}; {verdict})\n$ {code}\n{output}\n")
            if problem is None:
                self.outputs.append(output)
                return
            again = is_read(code) or self.background is not None
            if not again or time.monotonic() > deadline:
                raise AssertionError(f"{where}: {problem}\n$ {code}\n{output[-3000:]}")
            time.sleep(0.5)

    def close(self) -> None:
        self.terminal.close()


def stack_settings(code: str) -> dict[str, str] | None:
    match = STACK_START.match(code.strip())
    if not match:
        return None
    return dict(word.split("=", 1) for word in (match.group(1) + match.group(2)).split())


class Stacks:
    """The local stacks the examples start, one per distinct set of settings."""

    def __init__(self, exits: ExitStack, events: Path, name: str) -> None:
        self._exits = exits
        self._events = events
        self._name = name
        self._running: dict[tuple[tuple[str, str], ...], LocalStack] = {}

    def start(self, settings: dict[str, str]) -> LocalStack:
        key = tuple(sorted(settings.items()))
        if key not in self._running:
            name = f"{self._name}-{len(self._running) + 1}"
            self._running[key] = self._exits.enter_context(
                local_stack(name, self._events / name, settings, startup_timeout=120)
            )
        return self._running[key]

    def first(self) -> LocalStack | None:
        return next(iter(self._running.values()), None)


def reader_environment(home: Path) -> dict[str, str]:
    """This environment without the developer's own service settings, as a fresh terminal has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    env.pop("AWS_ENDPOINT_URL", None)
    env["XDG_CONFIG_HOME"] = str(home / ".config")  # no profile of the developer's applies
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A working directory that looks like the checkout (its directories linked in), so the
    examples' relative paths work, while the files they write land in a temporary place."""
    for entry in ROOT.iterdir():
        if entry.is_dir() and entry.name != ".git":
            (tmp_path / entry.name).symlink_to(entry, target_is_directory=True)
    return tmp_path


def run_examples(home: Path, transcript: Path, wanted: Callable[[Block], bool]) -> list[str]:
    """Runs the `wanted` examples, the README's first; returns what did not go as documented."""
    failures: list[str] = []
    transcript.unlink(missing_ok=True)
    with ExitStack() as exits:
        stacks = Stacks(exits, home / ".local-events", transcript.stem)
        readme, others = DOCS[0], DOCS[1:]
        first: LocalStack | None = None
        for path in [readme, *others]:
            reader = Reader(stacks, home, reader_environment(home), transcript)
            try:
                if path != readme:
                    assert first is not None, "the README starts no stack"
                    reader.use(first)
                    key = first.env.get("WORKFLOWS_API_KEY", "")
                    reader.terminal.run(f"export API_KEY={shlex.quote(key)} BASE={first.base}")
                reader.run_file(path, wanted)
            except AssertionError as failure:
                failures.append(str(failure))
            finally:
                reader.close()
                if first is None:
                    first = stacks.first()
    return failures


def test_the_walk_through_and_the_docs_examples_run_as_documented(home: Path) -> None:
    headings = {block.heading for block in blocks(DOCS[0])}
    assert QUICK_README_SECTION in headings, f"the README has no section {QUICK_README_SECTION!r}"

    def wanted(block: Block) -> bool:
        return block.path != DOCS[0] or block.heading == QUICK_README_SECTION

    failures = run_examples(home, LOGS / "doc-examples-quick.log", wanted)

    assert not failures, "\n\n".join(failures)


@pytest.mark.docs
@pytest.mark.skipif(not EVERY_EXAMPLE, reason="every doc example takes a minute: make test-docs")
def test_every_runnable_doc_example_runs_as_documented(home: Path) -> None:
    failures = run_examples(home, LOGS / "doc-examples.log", lambda block: True)

    assert not failures, "\n\n".join(failures)
