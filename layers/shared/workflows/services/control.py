"""Control actions as the API offers them: who may decide, what a decision may carry."""

from __future__ import annotations

from typing import Literal

from workflows.domain.json import JsonObject
from workflows.domain.jsonlimits import check_size
from workflows.domain.principal import Principal
from workflows.engine.control import ControlResult, RunControl
from workflows.ports import RunLog
from workflows.services.access import check_decide
from workflows.settings import Settings


class ControlService:
    def __init__(self, control: RunControl, runs: RunLog, settings: Settings) -> None:
        self._control = control
        self._runs = runs
        self._settings = settings

    def act(self, principal: Principal, run_id: str, action: str, *, from_step: str | None) -> ControlResult:
        return self._control.act(principal.tenant_id, run_id, action, principal.user_id, from_step=from_step)

    def decide(
        self,
        principal: Principal,
        run_id: str,
        step_id: str,
        decision: Literal["approve", "reject"],
        *,
        comment: str | None,
        fields: JsonObject,
    ) -> ControlResult:
        # workflows.runs.control, or a named assignee of the step (403 otherwise; 404 for a run
        # of another tenant).
        check_decide(self._runs, principal, run_id, step_id)
        # The decision is stored with the step's output and its events: bounded before anything.
        check_size(fields, "fields", self._settings.max_decision_bytes)
        return self._control.decide(
            principal.tenant_id, run_id, step_id, decision, principal.user_id, comment=comment, fields=fields
        )
