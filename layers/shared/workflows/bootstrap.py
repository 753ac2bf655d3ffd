"""The composition root: builds clients and repositories once per process.

Nothing here runs at import time; handlers call `get_container()` on first use, and tests
build their own `Container` (or swap the cached one) around moto-backed clients.

Each part of the container, AWS clients included, is built the first time it is used, and the
module that defines it is imported only then (cold start): the DLQ worker never loads the
engine, the dispatcher loads the webhook delivery code (httpx, egress, signing) only for a
webhook step or a completion notification, and the API builds what its requests use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from workflows.adapters import aws
from workflows.clock import Clock, system_clock
from workflows.errors import NotFound
from workflows.settings import Settings, get_settings
from workflows.steps import registry

if TYPE_CHECKING:
    from workflows.adapters.api_keys import ApiKeyRepository
    from workflows.adapters.artifacts import ArtifactRepository
    from workflows.adapters.corpus import CorpusRepository
    from workflows.adapters.definitions import DefinitionRepository
    from workflows.adapters.dlq import WebhookDlqRepository
    from workflows.adapters.idempotency import IdempotencyRepository
    from workflows.adapters.quotas import QuotaRepository, TenantSlots
    from workflows.adapters.runs import RunRepository
    from workflows.adapters.schedules import EventBridgeSchedules, ScheduleRepository
    from workflows.adapters.secrets import SecretStore
    from workflows.domain.run import Run
    from workflows.engine.advance import Engine
    from workflows.engine.control import RunControl
    from workflows.engine.messages import DispatchQueue
    from workflows.services.webhooks.notify import CompletionNotifier
    from workflows.services.webhooks.worker import DlqWorker

_T = TypeVar("_T")


class _Part(Generic[_T]):
    """A container attribute built by its method on first access, a plain attribute after."""

    def __init__(self, build: Callable[[Container], _T]) -> None:
        self._build = build
        self._name = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, container: None, owner: type[Container]) -> _Part[_T]: ...

    @overload
    def __get__(self, container: Container, owner: type[Container]) -> _T: ...

    def __get__(self, container: Container | None, owner: type[Container]) -> _Part[_T] | _T:
        if container is None:
            return self
        # Threads asking at once (the local server's thread pool) share one instance.
        with container._lock:
            values = container.__dict__
            if self._name not in values:
                values[self._name] = self._build(container)
            value: _T = values[self._name]
        return value


class Container:
    """The process's clients, repositories and services, each built when first used."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        dynamodb: Any = None,
        sqs: Any = None,
        s3: Any = None,
        scheduler: Any = None,
        ssm: Any = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.RLock()
        # Clients given by the caller (tests, benchmarks) are used as they are.
        given = {"dynamodb": dynamodb, "sqs": sqs, "s3": s3, "ssm": ssm}
        self.__dict__.update({name: client for name, client in given.items() if client is not None})
        self._scheduler_client = scheduler

    # ---- AWS clients -------------------------------------------------------------------

    @_Part
    def dynamodb(self) -> Any:
        return aws.client("dynamodb")

    @_Part
    def sqs(self) -> Any:
        return aws.client("sqs")

    @_Part
    def s3(self) -> Any:
        return aws.client("s3")

    @_Part
    def ssm(self) -> Any:
        return aws.client("ssm")

    @_Part
    def secrets(self) -> SecretStore:
        from workflows.adapters.secrets import SecretStore  # on first use: cold start

        return SecretStore(self.ssm, self.settings.secrets_prefix)

    # ---- storage -----------------------------------------------------------------------

    @_Part
    def runs(self) -> RunRepository:
        from workflows.adapters.runs import RunRepository  # on first use: cold start

        settings = self.settings
        return RunRepository(
            self.dynamodb,
            settings.runs_table,
            settings.run_events_table,
            clock=self.clock,
            retention_days=settings.run_retention_days,
        )

    @_Part
    def queue(self) -> DispatchQueue:
        from workflows.engine.messages import DispatchQueue  # on first use: cold start

        return DispatchQueue(self.sqs, self.settings.dispatch_queue_url)

    @_Part
    def artifacts(self) -> ArtifactRepository:
        from workflows.adapters.artifacts import ArtifactRepository  # on first use: cold start

        settings = self.settings
        return ArtifactRepository(
            self.dynamodb,
            self.s3,
            settings.artifacts_table,
            settings.artifacts_bucket,
            clock=self.clock,
            retention_days=settings.run_retention_days,
        )

    @_Part
    def corpus(self) -> CorpusRepository:
        from workflows.adapters.corpus import CorpusRepository  # on first use: cold start

        return CorpusRepository(self.dynamodb, self.settings.corpus_table, clock=self.clock)

    @_Part
    def definitions(self) -> DefinitionRepository:
        from workflows.adapters.definitions import DefinitionRepository  # on first use: cold start

        return DefinitionRepository(self.dynamodb, self.settings.definitions_table, clock=self.clock)

    @_Part
    def idempotency(self) -> IdempotencyRepository:
        from workflows.adapters.idempotency import IdempotencyRepository  # on first use: cold start

        return IdempotencyRepository(self.dynamodb, self.settings.idempotency_table, clock=self.clock)

    @_Part
    def api_keys(self) -> ApiKeyRepository:
        from workflows.adapters.api_keys import ApiKeyRepository  # on first use: cold start

        return ApiKeyRepository(self.dynamodb, self.settings.api_keys_table, clock=self.clock)

    @_Part
    def quotas(self) -> QuotaRepository:
        from workflows.adapters.quotas import QuotaRepository  # on first use: cold start

        return QuotaRepository(self.dynamodb, self.settings.quotas_table)

    @_Part
    def schedules(self) -> ScheduleRepository:
        from workflows.adapters.schedules import ScheduleRepository  # on first use: cold start

        return ScheduleRepository(self.dynamodb, self.settings.schedules_table)

    @_Part
    def scheduler(self) -> EventBridgeSchedules:
        from workflows.adapters.schedules import EventBridgeSchedules  # on first use: cold start

        client = self._scheduler_client
        settings = self.settings
        return EventBridgeSchedules(
            (lambda: client) if client is not None else (lambda: aws.client("scheduler")),
            group=settings.schedule_group,
            role_arn=settings.scheduler_role_arn,
            queue_arn=settings.dispatch_queue_arn,
        )

    # ---- webhooks: one delivery code path for webhook steps, completion notifications and
    # DLQ retries (the same signing, the same egress policy, the same DLQ) --------------------

    @_Part
    def _webhooks(self) -> tuple[WebhookDlqRepository, DlqWorker]:
        from workflows.services.webhooks.worker import build_dlq_worker  # on first use: cold start

        return build_dlq_worker(
            self.settings, self.dynamodb, clock=self.clock, runs=self.runs, secret_lookup=self._secret_value
        )

    def _secret_value(self, tenant_id: str, name: str) -> str:
        return self.secrets.value(tenant_id, name)

    @property
    def dlq(self) -> WebhookDlqRepository:
        return self._webhooks[0]

    @property
    def dlq_worker(self) -> DlqWorker:
        return self._webhooks[1]

    @_Part
    def notifier(self) -> CompletionNotifier:
        from workflows.services.webhooks.notify import CompletionNotifier  # on first use: cold start

        return CompletionNotifier(self.dlq_worker.deliverer, self.dlq, self.runs, clock=self.clock)

    # ---- engine ------------------------------------------------------------------------

    @_Part
    def engine(self) -> Engine:
        from workflows.engine.advance import Engine  # on first use: cold start

        settings = self.settings
        slots: TenantSlots | None = None
        if settings.tenant_concurrency > 0:
            from workflows.adapters.quotas import TenantSlots  # on first use: cold start

            slots = TenantSlots(
                self.quotas,
                settings.tenant_concurrency,
                is_finished=lambda tenant, run_id: _finished(self.runs, tenant, run_id),
                clock=self.clock,
            )
        return Engine(
            self.runs,
            self.queue,
            clock=self.clock,
            max_steps_per_run=settings.max_steps_per_run,
            # Most runs save no artifact and notify nobody: the S3 client and the webhook
            # delivery code are built when the first run needs them.
            artifacts=_ArtifactsOnFirstUse(self),
            notifier=_NotifierOnFirstUse(self),
            slots=slots,
            slot_recheck_seconds=settings.tenant_concurrency_recheck_sec,
        )

    @_Part
    def control(self) -> RunControl:
        from workflows.engine.control import RunControl  # on first use: cold start

        return RunControl(self.runs, self.queue, self.engine, clock=self.clock)


