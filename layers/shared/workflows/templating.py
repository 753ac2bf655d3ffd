"""Sandboxed Jinja2 templating between steps, with hard limits enforced while rendering.

The context is `inputs`, `steps.<id>.output`, `last` (previous step's output), `run` (`id`,
`tenant_id`, `workflow_id`) and, where a step allows it, `secrets`. The immutable sandbox refuses
attribute tricks and mutation; StrictUndefined turns a typo into a clear step failure.

Templates are hostile input: `{{ 'a' * 10**9 }}` or `{{ 10**100000 }}` must fail before they
allocate, not after. Every operation that can make something large is checked first, through
the sandbox's own hooks (docs/steps.md, "Template limits"):

- `*`, `**`, `+`, `%` (intercepted binary operators): the size of the string, sequence or
  integer they would make;
- `~` (string concatenation, compiled to a checked call) and every value written out
  (`finalize`): the size of what is turned into text;
- calls (`environment.call`), including the allocating string methods (`center`, `ljust`,
  `rjust`, `zfill`, `expandtabs`, `replace`, `join`, `translate`, `format`, `format_map`) and
  the allocating filters (`center`, `indent`, `format`, `join`, `replace`, `wordwrap`, `batch`,
  `slice`, `sum`), whose width and count arguments are checked before they run;
- every `for` loop (its iterable is wrapped when the template is parsed), `range`, and the
  wall-clock time, checked at each of these points;
- every list, tuple and object a template makes (literals are compiled to a checked call, and
  whatever operators, calls and filters return is checked): its size as a walk of it goes, a
  part it holds twice counted twice (`MAX_VALUE_SIZE`). `==`, `in`, hashing, sorting and
  printing run as single C calls no clock can stop; bounding every value's walked size bounds
  each of them, where shared structure (`[a, a]` doubled forty times: kilobytes of memory, 2**40
  steps to compare) would otherwise hold the process for hours;
- the rendered output, counted while it is produced.

Everything a render makes is also charged to one allocation budget, so many moderate
allocations cannot add up to a large one. A template over any limit fails its step with
`template_limit_exceeded` (not retried: the same template fails the same way).

Values keep their JSON types (docs/steps.md, "Typed values"). `render` makes text: a string is
written as itself, anything else as one line of JSON (`{"a": 1}`, `[1, 2]`, `true`, `null`).
`render_value` serves structured fields (a webhook's body): a template that is exactly one
`{{ expression }}` gives the expression's value as plain JSON data, anything else is text as
`render` makes it. Both convert through one walk that counts the JSON text a value takes and
refuses it past the output limit before copying more of it; `tojson` uses the same walk.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, update_wrapper, wraps
from string import Formatter
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg

from workflows.domain.failures import StepFailed

# The limits (docs/steps.md, "Template limits").
MAX_RENDERED_CHARS = 256 * 1024  # one template's output
MAX_STRING_CHARS = 256 * 1024  # any string a template makes
MAX_SEQUENCE_ITEMS = 10_000  # any list or tuple a template makes; range() too
MAX_INT_BITS = 4096  # about 1,233 decimal digits
MAX_WIDTH = 10_000  # padding, width and precision arguments
MAX_LOOP_ITERATIONS = 100_000  # all loops of a step's renders together
MAX_ALLOCATED = 4 * 1024 * 1024  # characters and items made by a step's renders together
MAX_RENDER_SECONDS = 2.0  # a step's renders together
MAX_NESTING = 64  # levels of lists and objects in a value written out (as in request bodies)
# Any list, tuple or object a template makes, measured as a walk of it would go: a part it holds
# twice counts twice. Comparing, hashing, sorting or printing a value costs about this at most.
MAX_VALUE_SIZE = 4 * MAX_STRING_CHARS
# How deep the size of a value not seen before is measured before it is refused.
_MAX_MEASURED_DEPTH = 4 * MAX_NESTING
LIMIT_CODE = "template_limit_exceeded"


class TemplateLimitExceeded(SecurityError):
    """A template went over one of the limits above."""


# ---- the budget of one step's renders -----------------------------------------------------


@dataclass
class _Budget:
    seconds: float
    deadline: float
    iterations: int = MAX_LOOP_ITERATIONS
    allocated: int = 0
    # The measured size of each container seen, by id (holding the container keeps its id
    # unique): a value made of parts already measured is measured in one step per part.
    sizes: dict[int, tuple[Any, int]] = field(default_factory=dict)

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitExceeded(f"rendering took longer than {self.seconds:g} s")

    def charge(self, amount: int) -> None:
        self.allocated += amount
        if self.allocated > MAX_ALLOCATED:
            raise TemplateLimitExceeded(f"the template made more than {MAX_ALLOCATED} characters and items")

    def iterate(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise TemplateLimitExceeded(f"loops ran more than {MAX_LOOP_ITERATIONS} iterations")
        # Every iteration: one iteration's work is bounded (MAX_VALUE_SIZE), not small.
        self.tick()


_CURRENT: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


@contextmanager
def render_budget(seconds: float = MAX_RENDER_SECONDS) -> Iterator[None]:
    """One budget (time, loop iterations, allocations) shared by every render inside."""
    seconds = min(seconds, MAX_RENDER_SECONDS)
    token = _CURRENT.set(_Budget(seconds=seconds, deadline=time.monotonic() + seconds))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _budget() -> _Budget | None:
    return _CURRENT.get()


def _tick() -> None:
    budget = _CURRENT.get()
    if budget is not None:
        budget.tick()


def _charge(amount: int) -> None:
    budget = _CURRENT.get()
    if budget is not None:
        budget.charge(amount)


# ---- sizes --------------------------------------------------------------------------------


def weight(value: Any, limit: int = MAX_STRING_CHARS) -> int:
    """About how many characters `value` becomes as text, counted no further than `limit` + 1.

    Strings count their length, numbers their digits, containers their items plus punctuation,
    so `str(value)` of anything within the limit is bounded (a list of short strings prints up to
    about four times its weight).
    """
    budget = _budget()
    return _measured(value, limit, budget.sizes if budget is not None else {})


def _scalar_weight(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, float):
        return 24
    return 32


def _namespace_attrs(namespace: Namespace) -> dict[str, Any]:
    """A `namespace()`'s attributes (its repr prints them all, so they count as its size)."""
    attrs: dict[str, Any] = namespace._Namespace__attrs
    return attrs


