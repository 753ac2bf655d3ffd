"""Who may do what: roles -> permissions, ownership, approval assignees, submission quotas.

Rules (docs/auth.md):
- Another tenant's objects are never found: every key includes the tenant.
- Within a tenant, a user reads their own runs and workflows; `workflows.runs.read` reads all
  of them. Reading someone else's without it answers 403.
- Control actions need `workflows.runs.control`; approve / reject also accept the approval
  step's named `assignees`.
- Changing a workflow (new version, delete) is for its owner or `workflows.runs.control`.
- Submitting ad hoc, or saving, a definition that references `{{ secrets.NAME }}` needs
  `workflows.secrets.use`; running a saved one needs only what running needs (whoever saved it
  had the permission and meant the secrets to be used).
- A run starts a saved workflow (a `workflow` step) only if its owner could run that workflow
  themselves: theirs, or any with `workflows.runs.read` as they held it when submitting the run.
  Checked when the step starts the child, and on submission for the ids a definition names.
"""

from __future__ import annotations

from pydantic import ValidationError

from workflows.clock import Clock, system_clock
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import (
    RUNS_CONTROL,
    RUNS_READ,
    SECRETS_USE,
    Principal,
)
from workflows.domain.quotas import WindowCount
from workflows.domain.run import Run
from workflows.errors import Forbidden, NotFound, QuotaExceeded, WorkflowForbidden
from workflows.ports import DefinitionStore, QuotaStore, RunLog
from workflows.services.validation import started_workflows
from workflows.settings import Settings
from workflows.steps.registry import StepRegistry, parse_config


def can_read_run(principal: Principal, run: Run) -> bool:
    return principal.can(RUNS_READ) or run.owner_id == principal.user_id


def check_read_run(principal: Principal, run: Run) -> Run:
    if not can_read_run(principal, run):
        raise Forbidden(f"missing permission {RUNS_READ} (the run belongs to another user)")
    return run


def readable_run(runs: RunLog, principal: Principal, run_id: str) -> Run:
    """The run, if the caller may read it: 404 for another tenant's, 403 for another user's."""
    return check_read_run(principal, runs.get(principal.tenant_id, run_id))


def can_read_definition(principal: Principal, owner: str) -> bool:
    """Whether the caller may read, and so run, a saved workflow `owner` created."""
    return principal.can(RUNS_READ) or owner == principal.user_id


def check_read_definition(principal: Principal, owner: str) -> None:
    if not can_read_definition(principal, owner):
        raise Forbidden(f"missing permission {RUNS_READ} (the workflow belongs to another user)")


def check_started_workflows(
    principal: Principal,
    definition: WorkflowDefinition,
    registry: StepRegistry,
    definitions: DefinitionStore,
    *,
    field_prefix: str = "",
) -> None:
    """WorkflowForbidden, naming each field, if a `workflow` step of the definition names a saved
    workflow the caller may not run (another user's, without `workflows.runs.read`): the run
    would only fail at that step. One read per workflow named, and none for a caller who may run
    them all. A workflow that is not found is left to the step (`workflow_not_found`)."""
    if principal.can(RUNS_READ):
        return
    owners: dict[str, str | None] = {}
    refused: list[dict[str, str]] = []
    for where, step, workflow_id in started_workflows(definition, registry):
        if workflow_id not in owners:
            try:
                owners[workflow_id] = definitions.get_head(principal.tenant_id, workflow_id).created_by
            except NotFound:
                owners[workflow_id] = None
        owner = owners[workflow_id]
        if owner is not None and not can_read_definition(principal, owner):
            refused.append(
                {
                    "field": f"{field_prefix}{where}.config.workflow_id",
                    "message": f"step '{step.id}' starts workflow '{workflow_id}', which belongs to"
                    f" another user: missing permission {RUNS_READ}",
                }
            )
    if refused:
        raise WorkflowForbidden(f"{refused[0]['field']}: {refused[0]['message']}", details=refused)


def run_owner(run: Run, permissions: list[str] | None) -> Principal:
    """Who a run acts for: its owner, with `permissions` (as they held them when submitting the
    run; none when they are not known)."""
    return Principal(tenant_id=run.tenant_id, user_id=run.owner_id, permissions=frozenset(permissions or ()))


