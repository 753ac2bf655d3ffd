"""A `Parts` takes ready-made parts (`parts=`, `give`): the parts built from them use them, and a
name that is no part is refused rather than shadowing something."""

from __future__ import annotations

import pytest

from tests.conftest import FakeClock, log_definition, make_fake
from tests.fakes import FakeQueue
from tests.faults import Faulty
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, Principal
from workflows.roots.parts import Parts
from workflows.settings import Settings

CALLER = Principal("default", "admin", ALL_PERMISSIONS)


def test_a_given_part_is_the_one_the_parts_built_from_it_use(clock: FakeClock) -> None:
    parts = make_fake(clock)
    queue = Faulty(parts.queue)
    parts.give(queue=queue)
    parts.run_service.submit(CALLER, WorkflowDefinition.model_validate(log_definition("hi")), {})
    assert parts.queue is queue
    assert queue.calls["send"] == 1


def test_parts_given_to_the_constructor_are_used_as_they_are() -> None:
    queue = FakeQueue()
    parts = Parts(Settings(api_key="k" * 20), parts={"queue": queue})
    assert parts.queue is queue


@pytest.mark.parametrize("name", ["nonsense", "secret_value", "settings", "give"])
def test_a_name_that_is_no_part_is_refused(clock: FakeClock, name: str) -> None:
    parts = make_fake(clock)
    with pytest.raises(TypeError, match="no part named"):
        parts.give(**{name: object()})
    with pytest.raises(TypeError, match="no part named"):
        Parts(parts.settings, parts={name: object()})
