"""The step registry: every type known by name, the configured ones built on first lookup."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from workflows.steps.log import LogStep
from workflows.steps.registry import StepRegistry


@dataclass
class FakeStep:
    name: str


class Factories:
    def __init__(self) -> None:
        self.built: list[str] = []

    def fake(self) -> FakeStep:
        self.built.append("fake")
        return FakeStep("fake")

    def broken(self) -> FakeStep:
        raise KeyError("a missing setting")


@pytest.fixture
def factories() -> Factories:
    return Factories()


@pytest.fixture
def registry(factories: Factories) -> StepRegistry:
    return StepRegistry([LogStep()], {"fake": factories.fake, "broken": factories.broken})  # type: ignore[dict-item]


def test_names_are_known_without_building_anything(registry: StepRegistry, factories: Factories) -> None:
    assert registry.names() == ["broken", "fake", "log"]
    assert factories.built == []


def test_a_configured_type_is_built_once(registry: StepRegistry, factories: Factories) -> None:
    first = registry.get("fake")
    assert isinstance(first, FakeStep)
    assert registry.get("fake") is first
    assert factories.built == ["fake"]


def test_aliases_name_the_canonical_type(registry: StepRegistry) -> None:
    local = StepRegistry([LogStep()])
    assert local.get("log") is not None
    assert registry.get("wait_for_approval") is None  # approval is not in this registry


def test_unknown_names_are_none_but_a_failing_factory_is_not_hidden(registry: StepRegistry) -> None:
    assert registry.get("nope") is None
    with pytest.raises(KeyError, match="a missing setting"):
        registry.get("broken")
