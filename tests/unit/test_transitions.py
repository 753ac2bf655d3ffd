"""Every allowed and every forbidden transition of the run state machine."""

from __future__ import annotations

import itertools

import pytest

from workflows.domain.run import TERMINAL, TRANSITIONS, RunStatus, check_transition
from workflows.errors import InvalidState

ALLOWED = {
    (RunStatus.QUEUED, RunStatus.RUNNING),
    (RunStatus.QUEUED, RunStatus.PAUSED),
    (RunStatus.QUEUED, RunStatus.CANCELLED),
    (RunStatus.QUEUED, RunStatus.FAILED),
    (RunStatus.RUNNING, RunStatus.PAUSED),
    (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL),
    (RunStatus.RUNNING, RunStatus.SUCCEEDED),
    (RunStatus.RUNNING, RunStatus.FAILED),
    (RunStatus.RUNNING, RunStatus.CANCELLED),
    (RunStatus.PAUSED, RunStatus.RUNNING),
    (RunStatus.PAUSED, RunStatus.QUEUED),
    (RunStatus.PAUSED, RunStatus.WAITING_APPROVAL),
    (RunStatus.PAUSED, RunStatus.SUCCEEDED),
    (RunStatus.PAUSED, RunStatus.FAILED),
    (RunStatus.PAUSED, RunStatus.CANCELLED),
    (RunStatus.WAITING_APPROVAL, RunStatus.RUNNING),
    (RunStatus.WAITING_APPROVAL, RunStatus.PAUSED),
    (RunStatus.WAITING_APPROVAL, RunStatus.FAILED),
    (RunStatus.WAITING_APPROVAL, RunStatus.CANCELLED),
    (RunStatus.FAILED, RunStatus.RUNNING),
}
PAIRS = [(a, b) for a, b in itertools.product(RunStatus, RunStatus) if a != b]


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transition(current: RunStatus, target: RunStatus) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), sorted(set(PAIRS) - ALLOWED))
def test_forbidden_transition(current: RunStatus, target: RunStatus) -> None:
    with pytest.raises(InvalidState):
        check_transition(current, target)


def test_table_matches_the_documented_list() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


def test_retry_is_the_only_way_out_of_failed_and_succeeded_cancelled_are_final() -> None:
    assert TRANSITIONS[RunStatus.FAILED] == {RunStatus.RUNNING}
    assert all(not TRANSITIONS[s] for s in TERMINAL - {RunStatus.FAILED})
