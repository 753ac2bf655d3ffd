"""A config file holding an API key is used only while it is private to its owner, as ssh
treats a private key: otherwise the command stops before any request, naming the file and the
fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.conftest import Canned, Cli

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def _profile(tmp_path: Path, url: str, mode: int, *, key: bool = True) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(f'[profiles.prod]\nurl = "{url}"\n' + ('api_key = "pk"\n' if key else ""))
    path.chmod(mode)
    return {"WORKFLOWS_CONFIG": str(path), "WORKFLOWS_PROFILE": "prod"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_others_may_access_is_refused_before_any_request(
    tmp_path: Path, cli: Cli, canned: Canned, mode: int
) -> None:
    env = _profile(tmp_path, canned.url, mode)
    result = cli("runs", "ls", env=env)
    assert result.code == 5
    assert f"chmod 600 {env['WORKFLOWS_CONFIG']}" in result.err
    assert f"mode {mode:04o}" in result.err
    assert canned.requests == []


def test_a_private_key_file_is_used(tmp_path: Path, cli: Cli, canned: Canned) -> None:
    canned.replies.append((200, {"runs": [], "next_cursor": None}, {}))
    result = cli("runs", "ls", env=_profile(tmp_path, canned.url, 0o600))
    assert result.code == 0, result.err
    assert canned.requests[0]["headers"]["X-API-KEY"] == "pk"


def test_a_file_without_keys_may_be_readable_by_others(tmp_path: Path, cli: Cli, canned: Canned) -> None:
    canned.replies.append((200, {"runs": [], "next_cursor": None}, {}))
    env = {**_profile(tmp_path, canned.url, 0o644, key=False), "WORKFLOWS_API_KEY": "ek"}
    result = cli("runs", "ls", env=env)
    assert result.code == 0, result.err
    assert canned.requests[0]["headers"]["X-API-KEY"] == "ek"