class _ArtifactsOnFirstUse:
    """The engine's artifact sink: the container's repository, built on the first save."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def save(
        self, tenant_id: str, run_id: str, *, step_id: str, name: str, content: bytes, mime_type: str
    ) -> Any:
        return self._container.artifacts.save(
            tenant_id, run_id, step_id=step_id, name=name, content=content, mime_type=mime_type
        )


class _NotifierOnFirstUse:
    """The engine's completion notifier: the container's, built on the first notification."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def notify(self, run: Run, url: str) -> object:
        return self._container.notifier.notify(run, url)


def build_container(
    settings: Settings | None = None,
    *,
    clock: Clock = system_clock,
    dynamodb: Any = None,
    sqs: Any = None,
    s3: Any = None,
    scheduler: Any = None,
    ssm: Any = None,
) -> Container:
    container = Container(
        settings or get_settings(),
        clock=clock,
        dynamodb=dynamodb,
        sqs=sqs,
        s3=s3,
        scheduler=scheduler,
        ssm=ssm,
    )
    # Step types that call out are built from this container when a definition first uses one.
    registry.configure(container)
    return container


def _finished(runs: RunRepository, tenant_id: str, run_id: str) -> bool:
    """Whether a run holding an execution slot has ended (or no longer exists)."""
    try:
        return runs.get(tenant_id, run_id).is_terminal
    except NotFound:
        return True


@lru_cache(maxsize=1)
def get_container() -> Container:
    return build_container()
