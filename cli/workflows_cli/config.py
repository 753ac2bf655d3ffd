"""Where the client sends its requests and with which key.

Each setting is taken from the first of: its flag (`--url`, `--api-key`); the named profile
(`--profile NAME`, else `WORKFLOWS_PROFILE`) in the config file; the environment
(`WORKFLOWS_URL`, `WORKFLOWS_API_KEY`); the default (the local stack's URL, no key).

The config file is `$WORKFLOWS_CONFIG`, else `$XDG_CONFIG_HOME/workflows/config.toml`, else
`~/.config/workflows/config.toml`:

    [profiles.prod]
    url = "https://abc.execute-api.eu-west-1.amazonaws.com/api/v1/workflows"
    api_key = "..."

A file holding an API key must be readable by its owner only (`chmod 600`), as ssh asks of a
private key: one that group or others may access is refused rather than used.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000/api/v1/workflows"
PROFILE_KEYS = ("url", "api_key")


class ConfigError(Exception):
    """The settings cannot be used as given (the message says which and where)."""


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str | None
    # Where each came from, for messages: "--url", "profile 'prod'", "WORKFLOWS_URL", "default".
    url_source: str
    profile: str | None


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("WORKFLOWS_CONFIG"):
        return Path(env["WORKFLOWS_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base).expanduser() / "workflows" / "config.toml"


def load_profile(path: Path, name: str) -> dict[str, str]:
    if not path.is_file():
        raise ConfigError(f"profile '{name}': the config file {path} does not exist")
    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    profiles = document.get("profiles", {})
    _check_private(path, profiles)
    if not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) and profiles else "none"
        raise ConfigError(f"no profile '{name}' in {path} ([profiles.<name>] tables: {known})")
    profile: dict[str, Any] = profiles[name]
    for key, value in profile.items():
        if key not in PROFILE_KEYS:
            raise ConfigError(f"{path}: profiles.{name}.{key}: unknown setting (use url, api_key)")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: profiles.{name}.{key}: must be a string")
    return dict(profile)


def _check_private(path: Path, profiles: object) -> None:
    """Refuse a file holding an API key that group or others may access (a key others can read
    is no longer the owner's alone; one others can write can be swapped with their own URL)."""
    if os.name != "posix" or not isinstance(profiles, dict):
        return  # Windows keeps access in ACLs, which the mode bits do not show
    if not any(isinstance(p, dict) and "api_key" in p for p in profiles.values()):
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if mode & 0o077:
        raise ConfigError(
            f"{path} holds an API key and is accessible by group or others (mode {mode:04o}); "
            f"make it private with `chmod 600 {path}`"
        )


def resolve(
    env: Mapping[str, str],
    *,
    url: str | None = None,
    api_key: str | None = None,
    profile: str | None = None,
) -> Target:
    name = profile or env.get("WORKFLOWS_PROFILE") or None
    values = load_profile(config_path(env), name) if name else {}
    candidates = (
        (url, "--url"),
        (values.get("url"), f"profile '{name}'"),
        (env.get("WORKFLOWS_URL"), "WORKFLOWS_URL"),
        (DEFAULT_URL, "default"),
    )
    chosen, source = next((value, where) for value, where in candidates if value)
    if not chosen.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: '{chosen}' is not an http:// or https:// URL")
    key = api_key or values.get("api_key") or env.get("WORKFLOWS_API_KEY") or None
    return Target(url=chosen.rstrip("/"), api_key=key, url_source=source, profile=name)
