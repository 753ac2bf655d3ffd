"""How the parts fit together: adapters, step types, engine and services, each built on first use.

Only the composition roots (this package) build or hold a `Parts`: each function's root makes
one and touches only what that function uses, so what is never used is never built (the
dispatcher never builds the HTTP edge's services, the DLQ worker never builds the engine), and
modules that only some invocations need are imported inside the property that builds them
(cold start). Everything below the roots gets its dependencies as typed constructor arguments.

Tests and the local stack build a `Parts` around their own clients (moto) or the in-memory fakes,
and may give it any part ready-made (`parts=` or `give`): a fake, a port wrapped to inject a fault,
a registry with a step type of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from workflows.adapters import aws
from workflows.clock import Clock, system_clock
from workflows.errors import NotFound
from workflows.settings import Settings
from workflows.steps.registry import StepRegistry, local_step_types

if TYPE_CHECKING:
    from workflows.domain.secret_refs import Secret
    from workflows.engine.advance import Engine
    from workflows.engine.children import Children
    from workflows.engine.control import RunControl
    from workflows.engine.endings import Endings
    from workflows.engine.kicks import Kicks
    from workflows.engine.outcomes import StepCommits
    from workflows.engine.shares import TenantShares
    from workflows.engine.signals import SignalWaits
    from workflows.engine.slots import TenantSlots
    from workflows.engine.sweep import Sweeper
    from workflows.ports import (
        ApiKeyStore,
        ArtifactStore,
        ConnectionPoster,
        CorpusStore,
        DefinitionStore,
        Deliverer,
        DispatchQueue,
        DlqStore,
        FollowerStore,
        IdempotencyStore,
        QuotaStore,
        RunIndex,
        RunLog,
        RunOutputStore,
        ScheduleStore,
        ScheduleTriggers,
        ShareStore,
        SignalStore,
        TokenVerifier,
    )
    from workflows.ports import SecretStore as SecretPort
    from workflows.services.access import SubmissionQuotas
    from workflows.services.approvals import ApprovalInbox
    from workflows.services.artifacts import ArtifactService
    from workflows.services.control import ControlService
    from workflows.services.corpus import CorpusService
    from workflows.services.definitions import DefinitionService
    from workflows.services.deliveries import DeliveryOperations
    from workflows.services.follow import RunFollowing
    from workflows.services.identity import Identity
    from workflows.services.keys import KeyService
    from workflows.services.queries import RunQueries
    from workflows.services.runs import RunService
    from workflows.services.schedules import ScheduleService
    from workflows.services.secrets import SecretService
    from workflows.services.signals import SignalService
    from workflows.services.webhooks.notify import CompletionNotifier
    from workflows.services.webhooks.worker import DlqWorker
    from workflows.steps.base import StepType

# The WebSocket API's stage (template.yaml, WebSocketStage).
WEBSOCKET_STAGE = "v1"
# boto3 clients are untyped here (no boto3-stubs at runtime).
Client = Any


class Parts:
    """One function's parts. Clients and parts given here (tests, the local stack) are used as
    they are; the others are built when first needed (AWS's clients, the adapters around them)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        dynamodb: Client | None = None,
        sqs: Client | None = None,
        s3: Client | None = None,
        scheduler: Client | None = None,
        ssm: Client | None = None,
        parts: Mapping[str, object] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        given = {"dynamodb": dynamodb, "sqs": sqs, "s3": s3, "scheduler_client": scheduler, "ssm": ssm}
        self.give(**{name: client for name, client in given.items() if client is not None})
        self.give(**(parts or {}))

    def give(self, **parts: object) -> Parts:
        """Use these parts as they are instead of building them: each name is one of the parts
        below (`runs`, `queue`, `registry`, `queries`, `dynamodb`...). Give a part before the
        parts built from it (the engine holds the queue it was built with)."""
        for name, part in parts.items():
            if not isinstance(getattr(type(self), name, None), cached_property):
                raise TypeError(f"Parts has no part named {name!r}")
            # cached_property reads the instance's own attribute first: a given part is kept.
            self.__dict__[name] = part
        return self

    # ---- AWS clients -------------------------------------------------------------------

    @cached_property
    def dynamodb(self) -> Client:
        return aws.client("dynamodb")

    @cached_property
    def sqs(self) -> Client:
        return aws.client("sqs")

    @cached_property
    def s3(self) -> Client:
        return aws.client("s3")

    @cached_property
    def ssm(self) -> Client:
        return aws.client("ssm")

    @cached_property
    def scheduler_client(self) -> Client:
        return aws.client("scheduler")

    @cached_property
    def bedrock_runtime(self) -> Client:
        """Prompt steps' Bedrock client: built by the first call to a Bedrock model."""
        return aws.step_client("bedrock-runtime", timeout=self.settings.llm_timeout_sec)

    @cached_property
    def bedrock_agent_runtime(self) -> Client:
        """rag_search steps' knowledge-base client: built by the first `bedrock_kb` search."""
        return aws.step_client("bedrock-agent-runtime", timeout=self.settings.retrieval_timeout_sec)

    # ---- adapters ----------------------------------------------------------------------

    @cached_property
    def runs(self) -> RunLog:
        """Runs' record of truth: the run item, its pinned definition, its events."""
        from workflows.adapters.runs import RunRepository

        s = self.settings
        return RunRepository(
            self.dynamodb,
            s.runs_table,
            s.run_events_table,
            clock=self.clock,
            retention_days=s.run_retention_days,
        )

    @cached_property
    def run_outputs(self) -> RunOutputStore:
        from workflows.adapters.run_outputs import RunOutputRepository

        s = self.settings
        return RunOutputRepository(
            self.dynamodb,
            s.runs_table,
            s.run_events_table,
            clock=self.clock,
            retention_days=s.run_retention_days,
            # Built for the first output big enough for S3 (cold start).
            s3=lambda: self.s3,
            bucket=s.artifacts_bucket,
        )

    @cached_property
    def run_index(self) -> RunIndex:
        """Listings, the runs owed a step (the sweeper), the approvals inbox."""
        from workflows.adapters.run_index import RunIndexRepository

        return RunIndexRepository(self.dynamodb, self.settings.runs_table)

    @cached_property
    def queue(self) -> DispatchQueue:
        from workflows.adapters.queue import SqsDispatchQueue

        return SqsDispatchQueue(self.sqs, self.settings.dispatch_queue_url)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from workflows.adapters.artifacts import ArtifactRepository

        s = self.settings
        return ArtifactRepository(
            self.dynamodb,
            self.s3,
            s.artifacts_table,
            s.artifacts_bucket,
            clock=self.clock,
            retention_days=s.run_retention_days,
        )

    @cached_property
    def corpus(self) -> CorpusStore:
        from workflows.adapters.corpus import CorpusRepository

        return CorpusRepository(self.dynamodb, self.settings.corpus_table, clock=self.clock)

    @cached_property
    def definitions(self) -> DefinitionStore:
        from workflows.adapters.definitions import DefinitionRepository

        return DefinitionRepository(self.dynamodb, self.settings.definitions_table, clock=self.clock)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        from workflows.adapters.idempotency import IdempotencyRepository

        return IdempotencyRepository(self.dynamodb, self.settings.idempotency_table, clock=self.clock)

    @cached_property
    def api_keys(self) -> ApiKeyStore:
        from workflows.adapters.api_keys import ApiKeyRepository

        return ApiKeyRepository(self.dynamodb, self.settings.api_keys_table, clock=self.clock)

    @cached_property
    def quotas(self) -> QuotaStore:
        from workflows.adapters.quotas import QuotaRepository

        return QuotaRepository(self.dynamodb, self.settings.quotas_table)

    @cached_property
    def schedules(self) -> ScheduleStore:
        from workflows.adapters.schedules import ScheduleRepository

        return ScheduleRepository(self.dynamodb, self.settings.schedules_table)

    @cached_property
    def scheduler(self) -> ScheduleTriggers:
        from workflows.adapters.schedules import EventBridgeSchedules

        s = self.settings
        return EventBridgeSchedules(
            lambda: self.scheduler_client,
            group=s.schedule_group,
            role_arn=s.scheduler_role_arn,
            queue_arn=s.dispatch_queue_arn,
        )

    @cached_property
    def secrets(self) -> SecretPort:
        from workflows.adapters.secrets import SecretStore

        return SecretStore(self.ssm, self.settings.secrets_prefix)

    @cached_property
    def dlq(self) -> DlqStore:
        from workflows.adapters.dlq import WebhookDlqRepository

        s = self.settings
        return WebhookDlqRepository(
            self.dynamodb, s.webhook_dlq_table, clock=self.clock, retention_days=s.run_retention_days
        )

    @cached_property
    def deliverer(self) -> Deliverer:
        """The one delivery path: webhook steps, completion notifications, DLQ retries, replays."""
        from workflows.adapters.http.delivery import HttpDeliverer
        from workflows.adapters.http.egress import EgressPolicy
        from workflows.adapters.http.signing_secrets import SigningSecrets

        s = self.settings
        # The per-tenant WORKFLOWS_WEBHOOK_{ALLOW,DENY}LIST_<TENANT> overrides: read here, once.
        policy = EgressPolicy.from_settings(s, os.environ)
        signing = SigningSecrets.from_settings(s)
        return HttpDeliverer(signing, timeout=s.webhook_dlq_timeout_sec, policy=policy, clock=self.clock)

    # ---- step types --------------------------------------------------------------------

    @cached_property
    def registry(self) -> StepRegistry:
        """The step types; the ones that call out are built for the first definition using one,
        and get their AWS clients as factories: a client is made by the first call that needs it
        (most runs never call Bedrock)."""

        def prompt() -> StepType:
            from workflows.steps.prompt import PromptStep

            return PromptStep(self.settings, bedrock_client_factory=lambda: self.bedrock_runtime)

        def rag_search() -> StepType:
            from workflows.steps.rag_search import RagSearchStep

            return RagSearchStep(
                self.settings,
                bedrock_agent_client_factory=lambda: self.bedrock_agent_runtime,
                corpus=self.corpus,
            )

        def webhook() -> StepType:
            from workflows.steps.webhook import WebhookStep

            return WebhookStep(self.deliverer, self.dlq, self.secret_value)

        return StepRegistry(
            local_step_types(), {"prompt": prompt, "rag_search": rag_search, "webhook": webhook}
        )

    def secret_value(self, tenant_id: str, name: str) -> Secret:
        """A secret for a request being sent: its value and the hosts it may go to."""
        return self.secrets.get(tenant_id, name)

    # ---- engine ------------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        from workflows.engine.advance import Engine

        s = self.settings
        return Engine(
            self.runs,
            self.run_outputs,
            self.kicks,
            self.registry,
            self.step_commits,
            self.endings,
            clock=self.clock,
            max_steps_per_run=s.max_steps_per_run,
            slots=self.slots,
            slot_recheck_seconds=s.tenant_concurrency_recheck_sec,
            max_receives=s.dispatch_max_receive_count,
            sweep_grace_seconds=s.sweep_grace_sec,
            shares=self.shares,
            signals=self.signal_waits,
            children=self.children,
        )

    @cached_property
    def children(self) -> Children:
        from workflows.engine.children import Children, Limits
        from workflows.services.definitions import ChildWorkflows

        s = self.settings
        return Children(
            self.runs,
            self.run_outputs,
            self.kicks,
            self.queue,
            self.step_commits,
            self.endings,
            workflows=ChildWorkflows(self.definitions, self.runs, multi_user=s.auth_mode == "multi_user"),
            registry=self.registry,
            limits=Limits(
                max_items=s.max_map_items,
                max_nesting=s.max_nesting,
                wait_seconds=s.child_wait_sec,
                max_child_bytes=s.max_inputs_bytes,
            ),
            clock=self.clock,
        )

    @cached_property
    def signal_waits(self) -> SignalWaits:
        from workflows.engine.signals import SignalWaits

        return SignalWaits(
            self.signals, self.runs, self.run_outputs, self.kicks, self.queue, self.endings, clock=self.clock
        )

    @cached_property
    def signal_service(self) -> SignalService:
        from workflows.services.signals import SignalService

        return SignalService(
            self.signals,
            self.runs,
            self.signal_waits,
            self.queue,
            self.quotas,
            self.settings,
            clock=self.clock,
        )

    @cached_property
    def signals(self) -> SignalStore:
        from workflows.adapters.signals import SignalRepository

        return SignalRepository(self.dynamodb, self.settings.runs_table)

    @cached_property
    def kicks(self) -> Kicks:
        from workflows.engine.kicks import Kicks

        return Kicks(self.queue)

    @cached_property
    def step_commits(self) -> StepCommits:
        from workflows.engine.outcomes import StepCommits

        # A factory: most runs save no artifact, so the S3 client is built for the first that does.
        return StepCommits(self.runs, self.run_outputs, artifacts=lambda: self.artifacts, clock=self.clock)

    @cached_property
    def endings(self) -> Endings:
        from workflows.engine.endings import Endings

        # A factory: most runs notify nobody, so the webhook delivery code is built for the first.
        return Endings(
            self.runs, slots=self.slots, notifier=lambda: self.notifier, queue=self.queue, clock=self.clock
        )

    @cached_property
    def shares(self) -> TenantShares | None:
        s = self.settings
        if s.tenant_steps_per_sec <= 0 and s.tenant_calls_in_flight <= 0 and s.calls_in_flight <= 0:
            return None
        from workflows.domain.shares import StepRate
        from workflows.engine.shares import TenantShares

        rate = StepRate(s.tenant_steps_per_sec, s.tenant_steps_burst) if s.tenant_steps_per_sec > 0 else None
        return TenantShares(
            self.share_store,
            rate=rate,
            tenant_calls=s.tenant_calls_in_flight,
            all_calls=s.calls_in_flight,
            call_recheck_seconds=s.call_recheck_sec,
        )

    @cached_property
    def share_store(self) -> ShareStore:
        from workflows.adapters.quotas import QuotaRepository

        return QuotaRepository(self.dynamodb, self.settings.quotas_table)

    @cached_property
    def sweeper(self) -> Sweeper:
        from workflows.engine.sweep import Sweeper

        s = self.settings
        return Sweeper(
            self.runs,
            self.run_index,
            self.kicks,
            self.endings,
            grace_seconds=s.sweep_grace_sec,
            max_rekicks=s.sweep_max_rekicks,
            period_seconds=s.sweep_period_sec,
            clock=self.clock,
        )

    @cached_property
    def slots(self) -> TenantSlots | None:
        if self.settings.tenant_concurrency <= 0:
            return None
        from workflows.engine.slots import TenantSlots

        return TenantSlots(
            self.quotas, self.settings.tenant_concurrency, is_finished=self._finished, clock=self.clock
        )

    def _finished(self, tenant_id: str, run_id: str) -> bool:
        """Whether a run holding an execution slot has ended (or no longer exists)."""
        try:
            return self.runs.get(tenant_id, run_id).is_terminal
        except NotFound:
            return True

    @cached_property
    def control(self) -> RunControl:
        from workflows.engine.control import RunControl

        return RunControl(
            self.runs,
            self.run_outputs,
            self.kicks,
            self.step_commits,
            self.endings,
            queue=self.queue,
            child_wait_seconds=self.settings.child_wait_sec,
            clock=self.clock,
        )

    # ---- webhooks ----------------------------------------------------------------------

    @cached_property
    def dlq_worker(self) -> DlqWorker:
        import time

        from workflows.services.webhooks.worker import DlqWorker

        return DlqWorker(
            self.dlq,
            self.deliverer,
            self.settings,
            clock=self.clock,
            sleep=time.sleep,
            runs=self.runs,
            secrets=self.secret_value,
        )

    @cached_property
    def notifier(self) -> CompletionNotifier:
        from workflows.services.webhooks.notify import CompletionNotifier

        return CompletionNotifier(self.deliverer, self.dlq, self.runs, self.run_outputs, clock=self.clock)

    # ---- services (the API's, and the dispatcher's schedule fires) ----------------------

    @cached_property
    def run_service(self) -> RunService:
        from workflows.services.runs import RunService

        return RunService(
            self.runs,
            self.kicks,
            self.idempotency,
            self.registry,
            self.settings,
            definitions=self.definitions,
            clock=self.clock,
        )

    @cached_property
    def definition_service(self) -> DefinitionService:
        from workflows.services.definitions import DefinitionService

        return DefinitionService(self.definitions, self.run_service, self.registry, self.settings)

    @cached_property
    def schedule_service(self) -> ScheduleService:
        from workflows.services.schedules import ScheduleService

        return ScheduleService(
            self.schedules,
            self.scheduler,
            self.definitions,
            self.definition_service,
            self.run_service,
            self.quotas,
            self.settings,
            clock=self.clock,
        )

    @cached_property
    def queries(self) -> RunQueries:
        from workflows.services.queries import RunQueries

        return RunQueries(self.runs, self.run_index, self.run_outputs, self.registry, clock=self.clock)

    @cached_property
    def control_service(self) -> ControlService:
        from workflows.services.control import ControlService

        return ControlService(self.control, self.runs, self.settings)

    @cached_property
    def approval_inbox(self) -> ApprovalInbox:
        from workflows.services.approvals import ApprovalInbox

        return ApprovalInbox(self.run_index)

    @cached_property
    def artifact_service(self) -> ArtifactService:
        from workflows.services.artifacts import ArtifactService

        return ArtifactService(self.runs, self.artifacts)

    @cached_property
    def corpus_service(self) -> CorpusService:
        from workflows.services.corpus import CorpusService

        return CorpusService(self.corpus, self.settings)

    @cached_property
    def key_service(self) -> KeyService:
        from workflows.services.keys import KeyService

        return KeyService(self.api_keys, self.settings, clock=self.clock)

    @cached_property
    def secret_service(self) -> SecretService:
        from workflows.services.secrets import SecretService

        return SecretService(self.secrets)

    @cached_property
    def deliveries(self) -> DeliveryOperations:
        from workflows.services.deliveries import DeliveryOperations

        return DeliveryOperations(self.dlq, lambda: self.dlq_worker)

    @cached_property
    def websocket(self) -> Client:
        """The WebSocket stage's management client (PostToConnection, DeleteConnection)."""
        s = self.settings
        url = None
        if s.websocket_api_id:
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
            url = f"https://{s.websocket_api_id}.execute-api.{region}.amazonaws.com/{WEBSOCKET_STAGE}"
        return aws.client("apigatewaymanagementapi", endpoint_url=url)

    @cached_property
    def followers(self) -> FollowerStore:
        """The connections that follow runs: items of the quotas table (docs/storage.md)."""
        from workflows.adapters.followers import FollowersRepository

        return FollowersRepository(self.dynamodb, self.settings.quotas_table)

    @cached_property
    def connections(self) -> ConnectionPoster:
        from workflows.adapters.connections import ApiGatewayConnections

        return ApiGatewayConnections(self.websocket)

    @cached_property
    def following(self) -> RunFollowing:
        from workflows.domain.follow import MAX_FOLLOWERS_PER_RUN, MAX_FOLLOWERS_PER_TENANT, FollowLimits
        from workflows.services.follow import RunFollowing

        return RunFollowing(
            self.runs,
            self.run_outputs,
            self.followers,
            self.connections,
            FollowLimits(per_run=MAX_FOLLOWERS_PER_RUN, per_tenant=MAX_FOLLOWERS_PER_TENANT),
            clock=self.clock,
        )

    @cached_property
    def identity(self) -> Identity:
        from workflows.adapters.parameters import single_user_api_key
        from workflows.services.identity import Identity

        return Identity(
            lambda: self.api_keys,
            self.settings,
            lambda: single_user_api_key(self.settings),
            tokens=(lambda: self.token_verifier) if self.settings.jwt_issuer else None,
            clock=self.clock,
        )

    @cached_property
    def token_verifier(self) -> TokenVerifier:
        from workflows.adapters.jwks import JwksTokenVerifier

        s = self.settings
        audiences = tuple(a.strip() for a in s.jwt_audience.split(",") if a.strip())
        return JwksTokenVerifier(issuer=s.jwt_issuer, audiences=audiences, jwks_url=s.jwt_jwks_url)

    @cached_property
    def submission_quotas(self) -> SubmissionQuotas:
        from workflows.services.access import SubmissionQuotas

        return SubmissionQuotas(self.quotas, self.settings, clock=self.clock)
