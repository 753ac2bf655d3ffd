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
from workflows.settings import Settings, get_settings
from workflows.steps.prompt import build_prompt_step
from workflows.steps.rag_search import build_rag_search_step
from workflows.steps.registry import register
from workflows.steps.webhook import WebhookStep
from workflows.storage.definitions import DefinitionRepository
from workflows.storage.idempotency import IdempotencyRepository
from workflows.storage.runs import RunRepository
from workflows.webhooks.dlq import WebhookDlqRepository
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
    definitions: DefinitionRepository
    idempotency: IdempotencyRepository


def build_container(
    settings: Settings | None = None,
    *,
    clock: Clock = system_clock,
    dynamodb: Any = None,
    sqs: Any = None,
) -> Container:
    settings = settings or get_settings()
    # Step types that call out are configured from settings; building them creates no client.
    register(build_prompt_step(settings))
    register(build_rag_search_step(settings))
    dynamodb = dynamodb or aws.client("dynamodb")
    sqs = sqs or aws.client("sqs")
    runs = RunRepository(
        dynamodb,
        settings.runs_table,
        settings.run_events_table,
        clock=clock,
        retention_days=settings.run_retention_days,
    )
    queue = DispatchQueue(sqs, settings.dispatch_queue_url)
    engine = Engine(runs, queue, clock=clock, max_steps_per_run=settings.max_steps_per_run)
    dlq, dlq_worker = build_dlq_worker(settings, dynamodb, clock=clock)
    # One delivery code path for webhook steps and DLQ retries: same signing, same egress policy.
    register(WebhookStep(dlq_worker.deliverer, dlq))
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
        definitions=DefinitionRepository(dynamodb, settings.definitions_table, clock=clock),
        idempotency=IdempotencyRepository(dynamodb, settings.idempotency_table, clock=clock),
    )


@lru_cache(maxsize=1)
def get_container() -> Container:
    return build_container()
