"""The command-line client's arguments, inputs, files and settings: no service needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from workflows_cli.config import DEFAULT_URL, ConfigError, resolve
from workflows_cli.events import describe
from workflows_cli.inputs import (
    InputError,
    check_json,
    parse_pairs,
    parse_value,
    read_document,
    read_source,
)
from workflows_cli.main import EXIT_CONFIG, EXIT_USAGE, build_parser
from workflows_cli.watch import Progress

ROOT = Path(__file__).resolve().parents[2]


def test_input_values_are_json_when_they_parse_and_text_otherwise() -> None:
    pairs = ["n=3", "ratio=0.5", "flag=true", "none=null", "name=Ada", 'tags=["a", "b"]', 'obj={"k": 1}']
    assert parse_pairs(pairs, "--input") == {
        "n": 3,
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "name": "Ada",
        "tags": ["a", "b"],
        "obj": {"k": 1},
    }


def test_input_values_keep_text_json_would_misread() -> None:
    assert parse_value("") == ""
    assert parse_value("a=b") == "a=b"
    assert parse_value('"3"') == "3"
    assert parse_value("NaN") == "NaN"  # the service refuses NaN as a number
    assert parse_value("Infinity") == "Infinity"
    assert parse_value("{not json") == "{not json"
    assert parse_pairs(["url=http://x/?a=1"], "--input") == {"url": "http://x/?a=1"}


@pytest.mark.parametrize("pair", ["novalue", "=3", " =3"])
def test_a_pair_without_a_key_is_refused_naming_the_option(pair: str) -> None:
    with pytest.raises(InputError, match=f"--field '{pair}': expected KEY=VALUE"):
        parse_pairs([pair], "--field")


def test_yaml_definitions_keep_dates_as_text(tmp_path: Path) -> None:
    path = tmp_path / "def.yaml"
    path.write_text("name: dated\nsteps:\n  - id: a\n    type: log\n    config: {message: 2026-01-01}\n")
    document = read_document(str(path))
    assert document["steps"][0]["config"]["message"] == "2026-01-01"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("!!set {a: null, b: null}", "steps[0].config.message: a set (!!set) cannot be sent as JSON"),
        ("!!binary aGVsbG8=", "steps[0].config.message: binary data (!!binary) cannot be sent as JSON"),
        ("!!timestamp 2026-01-01", "steps[0].config.message: a timestamp (!!timestamp) cannot be sent"),
        (".nan", "steps[0].config.message: NaN (.nan) is not a JSON number"),
        ("[1, -.inf]", "steps[0].config.message[1]: an infinity (.inf) is not a JSON number"),
        ("{.inf: x}", "steps[0].config.message.inf: its key: an infinity (.inf) is not a JSON number"),
    ],
)
def test_a_definition_json_cannot_carry_is_refused_naming_the_file_and_field(
    cli: Cli, tmp_path: Path, value: str, shown: str
) -> None:
    path = tmp_path / "def.yaml"
    path.write_text(f"name: odd\nsteps:\n  - id: a\n    type: log\n    config: {{message: {value}}}\n")

    result = cli("runs", "submit", str(path), env={"WORKFLOWS_API_KEY": "k"})

    assert result.code == EXIT_CONFIG
    assert f"definition {path}: {shown}" in result.err
    assert "Traceback" not in result.err


def test_inputs_json_cannot_carry_are_refused_naming_the_file_and_field(cli: Cli, tmp_path: Path) -> None:
    definition = tmp_path / "def.yaml"
    definition.write_text("name: hello\nsteps: []\n")
    for name, text in (("inputs.yaml", "ratio: .inf\n"), ("inputs.json", '{"ratio": NaN}')):
        inputs = tmp_path / name
        inputs.write_text(text)

        result = cli(
            "runs", "submit", str(definition), "--inputs-file", str(inputs), env={"WORKFLOWS_API_KEY": "k"}
        )

        assert result.code == EXIT_CONFIG
        assert f"--inputs-file {inputs}: ratio: " in result.err
        assert "is not a JSON number" in result.err
    with pytest.raises(InputError, match=r"^defs\.json: a\[1\]\.b: a set \(!!set\)"):
        check_json({"a": [0, {"b": {1, 2}}]}, "defs.json")
    check_json({"a": [1, 0.5, None, True, "x"], 1: {"b": ()}}, "ok.yaml")


def test_numbers_json_has_not_stay_text() -> None:
    assert parse_value("1e999") == "1e999"
    assert parse_value("-1e999") == "-1e999"
    assert parse_value("[1e999]") == "[1e999]"
    assert parse_value("1e308") == 1e308


def test_json_files_get_json_errors_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "def.json"
    path.write_text('{"name": "x",')
    with pytest.raises(InputError, match=r"def\.json: not valid JSON"):
        read_document(str(path))


def test_submit_runs_a_file_or_a_saved_workflow_id(tmp_path: Path) -> None:
    path = tmp_path / "hello.json"
    path.write_text(json.dumps({"name": "hello", "steps": []}))
    assert read_source(str(path)).definition == {"name": "hello", "steps": []}
    saved = "0b6f3c36-3f5e-4d4e-9c43-6d1c2f6e8a11"
    assert read_source(saved).workflow_id == saved
    with pytest.raises(InputError, match="no such file, and not a workflow id"):
        read_source(str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(InputError, match="expected an object"):
        read_source(str(tmp_path / "list.yaml"))


def test_connection_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--url", "http://a", "--profile", "p", "runs", "ls"])
    after = parser.parse_args(["runs", "ls", "--url", "http://b", "--api-key", "k"])
    assert (before.url, before.profile, before.api_key) == ("http://a", "p", None)
    assert (after.url, after.api_key, after.profile) == ("http://b", "k", None)


def test_commands_parse_their_arguments() -> None:
    parser = build_parser()
    submit = parser.parse_args(["runs", "submit", "f.yaml", "-i", "n=3", "--input", "x=y", "--watch"])
    assert (submit.file, submit.input, submit.watch) == ("f.yaml", ["n=3", "x=y"], True)
    retry = parser.parse_args(["runs", "retry", "R", "--from-step", "first"])
    assert (retry.action, retry.run, retry.from_step) == ("retry", "R", "first")
    approve = parser.parse_args(["approve", "R", "review", "-m", "ok", "--field", "channel=blog"])
    assert (approve.decision, approve.step, approve.comment, approve.field) == (
        "approve",
        "review",
        "ok",
        ["channel=blog"],
    )
    tail = parser.parse_args(["events", "tail", "R", "-f", "--since", "4", "--json"])
    assert (tail.follow, tail.since, tail.json) == (True, 4, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "frobnicate"],
        ["runs", "ls", "--limit", "0"],
        ["events", "tail"],
        ["approve", "R"],
        [],
    ],
)
def test_usage_errors_exit_64_not_a_run_outcome(cli: Cli, argv: list[str]) -> None:
    result = cli(*argv)
    assert result.code == EXIT_USAGE
    assert "usage: workflows" in result.err


def test_help_exits_0(cli: Cli) -> None:
    result = cli("runs", "submit", "--help")
    assert result.code == 0
    assert "--inputs-file" in result.out


def test_version_only_applies_to_saved_workflows(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text("name: hello\nsteps: []\n")
    result = cli("runs", "submit", str(path), "--version", "2", env={"WORKFLOWS_API_KEY": "k"})
    assert result.code == EXIT_USAGE
    assert "--version applies to a saved workflow" in result.err


def test_a_missing_key_names_the_variable(cli: Cli) -> None:
    result = cli("runs", "ls")
    assert result.code == EXIT_CONFIG
    assert "no API key: set WORKFLOWS_API_KEY" in result.err
    assert "Traceback" not in result.err


def test_an_unreadable_file_is_named(cli: Cli, tmp_path: Path) -> None:
    result = cli("defs", "push", str(tmp_path / "nope.yaml"), env={"WORKFLOWS_API_KEY": "k"})
    assert result.code == EXIT_CONFIG
    assert "nope.yaml: cannot read it" in result.err


def test_progress_shows_each_steps_state_and_keeps_a_decision() -> None:
    progress = Progress("r")
    progress.plan({"steps": [{"id": "wait", "type": "delay"}, {"id": "review", "type": "approval"}]})
    events = [
        ("run_started", None, {}),
        ("step_started", "wait", {"step_type": "delay", "attempt": 1}),
        ("step_completed", "wait", {}),
        ("step_started", "review", {"step_type": "approval", "attempt": 1}),
        ("waiting_approval", "review", {"instructions": "ok?"}),
    ]
    for kind, step, payload in events:
        progress.apply({"event_type": kind, "step_id": step, "payload": payload})
    assert [(s.step_id, s.state) for s in progress.steps.values()] == [
        ("wait", "completed"),
        ("review", "waiting for approval"),
    ]
    assert [progress.approve_command(step) for step in progress.waiting()] == ["workflows approve r review"]

    progress.apply({"event_type": "approval_granted", "step_id": "review", "payload": {"approver": "ada"}})
    progress.apply({"event_type": "step_completed", "step_id": "review", "payload": {}})
    assert (progress.steps["review"].state, progress.steps["review"].note) == ("approved", "by ada")


def test_progress_keeps_a_step_waiting_until_its_quorum_of_approvals() -> None:
    progress = Progress("r")
    progress.plan({"steps": [{"id": "review", "type": "approval"}]})
    progress.apply({"event_type": "run_started", "step_id": None, "payload": {}})
    progress.apply({"event_type": "step_started", "step_id": "review", "payload": {"step_type": "approval"}})
    progress.apply({"event_type": "waiting_approval", "step_id": "review", "payload": {}})
    first = {"approver": "alice", "approvals": 1, "required_approvals": 2}

    progress.apply({"event_type": "approval_granted", "step_id": "review", "payload": first})

    review = progress.steps["review"]
    assert (progress.run_status, review.state) == ("waiting_approval", "waiting for approval")
    assert review.note == "approved by alice (1 of 2)"
    assert describe({"event_type": "approval_granted", "step_id": "review", "payload": first}) == (
        "step review approved by alice (1 of 2)"
    )

    second = {"approver": "bob", "approvals": 2, "required_approvals": 2, "comment": "ship it"}
    progress.apply({"event_type": "approval_granted", "step_id": "review", "payload": second})

    assert (progress.run_status, review.state, review.note) == ("running", "approved", "by bob (2 of 2)")
    assert describe({"event_type": "approval_granted", "step_id": "review", "payload": second}) == (
        "step review approved by bob (2 of 2): ship it"
    )


def test_a_single_approval_and_a_rejection_carry_no_count() -> None:
    one = {"approver": "ada", "approvals": 1, "required_approvals": 1}
    rejected = {"approver": "carol", "approvals": 1, "required_approvals": 2}
    assert describe({"event_type": "approval_granted", "step_id": "s", "payload": one}) == (
        "step s approved by ada"
    )
    assert describe({"event_type": "approval_rejected", "step_id": "s", "payload": rejected}) == (
        "step s rejected by carol"
    )


# ---- settings ---------------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)  # a file holding a key must be private
    return {"WORKFLOWS_CONFIG": str(path)}


def test_settings_default_to_the_local_stack() -> None:
    target = resolve({})
    assert (target.url, target.api_key, target.url_source) == (DEFAULT_URL, None, "default")


def test_environment_then_profile_then_flags(tmp_path: Path) -> None:
    env = {
        **_config(
            tmp_path, '[profiles.prod]\nurl = "https://prod.example/api/v1/workflows/"\napi_key = "pk"\n'
        ),
        "WORKFLOWS_URL": "http://env/api/v1/workflows",
        "WORKFLOWS_API_KEY": "ek",
    }
    assert (resolve(env).url, resolve(env).api_key) == ("http://env/api/v1/workflows", "ek")
    named = resolve(env, profile="prod")
    assert (named.url, named.api_key, named.url_source) == (
        "https://prod.example/api/v1/workflows",
        "pk",
        "profile 'prod'",
    )
    assert resolve({**env, "WORKFLOWS_PROFILE": "prod"}).api_key == "pk"
    flagged = resolve({**env, "WORKFLOWS_PROFILE": "prod"}, url="http://flag", api_key="fk")
    assert (flagged.url, flagged.api_key) == ("http://flag", "fk")


def test_a_profile_without_a_key_takes_the_environments(tmp_path: Path) -> None:
    env = {
        **_config(tmp_path, '[profiles.local]\nurl = "http://127.0.0.1:9000/api/v1/workflows"\n'),
        "WORKFLOWS_API_KEY": "ek",
    }
    target = resolve(env, profile="local")
    assert (target.url, target.api_key) == ("http://127.0.0.1:9000/api/v1/workflows", "ek")


def test_the_config_file_is_found_under_xdg_config_home(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "config.toml").write_text('[profiles.dev]\napi_key = "dk"\n')
    (tmp_path / "workflows" / "config.toml").chmod(0o600)
    assert resolve({"XDG_CONFIG_HOME": str(tmp_path)}, profile="dev").api_key == "dk"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[profiles.other]\nurl = "http://x"\n',
            r"no profile 'prod' in .*config.toml \(\[profiles.<name>\] tables: other\)",
        ),
        ('[profiles.prod]\nendpoint = "http://x"\n', r"profiles.prod.endpoint: unknown setting"),
        ("[profiles.prod]\napi_key = 3\n", r"profiles.prod.api_key: must be a string"),
        ("[profiles.prod\n", r"config.toml: "),
        (
            '[profiles.prod]\nurl = "ftp://x"\n',
            r"profile 'prod': 'ftp://x' is not an http:// or https:// URL",
        ),
    ],
)
def test_bad_settings_say_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(_config(tmp_path, text), profile="prod")


def test_a_named_profile_needs_the_file(tmp_path: Path, cli: Cli) -> None:
    result = cli("runs", "ls", "--profile", "prod", env={"WORKFLOWS_CONFIG": str(tmp_path / "none.toml")})
    assert result.code == EXIT_CONFIG
    assert "profile 'prod': the config file" in result.err


# ---- packaging --------------------------------------------------------------------------


def test_the_service_layer_does_not_install_the_client() -> None:
    layer = (ROOT / "layers" / "shared" / "requirements.txt").read_text().lower()
    for name in ("rich", "workflows-cli", "pyyaml", "./cli"):
        assert name not in layer


def test_the_events_of_side_by_side_steps_name_their_branch_or_item() -> None:
    started = {
        "children": [{"index": 0, "branch": "a", "run_id": "r0"}, {"index": 1, "branch": "b", "run_id": "r1"}]
    }
    items = {"children": [{"index": i, "run_id": f"r{i}"} for i in range(10, 20)]}
    ended = {"index": 3, "run_id": "r3", "status": "failed", "error": {"code": "boom", "message": "no"}}
    ended |= {"ended": 4, "running": 5}

    assert describe({"event_type": "children_started", "step_id": "p", "payload": started}) == (
        "step p started branch a, branch b"
    )
    assert describe({"event_type": "children_started", "step_id": "m", "payload": items}) == (
        "step m started items 10-19"
    )
    line = describe({"event_type": "child_ended", "step_id": "m", "payload": ended})
    assert line.startswith("step m: item 3 failed: boom")
    assert line.endswith("(4 ended, 5 running), run r3")
    # A step of an item (a branch) run inside its parent run.
    inline = {"index": 7, "output": {"message": "hi"}, "attempt": 1}
    assert describe({"event_type": "step_completed", "step_id": "say", "payload": inline}) == (
        "step say (item 7) completed"
    )
    failed = {"branch": "b", "error": {"code": "template_error", "message": "x"}, "attempt": 1}
    assert describe({"event_type": "step_failed", "step_id": "b1", "payload": failed}).startswith(
        "step b1 (branch b) failed: template_error"
    )
