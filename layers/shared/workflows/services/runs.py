"""Submitting runs: validate, store the run with its definition snapshot, enqueue its kick."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from workflows.clock import Clock, iso, system_clock
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.idempotency import COMPLETED
from workflows.domain.jsonlimits import check_size
from workflows.domain.messages import AdvanceMessage
from workflows.domain.principal import Principal
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.errors import (
    DependencyUnavailable,
    DomainError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
)
from workflows.observability import logger
from workflows.ports import DispatchQueue, IdempotencyStore, RunStore
from workflows.services.access import check_secret_use
from workflows.services.validation import validate_definition
from workflows.settings import Settings
from workflows.steps.registry import StepRegistry

# How a request waits for another one holding the same Idempotency-Key (about 2 s in all).
IDEMPOTENCY_POLL_SECONDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5)


class RunService:
    def __init__(
        self,
        runs: RunStore,
        queue: DispatchQueue,
        idempotency: IdempotencyStore,
        registry: StepRegistry,
        settings: Settings,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._runs = runs
        self._queue = queue
        self._idempotency = idempotency
        self._registry = registry
        self._settings = settings
        self._clock = clock

    def submit(
        self,
        principal: Principal,
        definition: WorkflowDefinition,
        inputs: dict[str, Any],
        *,
        workflow_id: str | None = None,
    ) -> Run:
        settings = self._settings
        check_size(inputs, "inputs", settings.max_inputs_bytes)
        validate_definition(definition, settings, self._registry)
        if workflow_id is None:
            self.check_adhoc(principal, definition)
        now = iso(self._clock())
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
        self._runs.create(run, definition)
        try:
            self._queue.send(AdvanceMessage(tenant_id=run.tenant_id, run_id=run.run_id, version=run.version))
        except DomainError as exc:
            # The run is stored but nothing will start it: fail it visibly rather than leave
            # a run queued forever, and tell the caller to try again.
            logger.exception("could not enqueue new run", extra={"run_id": run.run_id})
            error = {"code": "enqueue_failed", "message": "the run could not be queued"}
            self._runs.transition(
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

    def check_adhoc(self, principal: Principal, definition: WorkflowDefinition) -> None:
        """Forbidden if an ad hoc definition references secrets the caller may not use. (A saved
        one was checked when it was saved: running it needs no more than running does.)"""
        check_secret_use(principal, definition, self._registry, field_prefix="definition.")

    def submit_once(
        self,
        principal: Principal,
        key: str | None,
        request: Mapping[str, Any],
        submit: Callable[[], Run],
    ) -> tuple[Run, bool]:
        """Run `submit` at most once per caller, Idempotency-Key and request; (run, replayed).

        The key is claimed (a conditional put) before the run exists, so of concurrent requests
        with one key exactly one creates a run. The others wait for it briefly and answer with
        the same run, or with IdempotencyInProgress if it is still being created.
        """
        if key is None:
            return submit(), False
        fingerprint = hashlib.sha256(
            json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()
        ).hexdigest()
        store = self._idempotency
        tenant, user = principal.tenant_id, principal.user_id
        polls = list(IDEMPOTENCY_POLL_SECONDS)
        while True:
            claim = store.claim(tenant, user, key, fingerprint)
            if claim.won:
                try:
                    run = submit()
                except BaseException:
                    store.release(tenant, user, key, claim.token)
                    raise
                store.complete(tenant, user, key, claim.token, run.run_id)
                return run, False
            record = claim.existing
            while record is not None:
                if record.body_hash != fingerprint:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was already used with a different request",
                        details=[{"field": "Idempotency-Key", "message": "reused with another body"}],
                    )
                if record.status == COMPLETED and record.run_id:
                    return self._runs.get(tenant, record.run_id), True
                if not polls:
                    raise IdempotencyInProgress(
                        "a request with this Idempotency-Key is still being processed; retry shortly"
                    )
                time.sleep(polls.pop(0))
                record = store.get(tenant, user, key)
            # The holder gave up its claim (its request failed): try to claim it ourselves.
