"""A workflow's `inputs_schema`, checked and applied with bounded work (README, "Inputs schema").

A schema is the tenant's own input, and so are the inputs checked against it: neither may make
one request (or one schedule fire) spend unbounded CPU. jsonschema's stock keywords run user
regular expressions on Python's backtracking `re` (`"pattern": "^(a+)+$"` against 30 characters
takes seconds, and each more doubles it), compare `uniqueItems` pairwise, and can follow a
remote `$ref` over the network. The validator here is jsonschema's own, extended:

- every regular expression (`pattern`, the keys of `patternProperties`, and through them
  `additionalProperties`) runs on RE2, whose matching time is linear in the text; a pattern RE2
  cannot compile (backreferences, lookarounds) or whose compiled program is larger than
  `MAX_PATTERN_PROGRAM` is refused when the definition is saved, naming its field;
- a match costs at most its program size times the text's length, and one validation may spend
  `MAX_MATCH_WORK` of that; past it the inputs are refused (422), not checked for longer;
- one validation evaluates at most `MAX_KEYWORD_EVALUATIONS` keywords (nested `anyOf`/`$ref`
  can otherwise multiply), and `uniqueItems` and `enum` are linear: values are compared by a
  hashable canonical form with jsonschema's notion of equality (`1 == 1.0`, `true != 1`);
- `$ref` resolves inside the schema only: nothing is fetched;
- `unevaluatedProperties` is refused beside `patternProperties` in one schema (jsonschema
  evaluates those patterns in code that cannot be given another engine).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_PATTERN_PROGRAM = 2000  # RE2 program instructions in one pattern
# Program size times text length, summed over one validation's matches: RE2's slowest path
# (its NFA, when the DFA gives up) spends about 10 ns per unit, so about a third of a second.
MAX_MATCH_WORK = 1 << 25
MAX_KEYWORD_EVALUATIONS = 100_000
# What a reference costs beside a plain keyword: resolving it and descending take about ten
# times as long, and references are what lets a small schema evaluate a great many keywords.
_REFERENCE_COST = 10
_REFERENCES = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})
# The bytes RE2 may use for one pattern (its DFA cache included); the default is 8 MiB.
_RE2_MAX_MEM = 1 << 20


class SchemaRefused(ValueError):
    """A schema the service will not apply; `path` is the JSON path inside inputs_schema."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class InputsTooCostly(ValueError):
    """Checking these inputs against the schema would take more than one validation's share."""


# ---- regular expressions ------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    source: str
    program: Any  # a compiled re2 pattern
    size: int

    def search(self, text: str) -> bool:
        _work().match(self.size * (len(text) + 1))
        return self.program.search(text) is not None


@lru_cache(maxsize=256)
def compile_pattern(source: str) -> Pattern:
    """`source` compiled by RE2, or ValueError saying why it is refused."""
    import re2  # google-re2; imported here, off the cold-start path of requests without schemas

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.never_capture = True  # only "does it match" is asked: no submatch bookkeeping
    options.max_mem = _RE2_MAX_MEM
    try:
        program = re2.compile(source, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"not a regular expression this service runs (RE2 syntax): {reason}") from exc
    if program.programsize > MAX_PATTERN_PROGRAM:
        raise ValueError(
            f"the regular expression is too large ({program.programsize} RE2 instructions, "
            f"at most {MAX_PATTERN_PROGRAM}): use smaller repetition counts"
        )
    return Pattern(source, program, program.programsize)


# ---- the work one validation may do -------------------------------------------------------


@dataclass
class _Work:
    keywords: int = 0
    matching: int = 0
    enums: dict[int, tuple[Any, frozenset[Any]]] = field(default_factory=dict)

    def keyword(self, cost: int = 1) -> None:
        self.keywords += cost
        if self.keywords > MAX_KEYWORD_EVALUATIONS:
            raise InputsTooCostly(f"more than {MAX_KEYWORD_EVALUATIONS} keyword evaluations")

    def match(self, cost: int) -> None:
        self.matching += cost
        if self.matching > MAX_MATCH_WORK:
            raise InputsTooCostly(
                "the patterns would take too long on strings this long: "
                "send shorter strings or use simpler patterns"
            )


_WORK: contextvars.ContextVar[_Work | None] = contextvars.ContextVar("inputs_schema_work", default=None)


def _work() -> _Work:
    work = _WORK.get()
    if work is None:  # a keyword run outside `input_errors` (jsonschema's own helpers): bounded too
        work = _Work()
        _WORK.set(work)
    return work


@contextmanager
def _one_validation() -> Iterator[_Work]:
    work = _Work()
    token = _WORK.set(work)
    try:
        yield work
    finally:
        _WORK.reset(token)