def _refuse_text(value: Any, what: str, limit: int = MAX_STRING_CHARS) -> None:
    if weight(value, limit) > limit:
        raise TemplateLimitExceeded(f"{what} would be more than {limit} characters")


def _measured(value: Any, limit: int, sizes: dict[int, tuple[Any, int]], depth: int = 0) -> int:
    """`value`'s size as a walk of it goes (a part it holds twice counts twice), measured no
    further than `limit` + 1. Containers measured before count at once (`sizes`), so the size of
    a container made of known parts takes one step per part, however deep they are shared.

    Other mappings (`steps`, which reads outputs when asked) are not walked: a template cannot
    fill them, and their text is an object's name."""
    if not isinstance(value, (list, tuple, set, frozenset, dict, Namespace)):
        return _scalar_weight(value)
    known = sizes.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    if depth > _MAX_MEASURED_DEPTH:
        raise TemplateLimitExceeded(f"a value nested more than {_MAX_MEASURED_DEPTH} levels deep")
    if isinstance(value, (dict, Namespace)):
        entries = _namespace_attrs(value) if isinstance(value, Namespace) else value
        total = 2 + 4 * len(entries)
        parts: Iterable[Any] = (part for pair in entries.items() for part in pair)
    else:
        total = 2 + 2 * len(value)
        parts = value
    for part in parts:
        if total > limit:
            return total
        total += _measured(part, limit - total, sizes, depth + 1)
    # A namespace changes under `{% set ns.x = ... %}`: measured afresh each time.
    if total <= limit and not isinstance(value, Namespace):
        sizes[id(value)] = (value, total)
    return total


def _check_container(value: Any) -> None:
    """A list, tuple or object a template made: its walked size within MAX_VALUE_SIZE."""
    if len(value) > MAX_SEQUENCE_ITEMS:
        raise TemplateLimitExceeded(f"a sequence of more than {MAX_SEQUENCE_ITEMS} items")
    budget = _budget()
    sizes = budget.sizes if budget is not None else {}
    if _measured(value, MAX_VALUE_SIZE, sizes) > MAX_VALUE_SIZE:
        raise TemplateLimitExceeded(
            f"a value of more than {MAX_VALUE_SIZE} characters and items, counting a part "
            "it holds as often as it holds it"
        )
    _charge(len(value) + 1)


