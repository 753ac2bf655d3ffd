"""The step registry: every type known by name, the configured ones built on first lookup."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from workflows.steps.log import LogStep
from workflows.steps.registry import StepRegistry

BUILT: list[Any] = []


@dataclass
class FakeStep:
    name: str
    built_from: Any


def build_fake(dependencies: Any) -> FakeStep:
    BUILT.append(dependencies)
    return FakeStep("fake", dependencies)


def build_broken(dependencies: Any) -> FakeStep:
    raise KeyError("a missing setting")


@pytest.fixture
def registry() -> StepRegistry:
    BUILT.clear()
    reg = StepRegistry(
        [LogStep()],
        {"fake": f"{__name__}:build_fake", "broken": f"{__name__}:build_broken"},
    )
    reg.configure(SimpleNamespace(name="first"))
    return reg


def test_names_are_known_without_building_anything(registry: StepRegistry) -> None:
    assert sorted(registry) == ["broken", "fake", "log"]
    assert len(registry) == 3
    assert "fake" in registry
    assert "nope" not in registry
    assert BUILT == []


def test_a_configured_type_is_built_once_from_the_configured_dependencies(registry: StepRegistry) -> None:
    first = registry["fake"]
    assert registry.get("fake") is first
    assert isinstance(first, FakeStep)
    assert first.built_from.name == "first"
    assert len(BUILT) == 1


def test_configure_rebuilds_from_the_new_dependencies(registry: StepRegistry) -> None:
    registry["fake"]
    registry.configure(SimpleNamespace(name="second"))
    rebuilt = registry["fake"]
    assert isinstance(rebuilt, FakeStep)
    assert rebuilt.built_from.name == "second"


def test_a_registered_type_replaces_the_configured_one_until_the_next_configure(
    registry: StepRegistry,
) -> None:
    replacement = FakeStep("fake", "by hand")
    registry.register(replacement)
    assert registry["fake"] is replacement
    registry.configure(SimpleNamespace(name="third"))
    assert registry["fake"] is not replacement


def test_unknown_names_are_none_but_a_failing_factory_is_not_hidden(registry: StepRegistry) -> None:
    assert registry.get("nope") is None
    with pytest.raises(KeyError):
        registry["nope"]
    with pytest.raises(KeyError, match="a missing setting"):
        registry.get("broken")
