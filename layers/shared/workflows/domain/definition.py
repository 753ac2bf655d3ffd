"""Workflow definitions: steps, routing and retry policy, validated before anything is stored."""

from __future__ import annotations

import json
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


def endless_loops(definition: WorkflowDefinition, exits: frozenset[str]) -> list[dict[str, str]]:
    """Cycles made only of unconditional routing: nothing on them can ever leave.

    A step can leave a cycle when its type decides where to go or waits for a person (`exits`:
    branch, approval), or when it routes failures elsewhere (`on_failure`, `on_timeout`). A
    cycle of other steps runs until the per-run step guard fails it, so it is refused; loops
    through a branch stay allowed.
    """
    index = {step.id: i for i, step in enumerate(definition.steps)}

    def successor(i: int) -> int | None:
        step = definition.steps[i]
        if step.type in exits or step.on_failure is not None or step.on_timeout is not None:
            return None  # a way out
        if step.on_success is not None:
            return index.get(step.on_success)  # None for _end (or an unknown id, reported elsewhere)
        return i + 1 if i + 1 < len(definition.steps) else None

    errors: list[dict[str, str]] = []
    state = [0] * len(definition.steps)  # 0 unseen, 1 on the current walk, 2 done
    for start in range(len(definition.steps)):
        walk: list[int] = []
        node: int | None = start
        while node is not None and state[node] == 0:
            state[node] = 1
            walk.append(node)
            node = successor(node)
        if node is not None and state[node] == 1:
            cycle = walk[walk.index(node) :]
            names = " -> ".join(definition.steps[i].id for i in [*cycle, cycle[0]])
            errors.append(
                {
                    "field": f"steps[{cycle[0]}]",
                    "message": f"steps {names} loop forever: no branch, approval or on_failure exit",
                }
            )
        for i in walk:
            state[i] = 2
    return errors


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
