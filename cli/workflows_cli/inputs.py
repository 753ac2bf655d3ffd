"""What the user hands the client: KEY=VALUE pairs, definition files (YAML or JSON), ids."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class InputError(Exception):
    """An argument or a file the client cannot use (the message names it)."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def parse_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `null`, `[1, 2]`, `{"a": 1}`, `"quoted"`), else the text.

    `NaN` and `Infinity` stay text: the service refuses them as numbers."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option} '{pair}': expected KEY=VALUE")
        values[key.strip()] = parse_value(value)
    return values


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: `2026-01-01` stays a string, as JSON would carry it."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_document(text: str, name: str) -> Any:
    """JSON, or else YAML (a superset of it, but JSON's own errors read better for .json)."""
    if name.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InputError(f"{name}: not valid JSON: {exc}") from exc
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError(f"{name}: not valid YAML or JSON: {exc}") from exc


def read_document(path: str) -> Any:
    """A file's parsed content; `-` reads standard input."""
    if path == "-":
        return parse_document(sys.stdin.read(), "<stdin>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it: {exc}") from exc
    return parse_document(text, path)


def read_object(path: str, what: str) -> dict[str, Any]:
    document = read_document(path)
    if not isinstance(document, dict):
        raise InputError(f"{what} {path}: expected an object (a mapping), got {type(document).__name__}")
    return document


def workflow_id(text: str) -> str | None:
    """`text` as a saved workflow's id (a UUID), or None."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class Source:
    """What `runs submit` runs: an inline definition, or a saved workflow by id."""

    definition: dict[str, Any] | None = None
    workflow_id: str | None = None


def read_source(argument: str) -> Source:
    """A file (or `-`) holding a definition, else a saved workflow's id."""
    if argument == "-" or Path(argument).exists():
        return Source(definition=read_object(argument, "definition"))
    saved = workflow_id(argument)
    if saved is not None:
        return Source(workflow_id=saved)
    raise InputError(f"{argument}: no such file, and not a workflow id")
