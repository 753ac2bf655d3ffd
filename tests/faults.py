"""Faults injected through the service's own seams, never into its private members.

- `Faulty` wraps a port (a fake or an adapter) or a boto3 client and injects a fault into the
  calls of one method: it raises before or after the call takes effect, drops the call, or runs
  a hook first (a barrier, another writer's action). A `Parts` gets it as the part it stands for
  (`Parts(..., parts={"queue": ...})`, `parts.give(queue=...)`) or as the client an adapter is
  built around (`Parts(..., dynamodb=...)`).
- `one_step_left` is the time left of an invocation with room for one step and not a second:
  an engine given it (`remaining_ms`) runs one step per kick, as it does for steps that call out.
- `registry_with` is the registry of the local step types and some of the test's own (a step
  type that raises, takes time or acts while it runs); `Meddling` is a step type doing what
  another does, with something else happening while it runs (another writer's action, an
  observer, the process killed after the call out).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: tests/conftest.py imports this module
    from pydantic import BaseModel

    from workflows.steps.base import StepContext, StepOutcome, StepType, TemplateField
    from workflows.steps.registry import StepRegistry


def one_step_left() -> int:
    """The time left (`remaining_ms`) of an invocation with room for one step and not a second:
    the engine runs a step after another only while more than twice its reserve is left."""
    from workflows.engine.advance import RESERVE_MS

    return 2 * RESERVE_MS


Action = Callable[..., object]
Fault = BaseException | Callable[[], BaseException]


@dataclass
class _Rule:
    action: Action | None  # None: the call is dropped
    after: bool
    skip: int
    times: int | None
    when: Callable[..., bool] | None
    used: int = 0

    def applies(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.when is not None and not self.when(*args, **kwargs):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.used += 1
        return True


class Faulty:
    """A port or a client whose calls go to `inner`, except where a rule says otherwise.

    Rules count the calls of their method from when they are added: `nth=3` acts on the third
    call, `times=None` on every call from then on until `heal`. `when` narrows a rule to the
    calls whose arguments it accepts. `calls` counts every call of each method, `faults` each
    call a rule acted on.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._rules: dict[str, list[_Rule]] = {}
        self._lock = threading.Lock()

    # ---- rules ---------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        fault: Fault,
        *,
        after: bool = False,
        nth: int = 1,
        times: int | None = 1,
        when: Callable[..., bool] | None = None,
    ) -> Faulty:
        """The call raises `fault`: before it takes effect, or `after` (its answer lost)."""

        def raise_fault(*args: object, **kwargs: object) -> None:
            raise fault if isinstance(fault, BaseException) else fault()

        return self._add(method, _Rule(raise_fault, after, nth - 1, times, when))

    def drop(
        self, method: str, *, nth: int = 1, times: int | None = 1, when: Callable[..., bool] | None = None
    ) -> Faulty:
        """The call does nothing and answers None, as a message lost on its way."""
        return self._add(method, _Rule(None, False, nth - 1, times, when))

    def hook(
        self,
        method: str,
        action: Action,
        *,
        after: bool = False,
        nth: int = 1,
        times: int | None = 1,
        when: Callable[..., bool] | None = None,
    ) -> Faulty:
        """`action(*args, **kwargs)` runs before the call (or after it), which then answers as
        usual; an action that raises is a fault of its own."""
        return self._add(method, _Rule(action, after, nth - 1, times, when))

    def heal(self, method: str | None = None) -> Faulty:
        """Remove the rules of `method` (of every method without one)."""
        with self._lock:
            if method is None:
                self._rules.clear()
            else:
                self._rules.pop(method, None)
        return self

    def _add(self, method: str, rule: _Rule) -> Faulty:
        getattr(self.inner, method)  # a method the wrapped object has
        with self._lock:
            self._rules.setdefault(method, []).append(rule)
        return self

    # ---- delegation ----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                rule = next((r for r in self._rules.get(name, ()) if r.applies(args, kwargs)), None)
                if rule is not None:
                    self.faults[name] += 1
            if rule is None:
                return attribute(*args, **kwargs)
            if rule.action is None:
                return None
            if not rule.after:
                rule.action(*args, **kwargs)
                return attribute(*args, **kwargs)
            result = attribute(*args, **kwargs)
            rule.action(*args, **kwargs)
            return result

        return call


def unwrapped(part: Any) -> Any:
    """The port or client inside any `Faulty` wrappers."""
    while isinstance(part, Faulty):
        part = part.inner
    return part


def registry_with(*step_types: StepType) -> StepRegistry:
    """The local step types and these (the types that call out are not built)."""
    from workflows.steps.registry import StepRegistry, local_step_types

    return StepRegistry([*local_step_types(), *step_types])


Hook = Callable[["StepContext"], object]


class Meddling:
    """A step type doing what `inner` does (it takes its name: registered in its place), with
    `before` run as it starts and `after` once it has done its work, before the engine records
    the result. Each hook runs once, on the first execution after it was set; one that raises
    stops the step there (a `BaseException` as a process that died)."""

    def __init__(self, inner: StepType, *, before: Hook | None = None, after: Hook | None = None) -> None:
        self.inner = inner
        self.before = before
        self.after = after
        self.name = inner.name
        self.description = inner.description
        self.config_model = inner.config_model
        self.example = inner.example
        self.min_engine_version = inner.min_engine_version
        self.delivery = inner.delivery
        self.inline = inner.inline
        self.route_fields = inner.route_fields
        self.rejectable = inner.rejectable

    def templates(self, config: BaseModel) -> list[TemplateField]:
        return self.inner.templates(config)

    def execute(self, config: BaseModel, context: StepContext) -> StepOutcome:
        before, self.before = self.before, None
        if before is not None:
            before(context)
        outcome = self.inner.execute(config, context)
        after, self.after = self.after, None
        if after is not None:
            after(context)
        return outcome
