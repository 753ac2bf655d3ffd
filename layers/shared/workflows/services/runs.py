"""Submitting runs: validate, store the run with its definition snapshot, enqueue its kick."""

from __future__ import annotations

import uuid
from typing import Any

from workflows.clock import iso
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import Principal
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.engine.messages import AdvanceMessage
from workflows.errors import DependencyUnavailable, DomainError
from workflows.observability import logger
from workflows.services.validation import validate_definition


class RunService:
    def __init__(self, container: Any) -> None:
        self._c = container

    def submit(
        self,
        principal: Principal,
        definition: WorkflowDefinition,
        inputs: dict[str, Any],
        *,
        workflow_id: str | None = None,
    ) -> Run:
        validate_definition(definition, self._c.settings)
        now = iso(self._c.clock())
        run = Run(
            run_id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            owner_id=principal.user_id,
            workflow_id=workflow_id,
            definition_version=definition.version,
            definition_name=definition.name,
            status=RunStatus.QUEUED,
            inputs=inputs,
            current_step_id=definition.first_step_id(),
            created_at=now,
            updated_at=now,
        )
        self._c.runs.create(run, definition)
        try:
            self._c.queue.send(
                AdvanceMessage(tenant_id=run.tenant_id, run_id=run.run_id, version=run.version)
            )
        except DomainError as exc:
            # The run is stored but nothing will start it: fail it visibly rather than leave
            # a run queued forever, and tell the caller to try again.
            logger.exception("could not enqueue new run", extra={"run_id": run.run_id})
            error = {"code": "enqueue_failed", "message": "the run could not be queued"}
            self._c.runs.transition(
                run,
                {
                    "status": RunStatus.FAILED,
                    "error": error,
                    "status_reason": "enqueue_failed",
                    "ended_at": now,
                },
                [NewEvent(event_type=EventType.RUN_FAILED, payload={"error": error})],
            )
            raise DependencyUnavailable("the run could not be queued; try again") from exc
        return run
