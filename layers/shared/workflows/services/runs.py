"""Submitting runs: validate, store the run with its definition snapshot, enqueue its kick."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from workflows.clock import Clock, iso, system_clock
from workflows.domain import transitions
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.idempotency import COMPLETED
from workflows.domain.jsonlimits import check_size
from workflows.domain.principal import Principal
from workflows.domain.run import Run, RunStatus
from workflows.domain.transitions import RunError
from workflows.engine.kicks import Kicks
from workflows.errors import (
    DependencyUnavailable,
    DomainError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    StaleWrite,
    Throttled,
)
from workflows.observability import logger
from workflows.ports import DefinitionStore, IdempotencyStore, RunLog
from workflows.services.access import check_secret_use, check_started_workflows
from workflows.services.validation import validate_definition
from workflows.settings import Settings
from workflows.steps.registry import StepRegistry

# Failures after which the run may or may not be stored (a lost answer, a lost race): the
# claim is kept, so the retry finds the run it names. Any other DomainError refused the
# request before its run was put, and frees the key.
_AMBIGUOUS = (StaleWrite, Throttled, DependencyUnavailable)


@dataclass
class _Reservation:
    """The run id an Idempotency-Key's claim names, for `submit` to create or find."""

    run_id: str
    found: bool = False  # an earlier request with the key had stored the run


# Set by `submit_once` around the caller's `submit` callback, which reaches `RunService.submit`
# through other services (saved definitions, schedules): a context variable rather than a
# run id threaded through each of them.
_reserved: ContextVar[_Reservation | None] = ContextVar("reserved_run", default=None)


class RunService:
    def __init__(
        self,
        runs: RunLog,
        kicks: Kicks,
        idempotency: IdempotencyStore,
        registry: StepRegistry,
        settings: Settings,
        *,
        definitions: DefinitionStore,
        clock: Clock = system_clock,
    ) -> None:
        self._runs = runs
        self._kicks = kicks
        self._idempotency = idempotency
        self._registry = registry
        self._settings = settings
        self._definitions = definitions
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
        reservation = _reserved.get()
        run = Run(
            run_id=reservation.run_id if reservation is not None else str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            owner_id=principal.user_id,
            # What the run may do on its owner's behalf later (start another user's workflow):
            # what they may do now. Single-user mode checks no such thing.
            owner_permissions=sorted(principal.permissions) if settings.auth_mode == "multi_user" else None,
            workflow_id=workflow_id,
            definition_version=definition.version,
            definition_name=definition.name,
            status=RunStatus.QUEUED,
            inputs=inputs,
            current_step_id=definition.first_step_id(),
            created_at=now,
            updated_at=now,
        )
        try:
            self._runs.create(run, definition)
        except StaleWrite:
            if reservation is None:
                raise
            # An earlier request with this key stored the run (its answer was lost, or it is
            # still on its way): this is that run.
            run = self._runs.get(run.tenant_id, run.run_id)
            reservation.found = True
            if run.status != RunStatus.QUEUED:
                return run
            # Whether its kick was sent is unknown (the request may have died before it): send
            # one. A second kick is harmless: stale by version, or a no-op once the step ran.
        try:
            self._kicks.send(run)
        except DomainError as exc:
            if reservation is not None:
                # Left queued: the key's claim stays open, and the client's retry with the same
                # key finds this run and kicks it again (or the sweeper does, if none comes).
                logger.exception("could not enqueue new run", extra={"run_id": run.run_id})
                raise DependencyUnavailable(
                    "the run could not be queued; retry with the same Idempotency-Key"
                ) from exc
            # The run is stored but nothing will start it: fail it visibly rather than leave
            # a run queued forever, and tell the caller to try again.
            logger.exception("could not enqueue new run", extra={"run_id": run.run_id})
            error: RunError = {"code": "enqueue_failed", "message": "the run could not be queued"}
            failed = transitions.give_up(run, error, now=self._clock(), blame_step=False)
            if failed is not None:
                self._runs.commit(failed)
            raise DependencyUnavailable("the run could not be queued; try again") from exc
        return run

    def check_adhoc(self, principal: Principal, definition: WorkflowDefinition) -> None:
        """Forbidden if an ad hoc definition references secrets the caller may not use (a saved
        one was checked when it was saved: running it needs no more than running does), or
        starts a saved workflow the caller may not run."""
        check_secret_use(principal, definition, self._registry, field_prefix="definition.")
        check_started_workflows(
            principal, definition, self._registry, self._definitions, field_prefix="definition."
        )

    def submit_once(
        self,
        principal: Principal,
        key: str | None,
        request: Mapping[str, Any],
        submit: Callable[[], Run],
    ) -> tuple[Run, bool]:
        """Run `submit` at most once per caller, Idempotency-Key and request; (run, replayed).

        The key is claimed (a conditional put) before the run exists, and the claim names the
        run id: every request with the key and body, whatever happened to the earlier ones,
        creates or finds that one run (the run item's put is conditional), kicks it if it is
        still queued, and answers with it. A claim is never waited on nor taken over.
        """
        if key is None:
            return submit(), False
        fingerprint = hashlib.sha256(
            json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()
        ).hexdigest()
        store = self._idempotency
        tenant, user = principal.tenant_id, principal.user_id
        claim = store.claim(tenant, user, key, fingerprint, str(uuid.uuid4()))
        record = claim.existing
        if record is not None:
            if record.body_hash != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used with a different request",
                    details=[{"field": "Idempotency-Key", "message": "reused with another body"}],
                )
            if record.status == COMPLETED and record.run_id:
                return self._runs.get(tenant, record.run_id), True
        if claim.run_id is None:
            # A claim stored before claims named their run: it holds until its lease runs out.
            raise IdempotencyInProgress(
                "a request with this Idempotency-Key is still being processed; retry shortly"
            )
        reservation = _Reservation(claim.run_id)
        context = _reserved.set(reservation)
        try:
            run = submit()
        except DomainError as exc:
            if not isinstance(exc, _AMBIGUOUS):
                store.release(tenant, user, key, reservation.run_id)
            raise
        finally:
            _reserved.reset(context)
        store.complete(tenant, user, key, fingerprint, reservation.run_id)
        return run, reservation.found
