"""What the user hands the client: KEY=VALUE pairs, definition files (YAML or JSON), ids."""

from __future__ import annotations

import datetime
import json
import math
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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `null`, `[1, 2]`, `{"a": 1}`, `"quoted"`), else the text.

    `NaN`, `Infinity` and numbers too large for a float (`1e999`) stay text: JSON has no such
    numbers."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except ValueError:
        return text


def _not_json(value: Any) -> str | None:
    """Why JSON cannot carry `value` itself (its items are not looked at), or None if it can."""
    if value is None or isinstance(value, str | bool | int | list | tuple | dict):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        if math.isnan(value):
            return "NaN (.nan) is not a JSON number"
        return "an infinity (.inf) is not a JSON number"
    if isinstance(value, set | frozenset):
        return "a set (!!set) cannot be sent as JSON: write a list"
    if isinstance(value, bytes):
        return "binary data (!!binary) cannot be sent as JSON: write it as text (base64, say)"
    if isinstance(value, datetime.date):
        return "a timestamp (!!timestamp) cannot be sent as JSON: write it as text"
    return f"a {type(value).__name__} cannot be sent as JSON"


def _not_json_key(key: Any) -> str | None:
    """Why JSON cannot carry `key` as an object's key: its keys are text, and numbers,
    booleans and null become theirs; nothing else can."""
    if key is None or isinstance(key, str | bool | int | float):
        return _not_json(key)
    return _not_json(key) or f"a {type(key).__name__} cannot be sent as JSON"


def _first_not_json(value: Any, path: str) -> tuple[str, str] | None:
    """The first (field, why) within `value` JSON cannot carry, depth first."""
    why = _not_json(value)
    if why is not None:
        return path, why
    if isinstance(value, dict):
        for key, item in value.items():
            field = f"{path}.{key}" if path else str(key)
            why = _not_json_key(key)
            if why is not None:
                return field, f"its key: {why}"
            found = _first_not_json(item, field)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_not_json(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def check_json(value: Any, name: str) -> None:
    """Refuses, naming the file and the field, a document holding what JSON cannot carry:
    YAML's sets, binary data, timestamps (unquoted dates are read as text already), .nan and
    .inf (and the NaN and Infinity Python's JSON reader accepts, which JSON does not allow)."""
    found = _first_not_json(value, "")
    if found is not None:
        field, why = found
        raise InputError(f"{name}: {field}: {why}" if field else f"{name}: {why}")


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option} '{pair}': expected KEY=VALUE")
        values[key.strip()] = parse_value(value)
    return values


def parse_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line (`--json '{"a": 1}'`)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except ValueError as exc:
        raise InputError(f"{option}: not valid JSON (NaN and Infinity are not JSON): {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{option}: expected a JSON object ({{...}}), got {type(value).__name__}")
    return value


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
    """A file's object, every value of which JSON can carry."""
    document = read_document(path)
    if not isinstance(document, dict):
        raise InputError(f"{what} {path}: expected an object (a mapping), got {type(document).__name__}")
    check_json(document, f"{what} {path}")
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