def _canonical(value: Any) -> Any:
    """A hashable form of a JSON value, equal where jsonschema's `equal` says equal."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)  # 1 and 1.0 hash and compare alike, as jsonschema has them
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null",)
    if isinstance(value, Mapping):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_canonical(item) for item in value))
    return ("other", repr(value))


# ---- the keywords -------------------------------------------------------------------------


def _pattern(validator: Any, source: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if (
        validator.is_type(instance, "string")
        and isinstance(source, str)
        and not _compiled(source).search(instance)
    ):
        yield ValidationError(f"does not match the pattern {source!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for source, subschema in patterns.items():
        compiled = _compiled(source)
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=source)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's `additionalProperties`, its patterns matched by RE2."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_compiled(source) for source in schema.get("patternProperties", {})]
    extras = [
        key
        for key in instance
        if key not in properties and not any(pattern.search(key) for pattern in patterns)
    ]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        names = ", ".join(repr(each) for each in sorted(extras, key=str)[:10])
        more = f" and {len(extras) - 10} more" if len(extras) > 10 else ""
        yield ValidationError(f"additional properties are not allowed ({names}{more} unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError("has non-unique elements")
                return
            seen.add(key)


def _enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not isinstance(enums, list):
        return
    cache = _work().enums
    known = cache.get(id(enums))
    if known is None or known[0] is not enums:
        known = (enums, frozenset(_canonical(each) for each in enums))
        cache[id(enums)] = known
    if _canonical(instance) not in known[1]:
        shown = ", ".join(json.dumps(each)[:40] for each in enums[:10])
        yield ValidationError(f"is not one of {shown}{', ...' if len(enums) > 10 else ''}")


def _counted(function: Callable[..., Any], cost: int) -> Callable[..., Any]:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _work().keyword(cost)
        return function(validator, value, instance, schema)

    return keyword


_REPLACED: dict[str, Callable[..., Any]] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
    "enum": _enum,
}


def _compiled(source: str) -> Pattern:
    try:
        return compile_pattern(source)
    except ValueError as exc:  # a stored schema saved before patterns were checked
        raise InputsTooCostly(f"a pattern this service cannot run: {exc}") from exc


@lru_cache(maxsize=16)
def _bounded_class(base: Any) -> Any:
    from jsonschema import validators

    replaced = {
        name: _counted(_REPLACED.get(name, function), _REFERENCE_COST if name in _REFERENCES else 1)
        for name, function in base.VALIDATORS.items()
    }
    return validators.extend(base, replaced)


# ---- checking a schema and applying it ----------------------------------------------------


def schema_problems(schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Why the service will not apply `schema`, as (JSON path, message) pairs; [] if it will."""
    from jsonschema import validators
    from referencing import Registry

    base = validators.validator_for(schema)
    # The metaschema check is bounded like any other: draft 4's asks for unique `enum` items.
    # It runs without a format checker, so no pattern is compiled by Python's `re`.
    meta = _bounded_class(validators.validator_for(base.META_SCHEMA, default=base))
    with _one_validation():
        try:
            error = next(iter(meta(base.META_SCHEMA, registry=Registry()).iter_errors(schema)), None)
        except (InputsTooCostly, RecursionError) as exc:
            return [("", f"the schema is too costly to check: {exc}")]
    if error is not None:
        return [(_json_path(error.absolute_path), f"not a valid JSON Schema: {error.message}")]
    problems: list[tuple[str, str]] = []
    pattern_properties = unevaluated = ""
    for path, subschema in _subschemas(schema, base):
        source = subschema.get("pattern")
        if isinstance(source, str):
            problems += _pattern_problem(f"{path}.pattern", source)
        patterns = subschema.get("patternProperties")
        if isinstance(patterns, Mapping):
            pattern_properties = pattern_properties or f"{path}.patternProperties"
            for key in patterns:
                problems += _pattern_problem(f"{path}.patternProperties.{key}", str(key))
        if "unevaluatedProperties" in subschema:
            unevaluated = unevaluated or f"{path}.unevaluatedProperties"
    if pattern_properties and unevaluated:
        problems.append(
            (unevaluated, "unevaluatedProperties cannot be used with patternProperties in one schema")
        )
    return sorted(problems)


def _pattern_problem(path: str, source: str) -> list[tuple[str, str]]:
    try:
        compile_pattern(source)
    except ValueError as exc:
        return [(path, str(exc))]
    return []


def _subschemas(schema: Any, base: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every subschema of `schema` with its JSON path, as the schema's draft defines them.

    The draft's own vocabulary (referencing's `subresources_of`) says which values are schemas,
    so a `pattern` inside `enum` or `const` data is not taken for one.
    """
    from referencing.jsonschema import specification_with

    specification = specification_with(base.META_SCHEMA.get("$schema", ""))
    is_schema = {id(schema)}
    pending: list[tuple[str, Any]] = [("", schema)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, Mapping):
            if id(value) in is_schema:
                yield path, value
                for sub in specification.subresources_of(value):
                    is_schema.add(id(sub))
            pending += [(f"{path}.{key}", item) for key, item in value.items()]
        elif isinstance(value, list):
            pending += [(f"{path}[{index}]", item) for index, item in enumerate(value)]


@lru_cache(maxsize=64)
def _checked_validator(text: str) -> Any:
    """A bounded validator for the schema with this JSON text (SchemaRefused if refused)."""
    from referencing import Registry

    schema = json.loads(text)
    problems = schema_problems(schema)
    if problems:
        raise SchemaRefused(*problems[0])
    from jsonschema import validators

    base = validators.validator_for(schema)
    # An empty registry: `$ref` resolves inside the schema, and nothing is fetched.
    return _bounded_class(base)(schema, registry=Registry())


def input_errors(schema: Mapping[str, Any], inputs: Any) -> list[Any]:
    """jsonschema's errors for `inputs`, found with bounded work.

    SchemaRefused if the schema is one the service does not apply; InputsTooCostly if checking
    would take more than one validation's share.
    """
    from referencing.exceptions import Unresolvable

    validator = _checked_validator(json.dumps(schema, sort_keys=True))
    with _one_validation():
        try:
            return list(validator.iter_errors(inputs))
        except Unresolvable as exc:
            raise SchemaRefused("", f"a $ref that does not resolve inside the schema: {exc}") from exc
        except RecursionError as exc:
            raise InputsTooCostly("the schema recurses too deeply") from exc


def _json_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


__all__ = [
    "MAX_KEYWORD_EVALUATIONS",
    "MAX_MATCH_WORK",
    "MAX_PATTERN_PROGRAM",
    "InputsTooCostly",
    "SchemaRefused",
    "compile_pattern",
    "input_errors",
    "schema_problems",
]