def _check_made(value: Any) -> Any:
    """A value an operation made: its size within the limits, charged to the budget."""
    if isinstance(value, (str, bytes)):
        if len(value) > MAX_STRING_CHARS:
            raise TemplateLimitExceeded(f"a string of more than {MAX_STRING_CHARS} characters")
        _charge(len(value))
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        _check_container(value)
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitExceeded(f"an integer of more than {MAX_INT_BITS} bits")
    return value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise TemplateLimitExceeded(f"{what} {width} is over {MAX_WIDTH}")


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(times, int) and isinstance(sequence, (str, bytes, list, tuple)):
        limit = MAX_STRING_CHARS if isinstance(sequence, (str, bytes)) else MAX_SEQUENCE_ITEMS
        if len(sequence) * max(times, 0) > limit:
            raise TemplateLimitExceeded(f"repeating would make more than {limit} characters or items")


def _check_power(base: Any, exponent: Any) -> None:
    powers = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if powers and exponent * base.bit_length() > MAX_INT_BITS * 2:
        raise TemplateLimitExceeded(f"the power would have more than {MAX_INT_BITS} bits")


# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
# str.format specs: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?$", re.DOTALL)


def _check_percent(template: str, args: Any) -> None:
    for match in _PERCENT_SPEC.finditer(template):
        for part in match.groups():
            if part == "*":
                raise TemplateLimitExceeded("'*' widths are not allowed in % formatting")
            if part is not None:
                _check_width(int(part), "a width or precision of")
    _refuse_text(args, "formatting")


class _LimitedFormatter(Formatter):
    """str.format through the sandbox's attribute rules, with widths and sizes checked."""

    def __init__(self, env: LimitedEnvironment) -> None:
        self._env = env

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        from _string import formatter_field_name_split  # the stdlib's own parser

        first, rest = formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = self._env.getattr(obj, key) if is_attr else self._env.getitem(obj, key)
        return obj, first

    def format_field(self, value: Any, format_spec: str) -> Any:
        match = _FORMAT_SPEC.match(format_spec)
        if match is None:
            raise TemplateLimitExceeded(f"unsupported format spec {format_spec[:32]!r}")
        for part in match.groups():
            if part:
                _check_width(int(part), "a width or precision of")
        _refuse_text(value, "formatting")
        _tick()
        return _check_made(super().format_field(value, format_spec))


# ---- checked string methods and filters ---------------------------------------------------


def _checked_method(value: Any) -> Callable[..., Any] | None:
    """A checked stand-in for an allocating method of a string, or None."""
    owner = getattr(value, "__self__", None)
    name = getattr(value, "__name__", "")
    if not isinstance(owner, (str, bytes)) or name not in _STRING_METHOD_CHECKS:
        return None
    check = _STRING_METHOD_CHECKS[name]

    def method(*args: Any, **kwargs: Any) -> Any:
        check(owner, *args, **kwargs)
        return _check_made(value(*args, **kwargs))

    return update_wrapper(method, value)


def _pad_check(text: Any, width: Any = 0, *_: Any, **__: Any) -> None:
    _check_width(width, "a width of")


def _expandtabs_check(text: Any, tabsize: Any = 8, **_: Any) -> None:
    if (
        isinstance(tabsize, int)
        and len(text) + text.count("\t" if isinstance(text, str) else b"\t") * max(tabsize, 0)
        > MAX_STRING_CHARS
    ):
        raise TemplateLimitExceeded(f"expanding tabs would make more than {MAX_STRING_CHARS} characters")


def _replace_check(text: Any, old: Any = "", new: Any = "", count: Any = -1, **_: Any) -> None:
    if not isinstance(old, (str, bytes)) or not isinstance(new, (str, bytes)):
        return
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    if len(text) + found * max(0, len(new) - len(old)) > MAX_STRING_CHARS:
        raise TemplateLimitExceeded(f"replacing would make more than {MAX_STRING_CHARS} characters")


def _join_check(separator: Any, items: Any = (), *_: Any, **__: Any) -> None:
    if isinstance(items, (list, tuple)) and len(separator) * len(items) + weight(items) > MAX_STRING_CHARS:
        raise TemplateLimitExceeded(f"joining would make more than {MAX_STRING_CHARS} characters")


