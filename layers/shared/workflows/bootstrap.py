"""The composition root: builds clients and repositories once per process.

Nothing here runs at import time; handlers call `get_container()` on first use, and tests
build their own `Container` (or swap the cached one) around moto-backed clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from workflows import aws
from workflows.clock import Clock, system_clock
from workflows.engine.advance import Engine
from workflows.engine.control import RunControl
from workflows.engine.messages import DispatchQueue
from workflows.errors import NotFound
from workflows.settings import Settings, get_settings
from workflows.steps.prompt import build_prompt_step
from workflows.steps.rag_search import build_rag_search_step
from workflows.steps.registry import register
from workflows.steps.webhook import WebhookStep
from workflows.storage.api_keys import ApiKeyRepository
from workflows.storage.artifacts import ArtifactRepository
from workflows.storage.corpus import CorpusRepository
from workflows.storage.definitions import DefinitionRepository
from workflows.storage.idempotency import IdempotencyRepository
from workflows.storage.quotas import QuotaRepository, TenantSlots
from workflows.storage.runs import RunRepository
from workflows.storage.schedules import EventBridgeSchedules, ScheduleRepository
from workflows.webhooks.dlq import WebhookDlqRepository
from workflows.webhooks.notify import CompletionNotifier
from workflows.webhooks.worker import DlqWorker, build_dlq_worker


@dataclass
class Container:
    settings: Settings
    clock: Clock
    dynamodb: Any
    sqs: Any
    runs: RunRepository
    queue: DispatchQueue
    engine: Engine
    control: RunControl
    dlq: WebhookDlqRepository
    dlq_worker: DlqWorker
    notifier: CompletionNotifier
    definitions: DefinitionRepository
    idempotency: IdempotencyRepository
    artifacts: ArtifactRepository
    corpus: CorpusRepository
    schedules: ScheduleRepository
    scheduler: EventBridgeSchedules
    api_keys: ApiKeyRepository
    quotas: QuotaRepository


def build_container(
    settings: Settings | None = None,
    *,
    clock: Clock = system_clock,
    dynamodb: Any = None,
    sqs: Any = None,
    s3: Any = None,
    scheduler: Any = None,
) -> Container:
    settings = settings or get_settings()
    # Step types that call out are configured from settings; building them creates no client.
    register(build_prompt_step(settings))
    dynamodb = dynamodb or aws.client("dynamodb")
    corpus = CorpusRepository(dynamodb, settings.corpus_table, clock=clock)
    register(build_rag_search_step(settings, corpus=corpus))
    sqs = sqs or aws.client("sqs")
    s3 = s3 or aws.client("s3")
    runs = RunRepository(
        dynamodb,
        settings.runs_table,
        settings.run_events_table,
        clock=clock,
        retention_days=settings.run_retention_days,
    )
    queue = DispatchQueue(sqs, settings.dispatch_queue_url)
    artifacts = ArtifactRepository(
        dynamodb,
        s3,
        settings.artifacts_table,
        settings.artifacts_bucket,
        clock=clock,
        retention_days=settings.run_retention_days,
    )
    dlq, dlq_worker = build_dlq_worker(settings, dynamodb, clock=clock, runs=runs)
    # One delivery code path for webhook steps, completion notifications and DLQ retries: the
    # same signing, the same egress policy, the same DLQ.
    register(WebhookStep(dlq_worker.deliverer, dlq))
    notifier = CompletionNotifier(dlq_worker.deliverer, dlq, runs, clock=clock)
    quotas = QuotaRepository(dynamodb, settings.quotas_table)
    slots = None
    if settings.tenant_concurrency > 0:
        slots = TenantSlots(
            quotas,
            settings.tenant_concurrency,
            is_finished=lambda tenant, run_id: _finished(runs, tenant, run_id),
            clock=clock,
        )
    engine = Engine(
        runs,
        queue,
        clock=clock,
        max_steps_per_run=settings.max_steps_per_run,
        artifacts=artifacts,
        notifier=notifier,
        slots=slots,
        slot_recheck_seconds=settings.tenant_concurrency_recheck_sec,
    )
    return Container(
        settings=settings,
        clock=clock,
        dynamodb=dynamodb,
        sqs=sqs,
        runs=runs,
        queue=queue,
        engine=engine,
        control=RunControl(runs, queue, engine, clock=clock),
        dlq=dlq,
        dlq_worker=dlq_worker,
        notifier=notifier,
        corpus=corpus,
        schedules=ScheduleRepository(dynamodb, settings.schedules_table),
        scheduler=EventBridgeSchedules(
            (lambda: scheduler) if scheduler is not None else (lambda: aws.client("scheduler")),
            group=settings.schedule_group,
            role_arn=settings.scheduler_role_arn,
            queue_arn=settings.dispatch_queue_arn,
        ),
        definitions=DefinitionRepository(dynamodb, settings.definitions_table, clock=clock),
        idempotency=IdempotencyRepository(dynamodb, settings.idempotency_table, clock=clock),
        artifacts=artifacts,
        api_keys=ApiKeyRepository(dynamodb, settings.api_keys_table, clock=clock),
        quotas=quotas,
    )


def _finished(runs: RunRepository, tenant_id: str, run_id: str) -> bool:
    """Whether a run holding an execution slot has ended (or no longer exists)."""
    try:
        return runs.get(tenant_id, run_id).is_terminal
    except NotFound:
        return True


@lru_cache(maxsize=1)
def get_container() -> Container:
    return build_container()
