"""Service settings: one pydantic model, read from the environment once per process.

A field comes from the environment variable `WORKFLOWS_<FIELD>` (in any case) unless it is
passed as a keyword argument, which wins; with neither it keeps its default. An empty variable
counts as unset: template.yaml declares every variable, empty where the default applies, so
that `sam local invoke --env-vars` can set it (SAM applies only declared variables). These are
the rules of pydantic-settings' BaseSettings with `env_prefix="WORKFLOWS_"` and
`env_ignore_empty=True` for fields like these (all scalars), applied here without importing
it: it loads every settings source it supports (dotenv, CLI, cloud secret stores) at import,
about 25 ms of every function's cold start.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from workflows.domain.principal import DEFAULT_ROLE_PERMISSIONS

ENV_PREFIX = "workflows_"
# DispatcherFunction's Timeout in template.yaml.
DISPATCHER_TIMEOUT_SEC = 120


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_default=True)

    # Storage (names come from template.yaml's outputs / function environment).
    runs_table: str = "workflows-runs"
    run_events_table: str = "workflows-run-events"
    definitions_table: str = "workflows-definitions"
    artifacts_table: str = "workflows-artifacts"
    webhook_dlq_table: str = "workflows-webhook-dlq"
    idempotency_table: str = "workflows-idempotency"
    api_keys_table: str = "workflows-api-keys"
    quotas_table: str = "workflows-quotas"
    schedules_table: str = "workflows-schedules"
    corpus_table: str = "workflows-corpus"
    # Following runs over the WebSocket API (docs/engine.md, "Following a run live"): the API's
    # id, of which the stage's management endpoint is made (https://<id>.execute-api.<region>.
    # amazonaws.com/v1). Unset, boto3's AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI names it (the
    # local gateway under `make run`).
    websocket_api_id: str = Field(default="", pattern=r"^[a-z0-9]{0,32}$")
    # Schedules of saved workflows: EventBridge Scheduler's group, the role it sends with, and
    # the dispatch queue's ARN as its target.
    schedule_group: str = ""
    scheduler_role_arn: str = ""
    dispatch_queue_arn: str = ""
    artifacts_bucket: str = "workflows-artifacts"
    dispatch_queue_url: str = ""

    # Authentication.
    auth_mode: Literal["single_user", "multi_user"] = "single_user"
    api_key: SecretStr | None = None
    # Deployed: the Secrets Manager secret the stack generates the key into, read when api_key
    # is unset; or, when a deployer names one (ApiKeyParameterName), an SSM SecureString instead.
    api_key_secret_arn: str | None = None
    api_key_parameter: str | None = None
    # Multi-user mode (docs/auth.md): roles -> permissions, given as JSON, e.g.
    # {"auditor": ["workflows.runs.read"]}; merged over the viewer/operator/admin defaults when
    # the settings load (a malformed value fails the load, not a request).
    role_permissions: dict[str, frozenset[str]] = Field(
        default_factory=lambda: dict(DEFAULT_ROLE_PERMISSIONS)
    )
    # Bearer JWTs (multi_user, docs/auth.md): accepted when an issuer is set, their signature
    # checked against its JWKS (`jwt_jwks_url`, else found by OpenID discovery), `iss` equal to
    # it, `aud` one of `jwt_audience` (comma-separated; unchecked when empty), `exp` not past.
    jwt_issuer: str = Field(default="", max_length=512)
    jwt_audience: str = Field(default="", max_length=1024)
    jwt_jwks_url: str = Field(default="", max_length=1024)
    # The claims that name the caller.
    jwt_tenant_claim: str = "tenant_id"
    jwt_user_claim: str = "sub"
    jwt_roles_claim: str = "roles"
    # Run-submission quotas per user (HTTP 429 with Retry-After and RateLimit-* headers).
    disable_quotas: bool = False
    quota_burst_per_min: int = Field(default=60, ge=1)
    quota_daily_per_user: int = Field(default=1000, ge=1)
    # Signals a tenant may send per minute (POST /signals and POST /runs/{id}/signals; HTTP 429).
    signal_quota_per_min: int = Field(default=600, ge=1)
    # Schedules (docs/schedules.md): how many a tenant may have, and in multi_user mode how many
    # runs its schedules may start per UTC day (a fire past it is skipped, and recorded so).
    max_schedules_per_tenant: int = Field(default=100, ge=1, le=10_000)
    schedule_fires_per_tenant_per_day: int = Field(default=10_000, ge=1)
    # Runs of one tenant executing at once (0 = unlimited); a run over it stays queued and
    # checks again after tenant_concurrency_recheck_sec.
    tenant_concurrency: int = Field(default=0, ge=0, le=5000)
    tenant_concurrency_recheck_sec: int = Field(default=5, ge=1, le=900)
    # Fair shares of the dispatcher (docs/architecture.md, "Fair shares"): each tenant's step
    # rate and burst (0 = no rate), and calls out (non-inline steps) in flight, per tenant and
    # across all tenants (0 = unbounded); a call over either bound checks again after
    # call_recheck_sec.
    tenant_steps_per_sec: float = Field(default=0, ge=0, le=100_000)
    tenant_steps_burst: int = Field(default=100, ge=1, le=100_000)
    tenant_calls_in_flight: int = Field(default=10, ge=0, le=1000)
    calls_in_flight: int = Field(default=25, ge=0, le=10_000)
    call_recheck_sec: float = Field(default=5, gt=0, le=900)

    # Request limits (docs/auth.md): a body's bytes, checked before it is read; and what one
    # field may store (run inputs, approval fields, corpus metadata, schedule inputs).
    max_body_bytes: int = Field(default=1024 * 1024, ge=4096, le=6 * 1024 * 1024)
    max_inputs_bytes: int = Field(default=64 * 1024, ge=1024, le=256 * 1024)
    max_decision_bytes: int = Field(default=16 * 1024, ge=1024, le=64 * 1024)
    max_document_metadata_bytes: int = Field(default=8 * 1024, ge=256, le=64 * 1024)

    # Definition limits.
    max_definition_bytes: int = Field(default=256 * 1024, ge=1024)
    max_steps: int = Field(default=50, ge=1)
    max_step_config_bytes: int = Field(default=32 * 1024, ge=256)
    # Steps side by side (docs/steps.md): items one map step may have, and how deep runs nest
    # (a parallel or map inside a branch or item, a child run's child run: each is one level).
    max_map_items: int = Field(default=10_000, ge=1, le=100_000)
    max_nesting: int = Field(default=5, ge=1, le=20)
    # How long a step waits for its children; then those still running are cancelled and the
    # step fails with `timeout`.
    child_wait_sec: int = Field(default=30 * 24 * 3600, ge=60, le=365 * 24 * 3600)

    # Engine.
    max_steps_per_run: int = Field(default=1000, ge=1, description="guard against endless loops")
    run_retention_days: int = Field(default=90, ge=1)
    # The dispatch queue's maxReceiveCount (the template passes its own parameter): an error on a
    # message's last receive fails its run with `internal_error` instead of leaving it to the
    # dead-letter queue; earlier receives are retried by SQS.
    dispatch_max_receive_count: int = Field(default=5, ge=1, le=1000)
    # The dispatch queue's visibility timeout (the template passes its parameter), and the
    # sweeper (docs/engine.md, "How runs end"): a run the service owes a next step, with no
    # activity for `sweep_grace_sec` past its last write or scheduled wake-up, is re-kicked;
    # after `sweep_max_rekicks` re-kicks it fails `stalled`.
    dispatch_visibility_timeout_sec: int = Field(default=720, ge=1, le=43_200)
    sweep_grace_sec: int = Field(default=900, ge=10, le=86_400)
    sweep_max_rekicks: int = Field(default=3, ge=1, le=100)
    # The sweeper's schedule period (SweeperFunction's rate): each sweep wakes the long waits
    # due in its own slot of this length (engine/sweep.py), at most half SQS's longest delay.
    sweep_period_sec: int = Field(default=300, ge=1, le=450)

    # LLM calls (`prompt` step with a `model`). The key is read from Secrets Manager when only
    # the ARN is set; Powertools caches it for a few minutes so rotation needs no cold start.
    llm_provider: Literal["openai", "bedrock"] = "openai"
    llm_base_url: str = ""
    llm_api_key: SecretStr | None = None
    llm_api_key_secret_arn: str | None = None
    llm_timeout_sec: float = Field(default=60, gt=0, le=900)

    # Retrieval (`rag_search` step).
    retrieval_url: str = ""
    retrieval_api_key: SecretStr | None = None
    retrieval_timeout_sec: float = Field(default=15, gt=0, le=900)
    bedrock_knowledge_base_id: str = ""

    # Tenants' secrets for `{{ secrets.NAME }}` (docs/steps.md): SSM Parameter Store SecureStrings
    # at `<secrets_prefix>/<tenant_id>/<NAME>`.
    secrets_prefix: str = Field(default="/workflows/secrets", pattern=r"^/[A-Za-z0-9_.\-/]{1,200}$")

    # Webhook delivery and its dead-letter table (defaults from the original module).
    webhook_allowlist: str = ""
    webhook_denylist: str = ""
    # Egress policy (docs/webhooks.md): destination ports ("80,443", or "*" for any) and redirects,
    # which are refused unless enabled; every followed hop is checked like the first URL.
    webhook_allowed_ports: str = "80,443"
    webhook_follow_redirects: bool = False
    webhook_max_redirects: int = Field(default=3, ge=0, le=10)
    # Standard Webhooks signing secrets, comma-separated, newest first (`whsec_new,whsec_old`
    # during a rotation: every delivery carries one signature per secret); unsigned when unset.
    webhook_secret: SecretStr | None = None
    # Deployed: a Secrets Manager secret holding the comma-separated `whsec_...` list (newest
    # first), read on first use and cached; used when webhook_secret is unset.
    webhook_secret_arn: str = ""
    webhook_dlq_enabled: bool = True
    webhook_dlq_base_sec: float = Field(default=30, gt=0)
    webhook_dlq_max_backoff_sec: float = Field(default=3600, gt=0)
    webhook_dlq_max_attempts: int = Field(default=8, ge=1)
    webhook_dlq_interval_sec: float = Field(default=15, gt=0)
    webhook_dlq_batch: int = Field(default=25, ge=1, le=100)
    webhook_dlq_timeout_sec: float = Field(default=10, gt=0)
    # Deliveries of one DLQ pass in flight at once (due rows are taken one tenant at a time).
    webhook_dlq_concurrency: int = Field(default=4, ge=1, le=32)
    # Of those, one tenant's at most: a hanging receiver holds this many slots, not all. A value
    # above webhook_dlq_concurrency acts as it (clamped, not refused, so lowering the pool alone
    # stays a valid configuration).
    webhook_dlq_tenant_concurrency: int = Field(default=2, ge=1, le=32)

    @model_validator(mode="after")
    def _sweep_after_redelivery(self) -> Settings:
        # A kick whose processing failed comes back after the visibility timeout and may then
        # run for the dispatcher's whole timeout: a sweep sooner than that would re-kick a run
        # that is not lost and do its work twice.
        floor = self.dispatch_visibility_timeout_sec + DISPATCHER_TIMEOUT_SEC
        if self.sweep_grace_sec <= floor:
            raise ValueError(
                f"WORKFLOWS_SWEEP_GRACE_SEC ({self.sweep_grace_sec}) must exceed the dispatch queue's "
                f"visibility timeout plus the dispatcher's timeout ({floor} s): a failed kick is "
                "retried only after them, and the sweeper must not re-kick a run before that"
            )
        return self

    @field_validator("role_permissions", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict) or not all(
            isinstance(v, (list, tuple, set, frozenset)) and all(isinstance(p, str) for p in v)
            for v in value.values()
        ):
            raise ValueError('WORKFLOWS_ROLE_PERMISSIONS must be {"role": ["permission", ...]}')
        return {**DEFAULT_ROLE_PERMISSIONS, **{str(role): frozenset(perms) for role, perms in value.items()}}

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, values: Any) -> Any:
        """Fields not given as arguments come from `WORKFLOWS_<FIELD>` environment variables."""
        if not isinstance(values, dict):
            return values
        environment: dict[str, Any] = {}
        for name, value in os.environ.items():
            field = name.lower().removeprefix(ENV_PREFIX)
            if field != name.lower() and field in cls.model_fields and value != "":
                environment[field] = value
        return {**environment, **values}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