def _translate_check(text: Any, table: Any = None, *_: Any, **__: Any) -> None:
    if isinstance(table, Mapping):
        longest = max((_size(v) for v in table.values()), default=1)
        if len(text) * max(longest, 1) > MAX_STRING_CHARS:
            raise TemplateLimitExceeded(f"translating would make more than {MAX_STRING_CHARS} characters")


_STRING_METHOD_CHECKS: dict[str, Callable[..., None]] = {
    "center": _pad_check,
    "ljust": _pad_check,
    "rjust": _pad_check,
    "zfill": _pad_check,
    "expandtabs": _expandtabs_check,
    "replace": _replace_check,
    "join": _join_check,
    "translate": _translate_check,
}


def _materialise(value: Any) -> Any:
    """Iterables (map, select, generators) as a list of at most MAX_SEQUENCE_ITEMS items."""
    if isinstance(value, (str, bytes, list, tuple, Mapping)):
        return value
    items = []
    for item in value:
        items.append(item)
        if len(items) > MAX_SEQUENCE_ITEMS:
            raise TemplateLimitExceeded(f"a sequence of more than {MAX_SEQUENCE_ITEMS} items")
    return items


def _filter_checks() -> dict[str, Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Checks run before a filter, by name; each may return the arguments it materialised."""

    def center(value: Any, width: Any = 80) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _check_width(width, "a width of")
        return (value, width), {}

    def indent(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
        lines = str(value).count("\n") + 1 if isinstance(value, str) else 1
        step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        _check_width(step, "an indent of")
        if _size(value) + lines * step > MAX_STRING_CHARS:
            raise TemplateLimitExceeded(f"indenting would make more than {MAX_STRING_CHARS} characters")
        return (value, width, first, blank), {}

    def fmt(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_percent(str(value) if isinstance(value, str) else "", kwargs or args)
        return (value, *args), kwargs

    def join(value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = _materialise(value)
        if isinstance(items, (list, tuple)):
            _join_check(d if isinstance(d, str) else "", list(items))
        return (items, d, attribute), {}

    def replace(value: Any, old: Any, new: Any, count: Any = None) -> Any:
        if isinstance(value, str):
            _replace_check(value, old, new, -1 if count is None else count)
        return (value, old, new, count), {}

    def wordwrap(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> Any:
        wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
        if isinstance(width, int) and isinstance(value, str):
            lines = len(value) // max(width, 1) + value.count("\n") + 1
            if len(value) + lines * _size(wrapstring) > MAX_STRING_CHARS:
                raise TemplateLimitExceeded(f"wrapping would make more than {MAX_STRING_CHARS} characters")
        return (value, width, *args), kwargs

    def counted(name: str) -> Callable[..., Any]:
        def check(value: Any, count: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(count, int) and count > MAX_SEQUENCE_ITEMS:
                raise TemplateLimitExceeded(f"{name}({count}) is over {MAX_SEQUENCE_ITEMS}")
            return (value, count, *args), kwargs

        return check

    def sum_(value: Any, attribute: Any = None, start: Any = 0) -> Any:
        items = _materialise(value)
        if not isinstance(start, (int, float)) or any(
            not isinstance(item, (int, float)) for item in items if attribute is None
        ):
            raise TemplateLimitExceeded("sum adds numbers only")
        return (items, attribute, start), {}

    return {
        "center": center,
        "indent": indent,
        "format": fmt,
        "join": join,
        "replace": replace,
        "wordwrap": wordwrap,
        "batch": counted("batch"),
        "slice": counted("slice"),
        "sum": sum_,
    }


def _guard_filter(name: str, function: Callable[..., Any], check: Callable[..., Any] | None) -> Any:
    """`function` with the time checked, its input's text size bounded, `check` run first, and its
    result checked and charged."""
    passes = _PassArg.from_obj(function)

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        lead, rest = (args[:1], args[1:]) if passes is not None else ((), args)
        if rest:
            _refuse_text(rest[0], f"the input of '{name}'", MAX_STRING_CHARS * 4)
        if check is not None and rest:
            checked_args, checked_kwargs = check(*rest, **kwargs)
            rest, kwargs = checked_args, checked_kwargs
        return _check_made(function(*lead, *rest, **kwargs))

    return guarded


def _loop(iterable: Any) -> Iterator[Any]:
    """Every `for` loop's iterable (wrapped at parse time): each iteration is counted."""
    budget = _budget()
    for item in iterable:
        if budget is not None:
            budget.iterate()
        yield item


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_SEQUENCE_ITEMS:
        raise TemplateLimitExceeded(f"range of more than {MAX_SEQUENCE_ITEMS} numbers")
    return numbers


# ---- values as JSON ------------------------------------------------------------------------

# What becomes a JSON array: sequences, and the iterators filters return (`map`, `select`,
# `reverse`, `items`, ...). A `loop` is an iterator too, but iterating it would move the loop on.
_ARRAYS = (list, tuple, range, set, frozenset, KeysView, ValuesView, ItemsView, Iterator)


class _JsonValue:
    """A template value as plain JSON data (dict, list, str, int, float, bool, None).

    The walk counts the characters the value's JSON text takes (about: escapes are not counted)
    and refuses it once that passes `limit`, so a large value is refused before it is copied or
    serialised. Containers are counted by their length first, before their items are visited.
    `finite` refuses NaN and infinities (JSON has no such numbers); text may print them.
    """

    def __init__(self, limit: int, *, indent: int = 0, finite: bool = True) -> None:
        self.limit = limit
        self.indent = indent
        self.finite = finite
        self.size = 0

    def _count(self, amount: int) -> None:
        self.size += amount
        if self.size > self.limit:
            raise TemplateLimitExceeded(f"the value's JSON would be more than {self.limit} characters")

    def convert(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_NESTING:
            raise TemplateLimitExceeded(f"a value nested more than {MAX_NESTING} levels deep")
        if isinstance(value, Undefined):
            text = str(value)  # StrictUndefined: raises the error naming what is undefined
        elif isinstance(value, str):
            self._count(len(value) + 2)
            return str(value)
        elif value is None or isinstance(value, bool):
            self._count(5)
            return value
        elif isinstance(value, int):
            self._count(value.bit_length() // 3 + 2)
            return int(value)
        elif isinstance(value, float):
            if self.finite and not math.isfinite(value):
                raise TemplateRuntimeError(f"{value} is not a number JSON can hold")
            self._count(24)
            return float(value)
        elif isinstance(value, (Mapping, Namespace)):
            entries = _namespace_attrs(value) if isinstance(value, Namespace) else value
            self._count(2 + len(entries) * (4 + self.indent * (depth + 1)))
            return {self._key(key): self.convert(item, depth + 1) for key, item in entries.items()}
        elif isinstance(value, _ARRAYS) and not isinstance(value, LoopContext):
            items = _materialise(value)
            if isinstance(value, (set, frozenset)):
                items = _sorted(items)
            self._count(2 + len(items) * (2 + self.indent * (depth + 1)))
            return [self.convert(item, depth + 1) for item in items]
        else:
            text = str(value)  # a macro, a cycler, ...: its text, as before
        self._count(len(text) + 2)
        return text

    def _key(self, key: Any) -> str:
        """JSON's object keys are strings: numbers, booleans and null as their JSON text."""
        if isinstance(key, str):
            text = str(key)
        elif key is None or isinstance(key, (bool, int, float)):
            text = json.dumps(key)
        else:
            text = str(key)
        self._count(len(text))
        return text


def _sorted(items: list[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return items


def _dumps(plain: Any, limit: int, indent: int | None = None, *, finite: bool = True) -> str:
    text = json.dumps(plain, ensure_ascii=False, allow_nan=not finite, indent=indent)
    if len(text) > limit:  # escapes (`\n`, `\u0000`) can make it longer than counted
        raise TemplateLimitExceeded(f"the value's JSON would be more than {limit} characters")
    return text


def _as_text(value: Any) -> Any:
    """How a value is written into text: a string as itself, anything else as one line of JSON."""
    if isinstance(value, str):
        _refuse_text(value, "an output value", MAX_RENDERED_CHARS)
        return value
    if isinstance(value, Undefined):
        return value  # written out with str(), which raises the undefined error
    converter = _JsonValue(MAX_RENDERED_CHARS, finite=False)
    plain = converter.convert(value)
    if isinstance(plain, str):  # an object with no JSON form: its text, unquoted, as before
        return plain
    return _check_made(_dumps(plain, MAX_RENDERED_CHARS, finite=False))


def _as_value(value: Any) -> Any:
    """A single expression's value for a structured field: plain JSON data, within the output
    limit, charged to the budget."""
    if isinstance(value, str):
        _refuse_text(value, "an output value", MAX_RENDERED_CHARS)
        return str(value)
    converter = _JsonValue(MAX_RENDERED_CHARS)
    plain = converter.convert(value)
    _charge(converter.size)
    return plain


def _tojson(value: Any, indent: int | None = None) -> str:
    """The `tojson` filter: plain JSON, as `render` writes values (no HTML escaping, keys in
    their order), within the limit of any string a template makes."""
    if indent is not None and (not isinstance(indent, int) or isinstance(indent, bool) or indent < 0):
        raise TypeError("tojson's indent must be a whole number of spaces")
    converter = _JsonValue(MAX_STRING_CHARS, indent=indent or 0)
    return _dumps(converter.convert(value), MAX_STRING_CHARS, indent)


# ---- the environment ----------------------------------------------------------------------


class _CheckedConcat(CodeGenerator):
    """Compiles `a ~ b` to `environment.checked_concat(...)`, which checks the size first, and
    list, tuple and object literals to `environment.checked_literal(...)`, which measures what
    they hold: `[a, a]` is as large as a walk of it, twice `a`'s size."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.checked_literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.checked_literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an unpacking target (`{% for k, v in ... %}`), not a value
            super().visit_Tuple(node, frame)
            return
        self.write("environment.checked_literal(")
        super().visit_Tuple(node, frame)
        self.write(")")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CheckedConcat

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, finalize=self._finalize)
        self.globals.pop("lipsum", None)  # makes up to n paragraphs of text: nothing a workflow needs
        self.globals["range"] = _range
        checks = _filter_checks()
        # Jinja's own tojson escapes for HTML; templates here make JSON for machines.
        filters: dict[str, Callable[..., Any]] = {**self.filters, "tojson": _tojson}
        self.filters = {
            name: _guard_filter(name, function, checks.get(name)) for name, function in filters.items()
        }
        self.filters["_loop"] = _loop

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):
            loop.iter = nodes.Filter(loop.iter, "_loop", [], [], None, None, lineno=loop.lineno)
        return tree

    @staticmethod
    def _finalize(value: Any) -> Any:
        return _as_text(value)

    @staticmethod
    def checked_literal(value: Any) -> Any:
        _check_container(value)
        return value

    @staticmethod
    def checked_concat(parts: tuple[Any, ...]) -> str:
        _refuse_text(parts, "the joined text")
        return str(_check_made("".join(str(part) for part in parts)))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise TemplateLimitExceeded(f"the product would have more than {MAX_INT_BITS} bits")
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                limit = MAX_STRING_CHARS if isinstance(left, (str, bytes)) else MAX_SEQUENCE_ITEMS
                if len(left) + len(right) > limit:
                    raise TemplateLimitExceeded(f"adding would make more than {limit} characters or items")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        try:
            result = super().call_binop(context, operator, left, right)
        except OverflowError as exc:
            raise TemplateLimitExceeded(f"a number out of range: {exc}") from exc
        return _check_made(result)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        return _check_made(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        checked = _checked_method(value)
        if checked is not None:
            return checked
        name = getattr(value, "__name__", "")
        owner = getattr(value, "__self__", None)
        if name not in ("format", "format_map") or not isinstance(owner, str):
            return None
        formatter = _LimitedFormatter(self)
        owner_type = type(owner)

        def format_(*args: Any, **kwargs: Any) -> str:
            if name == "format_map":
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                return owner_type(_check_made(formatter.vformat(owner, (), args[0])))
            return owner_type(_check_made(formatter.vformat(owner, args, kwargs)))

        return update_wrapper(format_, value)


@lru_cache(maxsize=1)
def environment() -> LimitedEnvironment:
    return LimitedEnvironment()


@lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    return environment().from_string(source)


@lru_cache(maxsize=512)
def _compiled_expression(source: str) -> Any:
    return environment().compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=512)
def _single_expression(source: str) -> TemplateExpression | None:
    """`source` compiled to give its expression's value when it is exactly one `{{ expression }}`
    (whitespace around it allowed), else None: text around it, several, a `{% %}` tag."""
    env = environment()
    try:
        tree = env.parse(source)
    except TemplateError:
        return None  # rendered as text, which reports the error
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [
        node
        for node in tree.body[0].nodes
        if not (isinstance(node, nodes.TemplateData) and not node.data.strip())
    ]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    # As Environment.compile_expression builds it, from the parsed expression.
    body = [nodes.Assign(nodes.Name("result", "store"), parts[0], lineno=parts[0].lineno)]
    return TemplateExpression(env.from_string(nodes.Template(body, lineno=1)), undefined_to_none=False)


# ---- the API the steps use ----------------------------------------------------------------


@contextmanager
def _failures(what: str) -> Iterator[None]:
    """Every way a render can fail, as a step failure."""
    try:
        yield
    except TemplateLimitExceeded as exc:
        raise StepFailed(LIMIT_CODE, f"template limit exceeded: {exc}", retryable=False) from exc
    except (RecursionError, MemoryError, OverflowError) as exc:
        raise StepFailed(
            LIMIT_CODE, f"template limit exceeded: {type(exc).__name__}", retryable=False
        ) from exc
    except TemplateError as exc:
        raise StepFailed("template_error", f"{what}: {exc}") from exc
    except StepFailed:
        raise
    except Exception as exc:
        raise StepFailed("template_error", f"{what}: {type(exc).__name__}: {exc}") from exc


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render a template within the current budget (a budget of its own outside one)."""
    if _budget() is None:
        with render_budget():
            return render(template, context)
    budget = _budget()
    assert budget is not None
    with _failures("template could not be rendered"):
        parts: list[str] = []
        size = 0
        for chunk in _compiled(template).generate(**context):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise TemplateLimitExceeded(f"the output would be more than {MAX_RENDERED_CHARS} characters")
            budget.tick()
            parts.append(chunk)
        return "".join(parts)
    raise AssertionError("unreachable")  # pragma: no cover - _failures always raises or returns


def render_value(template: str, context: Mapping[str, Any]) -> Any:
    """A structured field's template (docs/steps.md, "Typed values"): exactly one
    `{{ expression }}` gives the expression's value as plain JSON data (object, list, number,
    boolean, null or string); any other template renders to text as `render` does."""
    if _budget() is None:
        with render_budget():
            return render_value(template, context)
    with _failures("template could not be rendered"):
        expression = _single_expression(template)
    if expression is None:
        return render(template, context)
    budget = _budget()
    assert budget is not None
    with _failures("template could not be rendered"):
        value = expression(**context)
        budget.tick()
        return _as_value(value)
    raise AssertionError("unreachable")  # pragma: no cover - _failures always raises or returns


def render_values(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON value with every string in it rendered by `render_value` (typed values)."""
    if isinstance(value, str):
        return render_value(value, context)
    if isinstance(value, list):
        return [render_values(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_values(item, context) for key, item in value.items()}
    return value


def is_single_expression(template: str) -> bool:
    """Whether `render_value` keeps this template's value (it is exactly one `{{ expression }}`)."""
    return _single_expression(template) is not None


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """A condition: a bare expression is evaluated; a `{{ ... }}` template is rendered."""
    if "{{" in source or "{%" in source:
        return render(source, context)
    if _budget() is None:
        with render_budget():
            return evaluate(source, context)
    with _failures("condition could not be evaluated"):
        return _compiled_expression(source)(**context)
    raise AssertionError("unreachable")  # pragma: no cover


def syntax_error(source: str, *, expression: bool = False) -> str | None:
    """Why `source` is not a valid template (or bare expression), or None if it is."""
    try:
        if expression and "{{" not in source and "{%" not in source:
            _compiled_expression(source)
        else:
            environment().parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    except TemplateError as exc:
        return str(exc)
    return None


def variables(source: str) -> set[str]:
    """The top-level names a template reads (`inputs`, `steps`, `secrets`, ...)."""
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(environment().parse(source)))
    except TemplateError:
        return set()


def strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """Every string inside a JSON value, with its path (`body.items[0].name`)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")


__all__ = [
    "LIMIT_CODE",
    "MAX_RENDERED_CHARS",
    "TemplateLimitExceeded",
    "evaluate",
    "is_single_expression",
    "render",
    "render_budget",
    "render_value",
    "render_values",
    "strings",
    "syntax_error",
    "variables",
]
