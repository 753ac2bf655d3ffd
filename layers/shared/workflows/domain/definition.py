"""Workflow definitions: steps, routing and retry policy, validated before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

END = "_end"
STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(
        default=1, ge=1, le=20, description="Attempts in all, the first included (1: never retried)"
    )
    initial_interval_seconds: float = Field(
        default=1.0, ge=0, le=3600, description="Longest wait before the second attempt"
    )
    backoff_rate: float = Field(
        default=2.0,
        ge=1.0,
        le=10.0,
        description="Each later wait's longest is this many times the one before",
    )
    max_interval_seconds: float = Field(
        default=300.0, ge=0, le=86400, description="No wait is longer than this"
    )
    jitter: Literal["full", "none"] = Field(
        default="full",
        description="`full`: each wait is a random fraction of its longest; `none`: exactly the longest",
    )
    non_retryable_errors: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Failure codes never retried (permanent failures never are, whatever this says)",
    )


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=STEP_ID_PATTERN,
        description="Unique in the definition: routing names it, templates read `steps.<id>.output`",
    )
    type: str = Field(
        min_length=1, max_length=64, description="A step type below (`wait_for_approval` names `approval`)"
    )
    name: str | None = Field(default=None, max_length=200, description="A label for people")
    config: dict[str, Any] = Field(default_factory=dict, description="The step type's fields, below")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="When a failure is tried again")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=900,
        description="Time budget of one attempt, 60 s when unset (less when the function has less time"
        " left): a call out (webhook, prompt, rag_search) gives up at it with a timeout failure, and"
        " template rendering gets at most 2 s of it",
    )
    on_success: str | None = Field(
        default=None,
        description="Step id, or `_end`, to go to when the step succeeds; unset: the next step in the"
        " list (after the last, the run succeeds)",
    )
    on_failure: str | None = Field(
        default=None,
        description="Step id, or `_end`, to go to when the step has failed (after its retries), with"
        " its error as its output (`steps.<id>.output.error`); unset: the run fails",
    )
    on_timeout: str | None = Field(
        default=None,
        description="Step id, or `_end`, to go to when the step has timed out (a `timeout` or"
        " `*_timeout` failure); unset: `on_failure`",
    )


class WorkflowDefinition(BaseModel):
    """The executable part of a definition; a run pins a snapshot of it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    version: int = Field(default=1, ge=1)
    description: str | None = Field(default=None, max_length=4000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    inputs_schema: dict[str, Any] | None = None
    steps: list[StepSpec] = Field(min_length=1)
    on_completion_webhook: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _tags_are_short(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not 0 < len(tag) <= 128:
                raise ValueError("each tag must be 1 to 128 characters")
        return tags

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def first_step_id(self) -> str:
        return self.steps[0].id

    def next_after_success(self, step_id: str) -> str | None:
        """Where a step goes when it succeeds: its `on_success`, else the next in the list."""
        step = self.step(step_id)
        if step.on_success is not None:
            return None if step.on_success == END else step.on_success
        index = [s.id for s in self.steps].index(step_id)
        return self.steps[index + 1].id if index + 1 < len(self.steps) else None

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class StepRouting:
    """Where a step's type may send a run besides the step's own `on_*` fields (each step type
    says it: `route_fields` and `rejectable` in steps.base.StepType)."""

    # Config fields naming where a success goes (a branch's `true_next`, `false_next`); when
    # there are any, the step's `on_success` is not consulted.
    fields: tuple[str, ...] = ()
    # A person may reject the step (approval): without an `on_failure`, the rejection ends the run.
    rejectable: bool = False


def endless_loops(
    definition: WorkflowDefinition, routing: Callable[[str], StepRouting]
) -> list[dict[str, str]]:
    """Loops no run can ever leave, each named by one of its steps.

    A step's routes are where a run may go after it: on success its `on_success` (else the next
    step, or `_end` after the last), or, for a type with route fields (`routing(type)` asks the
    step type: a branch), the targets those fields of its config name; on failure its
    `on_failure` and `on_timeout`; and, for a type a person may reject (approval) without an
    `on_failure`, the end of the run. A loop is endless when every route of every step in it
    stays inside it (a strongly connected group of steps with no route out): it runs until the
    per-run step guard fails it, so it is refused.
    A loop with any way out (a branch with one target outside, a failure routed out, `_end`)
    stays allowed. A step that fails with no `on_failure` ends the run, but that is an accident,
    not a way out. Routes to unknown steps count as ways out here (they are reported elsewhere).
    """
    steps = definition.steps
    index = {step.id: i for i, step in enumerate(steps)}

    def routes(i: int) -> list[int | None]:
        """Each route of step i: the index it leads to, None for one that leaves every loop."""
        step = steps[i]
        kind = routing(step.type)
        targets: list[object]
        if kind.fields:
            targets = [step.config.get(name) for name in kind.fields]
        elif step.on_success is not None:
            targets = [step.on_success]
        else:
            targets = [steps[i + 1].id if i + 1 < len(steps) else END]
        targets += [target for target in (step.on_failure, step.on_timeout) if target is not None]
        if kind.rejectable and step.on_failure is None:
            targets.append(END)  # a rejection ends the run
        return [index.get(target) if isinstance(target, str) else None for target in targets]

    edges = [routes(i) for i in range(len(steps))]
    # Strongly connected groups by mutual reachability: at most `max_steps` (50) steps, so a
    # search from every step is cheap, and plainer than Tarjan's algorithm.
    reach = [_reachable(i, edges) for i in range(len(steps))]
    errors: list[dict[str, str]] = []
    reported: set[int] = set()
    for i in range(len(steps)):
        if i in reported or i not in reach[i]:
            continue  # already named, or on no loop
        group = {j for j in reach[i] if i in reach[j]}
        reported |= group
        if all(target is not None and target in group for j in group for target in edges[j]):
            names = " -> ".join(steps[j].id for j in _cycle_through(i, group, edges))
            errors.append(
                {
                    "field": f"steps[{i}]",
                    "message": f"steps {names} loop forever: no route leaves the loop (a branch"
                    " target, on_failure or on_timeout outside it, or _end)",
                }
            )
    return errors


def _reachable(start: int, edges: list[list[int | None]]) -> set[int]:
    """The steps some route leads to from `start` (itself only when it is on a loop)."""
    seen: set[int] = set()
    pending = [target for target in edges[start] if target is not None]
    while pending:
        node = pending.pop()
        if node not in seen:
            seen.add(node)
            pending += [target for target in edges[node] if target is not None]
    return seen


def _cycle_through(start: int, group: set[int], edges: list[list[int | None]]) -> list[int]:
    """A shortest walk from `start` back to itself inside `group` (both ends included)."""
    came_from: dict[int, int] = {}
    frontier = [start]
    while frontier:
        following: list[int] = []
        for node in frontier:
            for target in edges[node]:
                if target == start:
                    walk = [start, node]
                    while walk[-1] != start:
                        walk.append(came_from[walk[-1]])
                    return walk[::-1]
                if target is not None and target in group and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError("a step of a strongly connected group is on a loop")


def routing_errors(definition: WorkflowDefinition) -> list[dict[str, str]]:
    """Duplicate step ids and routing targets that do not exist, each naming its field."""
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, step in enumerate(definition.steps):
        if step.id in seen:
            errors.append({"field": f"steps[{index}].id", "message": f"duplicate step id '{step.id}'"})
        seen.add(step.id)
    for index, step in enumerate(definition.steps):
        for field in ("on_success", "on_failure", "on_timeout"):
            target = getattr(step, field)
            if target is not None and target != END and target not in seen:
                errors.append(
                    {
                        "field": f"steps[{index}].{field}",
                        "message": f"step '{step.id}' routes to unknown step '{target}'",
                    }
                )
    return errors