def check_change_definition(principal: Principal, owner: str) -> None:
    if not (principal.can(RUNS_CONTROL) or owner == principal.user_id):
        if principal.can(RUNS_READ):
            raise Forbidden(f"missing permission {RUNS_CONTROL} (the workflow belongs to another user)")
        raise Forbidden(f"missing permission {RUNS_READ} (the workflow belongs to another user)")


def check_decide(runs: RunLog, principal: Principal, run_id: str, step_id: str) -> None:
    """approve / reject: `workflows.runs.control`, or a named assignee of the approval step."""
    if principal.can(RUNS_CONTROL):
        return
    _, definition = runs.get_with_definition(principal.tenant_id, run_id)  # 404 if not ours
    try:
        step = definition.step(step_id)
    except KeyError:
        step = None
    assignees = (step.config.get("assignees") if step is not None else None) or []
    if principal.user_id not in assignees:
        raise Forbidden(f"missing permission {RUNS_CONTROL} (and not an assignee of this step)")


def secret_fields(definition: WorkflowDefinition, registry: StepRegistry) -> list[str]:
    """The templated fields that reference `secrets` (`steps[0].config.headers.Authorization`).

    A step whose type or config is invalid is skipped: validation refuses it anyway."""
    if "secrets" not in definition.canonical_json():
        return []  # no template can name them: skip parsing the templates
    # Imported here: jinja2 stays off the cold-start path until a definition needs it.
    from workflows.templating import variables

    found: list[str] = []
    for index, step in enumerate(definition.steps):
        step_type = registry.get(step.type)
        if step_type is None:
            continue
        try:
            config = parse_config(step_type, step.config)
        except ValidationError:
            continue
        for template in step_type.templates(config):
            if "secrets" in variables(template.source):
                found.append(f"steps[{index}].config.{template.path}")
    return found


def check_secret_use(
    principal: Principal, definition: WorkflowDefinition, registry: StepRegistry, *, field_prefix: str = ""
) -> None:
    """Forbidden, naming each field, if the definition references secrets and the caller may
    not use them."""
    if principal.can(SECRETS_USE):
        return
    fields = secret_fields(definition, registry)
    if not fields:
        return
    reason = f"references a secret: missing permission {SECRETS_USE}"
    raise Forbidden(
        f"{field_prefix}{fields[0]} {reason}",
        details=[{"field": f"{field_prefix}{field}", "message": reason} for field in fields],
    )


# ---- submission quotas -------------------------------------------------------------------


def rate_limit_headers(count: WindowCount) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(count.limit),
        "RateLimit-Remaining": str(count.remaining),
        "RateLimit-Reset": str(count.reset_seconds),
    }


class SubmissionQuotas:
    """Run submissions counted per tenant and user, per minute and per UTC day (docs/auth.md)."""

    def __init__(self, quotas: QuotaStore, settings: Settings, *, clock: Clock = system_clock) -> None:
        self._quotas = quotas
        self._settings = settings
        self._clock = clock

    def charge(self, principal: Principal) -> dict[str, str]:
        """Count one submission against the caller's per-minute and daily quotas.

        Answers the RateLimit-* headers of the window closest to its limit; raises QuotaExceeded
        (429) when a window is full. A submission refused by the daily cap is given back to the
        minute window, so a refusal costs nothing.
        """
        settings = self._settings
        # Quotas share capacity between users and tenants; a single-user deployment has neither.
        if settings.disable_quotas or settings.auth_mode != "multi_user":
            return {}
        now = self._clock()
        tenant, user = principal.tenant_id, principal.user_id
        minute = self._quotas.count(tenant, user, "min", settings.quota_burst_per_min, now)
        if not minute.allowed:
            raise _exceeded(minute, "per-minute submission quota")
        day = self._quotas.count(tenant, user, "day", settings.quota_daily_per_user, now)
        if not day.allowed:
            self._quotas.uncount(tenant, user, "min", now)
            raise _exceeded(day, "daily submission quota")
        tighter = day if day.remaining < minute.remaining else minute
        return rate_limit_headers(tighter)


def _exceeded(count: WindowCount, what: str) -> QuotaExceeded:
    headers = {"Retry-After": str(max(1, count.reset_seconds)), **rate_limit_headers(count)}
    return QuotaExceeded(
        f"{what} of {count.limit} used up; retry in {count.reset_seconds} s",
        headers=headers,
        details=[{"field": "quota", "message": what}],
    )
