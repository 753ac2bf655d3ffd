"""Who may do what: roles -> permissions, ownership, approval assignees, submission quotas.

Rules (docs/auth.md):
- Another tenant's objects are never found: every key includes the tenant.
- Within a tenant, a user reads their own runs and workflows; `workflows.runs.read` reads all
  of them. Reading someone else's without it answers 403.
- Control actions need `workflows.runs.control`; approve / reject also accept the approval
  step's named `assignees`.
- Changing a workflow (new version, delete) is for its owner or `workflows.runs.control`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from workflows.adapters.quotas import WindowCount
from workflows.domain.principal import (
    DEFAULT_ROLE_PERMISSIONS,
    RUNS_CONTROL,
    RUNS_READ,
    Principal,
)
from workflows.domain.run import Run
from workflows.errors import Forbidden, QuotaExceeded


@lru_cache(maxsize=8)
def role_permissions(configured: str) -> dict[str, frozenset[str]]:
    """The default roles with the JSON setting's roles merged over them."""
    mapping = dict(DEFAULT_ROLE_PERMISSIONS)
    if configured.strip():
        raw = json.loads(configured)
        if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in raw.values()
        ):
            raise ValueError('WORKFLOWS_ROLE_PERMISSIONS must be {"role": ["permission", ...]}')
        mapping.update({str(role): frozenset(perms) for role, perms in raw.items()})
    return mapping


def can_read_run(principal: Principal, run: Run) -> bool:
    return principal.can(RUNS_READ) or run.owner_id == principal.user_id


def check_read_run(principal: Principal, run: Run) -> Run:
    if not can_read_run(principal, run):
        raise Forbidden(f"missing permission {RUNS_READ} (the run belongs to another user)")
    return run


def readable_run(c: Any, principal: Principal, run_id: str) -> Run:
    """The run, if the caller may read it: 404 for another tenant's, 403 for another user's."""
    run: Run = c.runs.get(principal.tenant_id, run_id)
    return check_read_run(principal, run)


def check_read_definition(principal: Principal, owner: str) -> None:
    if not (principal.can(RUNS_READ) or owner == principal.user_id):
        raise Forbidden(f"missing permission {RUNS_READ} (the workflow belongs to another user)")


def check_change_definition(principal: Principal, owner: str) -> None:
    if not (principal.can(RUNS_CONTROL) or owner == principal.user_id):
        if principal.can(RUNS_READ):
            raise Forbidden(f"missing permission {RUNS_CONTROL} (the workflow belongs to another user)")
        raise Forbidden(f"missing permission {RUNS_READ} (the workflow belongs to another user)")


def check_decide(c: Any, principal: Principal, run_id: str, step_id: str) -> None:
    """approve / reject: `workflows.runs.control`, or a named assignee of the approval step."""
    if principal.can(RUNS_CONTROL):
        return
    _, definition = c.runs.get_with_definition(principal.tenant_id, run_id)  # 404 if not ours
    try:
        step = definition.step(step_id)
    except KeyError:
        step = None
    assignees = (step.config.get("assignees") if step is not None else None) or []
    if principal.user_id not in assignees:
        raise Forbidden(f"missing permission {RUNS_CONTROL} (and not an assignee of this step)")


# ---- submission quotas -------------------------------------------------------------------


def rate_limit_headers(count: WindowCount) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(count.limit),
        "RateLimit-Remaining": str(count.remaining),
        "RateLimit-Reset": str(count.reset_seconds),
    }


def charge_submission(c: Any, principal: Principal) -> dict[str, str]:
    """Count one run submission against the caller's per-minute and daily quotas.

    Answers the RateLimit-* headers of the window closest to its limit; raises QuotaExceeded
    (429) when a window is full. A submission refused by the daily cap is given back to the
    minute window, so a refusal costs nothing.
    """
    settings = c.settings
    # Quotas share capacity between users and tenants; a single-user deployment has neither.
    if settings.disable_quotas or settings.auth_mode != "multi_user":
        return {}
    now = c.clock()
    tenant, user = principal.tenant_id, principal.user_id
    minute = c.quotas.count(tenant, user, "min", settings.quota_burst_per_min, now)
    if not minute.allowed:
        raise _exceeded(minute, "per-minute submission quota")
    day = c.quotas.count(tenant, user, "day", settings.quota_daily_per_user, now)
    if not day.allowed:
        c.quotas.uncount(tenant, user, "min", now)
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
