"""A `workflow` step starts only what the run's owner could run themselves (multi-user mode), on
the in-memory fakes: their own workflows, or any of the tenant's with `workflows.runs.read` as they
held it when submitting the run; a child run acts with its root run's owner and permissions.
Otherwise the step fails `workflow_forbidden` (not retried) and no child starts. Submissions are
checked too: an ad hoc definition, or a saved one being run, whose `workflow` step names another
user's workflow is refused with 403 `workflow_forbidden` naming the field (docs/auth.md, rule 4)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import APPS, FakeClock, drain, make_fake
from tests.fakes import FakeRunLog
from tests.faults import unwrapped
from workflows.domain.definition import WorkflowDefinition
from workflows.domain.principal import ALL_PERMISSIONS, RUNS_CONTROL, RUNS_READ, Principal
from workflows.domain.run import EventType, Run, RunStatus
from workflows.roots.parts import Parts
from workflows.services.schedules import schedule_principal

T = "t1"
P = "/api/v1/workflows"
# No role: runs only their own workflows (docs/auth.md, "Owners read their own").
OSCAR = Principal(tenant_id=T, user_id="oscar", permissions=frozenset())
BOB = Principal(tenant_id=T, user_id="bob", permissions=frozenset())
VICTOR = Principal(tenant_id=T, user_id="victor", permissions=frozenset({RUNS_READ}))
OLIVIA = Principal(tenant_id=T, user_id="olivia", permissions=frozenset({RUNS_READ, RUNS_CONTROL}))
Step = dict[str, Any]


def _log(step_id: str, message: str = "ok") -> Step:
    return {"id": step_id, "type": "log", "config": {"message": message}}


def _workflow(step_id: str, workflow_id: str) -> Step:
    return {"id": step_id, "type": "workflow", "config": {"workflow_id": workflow_id}}


def _definition(*steps: Step, name: str = "caller") -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"name": name, "steps": list(steps)})


@pytest.fixture
def parts(clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user")


def _save(parts: Parts, owner: Principal, *steps: Step, workflow_id: str | None = None) -> str:
    """A saved workflow `owner` created: its id."""
    workflow_id = workflow_id or str(uuid.uuid4())
    parts.definitions.create(T, owner.user_id, workflow_id, _definition(*steps, name=f"wf-{workflow_id}"))
    return workflow_id


def _store(parts: Parts) -> FakeRunLog:
    store = unwrapped(parts.runs)
    assert isinstance(store, FakeRunLog)
    return store


def _run(parts: Parts, run_id: str) -> Run:
    return parts.runs.get(T, run_id)


def _runs_of(parts: Parts, workflow_id: str) -> list[Run]:
    with _store(parts).lock:
        return [run for run in _store(parts).runs.values() if run.workflow_id == workflow_id]


def _only_child(parts: Parts, run_id: str) -> Run:
    with _store(parts).lock:
        [child] = [run for run in _store(parts).runs.values() if run.parent_run_id == run_id]
    return child


def _error_code(run: Run) -> str | None:
    return run.error["code"] if run.error else None


# ---- when the step starts the child ----------------------------------------------------------


@pytest.mark.parametrize("where", ["run", "child_run"])
def test_a_workflow_of_another_user_the_owner_may_not_run_fails_the_step_workflow_forbidden(
    parts: Parts, where: str
) -> None:
    # Given Oscar (no role) whose run reaches a step naming Bob's workflow: in his own run (which
    # named it before Bob created it: a workflow not found is the step's to report), or in his
    # workflow's child run, after an operator added a version of it calling Bob's
    bobs = str(uuid.uuid4())
    if where == "run":
        submitted = parts.run_service.submit(OSCAR, _definition(_log("first"), _workflow("call", bobs)), {})
        _save(parts, BOB, _log("bobs"), workflow_id=bobs)
    else:
        _save(parts, BOB, _log("bobs"), workflow_id=bobs)
        oscars = _save(parts, OSCAR, _log("harmless"))
        submitted = parts.run_service.submit(OSCAR, _definition(_workflow("mine", oscars)), {})
        parts.definition_service.add_version(
            OLIVIA, oscars, {"name": "changed", "steps": [_workflow("call", bobs)]}
        )

    # When it runs
    drain(parts)

    # Then that step fails workflow_forbidden, naming the workflow, once (not retried), and
    # nothing of Bob's ran
    caller = submitted if where == "run" else _only_child(parts, submitted.run_id)
    failed = _run(parts, caller.run_id)
    assert failed.status == RunStatus.FAILED
    assert failed.error is not None
    assert (failed.error["code"], failed.error["step_id"]) == ("workflow_forbidden", "call")
    assert bobs in failed.error["message"]
    events = [e.event_type for e in parts.runs.list_events(T, caller.run_id, limit=1000).events]
    assert EventType.STEP_RETRYING.value not in events
    assert _runs_of(parts, bobs) == []
    if where == "child_run":
        assert _error_code(_run(parts, submitted.run_id)) == "child_failed"


def test_an_owner_without_a_role_starts_their_own_workflow(parts: Parts) -> None:
    oscars = _save(parts, OSCAR, _log("hello", "from oscar"))
    run = parts.run_service.submit(OSCAR, _definition(_workflow("call", oscars)), {})
    drain(parts)

    assert _run(parts, run.run_id).status == RunStatus.SUCCEEDED
    assert [child.owner_id for child in _runs_of(parts, oscars)] == ["oscar"]


def test_the_read_permission_held_at_submission_starts_another_users_workflow_at_every_depth(
    parts: Parts,
) -> None:
    # Given Victor (workflows.runs.read) whose run starts Oscar's workflow, which calls Bob's
    bobs = _save(parts, BOB, _log("bobs", "from bob"))
    oscars = _save(parts, OSCAR, _workflow("call_bob", bobs))
    run = parts.run_service.submit(VICTOR, _definition(_workflow("call_oscar", oscars)), {})

    # When it runs: Oscar's child run (Victor's) starts Bob's workflow
    drain(parts)

    # Then the permission Victor's run recorded applies to its child run too
    assert _run(parts, run.run_id).status == RunStatus.SUCCEEDED, _run(parts, run.run_id).error
    assert _run(parts, run.run_id).owner_permissions == [RUNS_READ]
    [grandchild] = _runs_of(parts, bobs)
    assert (grandchild.owner_id, grandchild.depth, grandchild.status) == ("victor", 2, RunStatus.SUCCEEDED)


def test_a_scheduled_run_starts_any_workflow_of_the_tenant(parts: Parts) -> None:
    # A schedule's runs act as the schedule, which may read every workflow (services/schedules.py)
    bobs = _save(parts, BOB, _log("bobs"))
    oscars = _save(parts, OSCAR, _workflow("call_bob", bobs))
    run = parts.definition_service.submit_run(schedule_principal(T, str(uuid.uuid4())), oscars, {})
    drain(parts)

    assert _run(parts, run.run_id).status == RunStatus.SUCCEEDED, _run(parts, run.run_id).error
    assert len(_runs_of(parts, bobs)) == 1


@pytest.mark.parametrize(("owner", "status"), [(OSCAR, RunStatus.SUCCEEDED), (BOB, RunStatus.FAILED)])
def test_a_run_stored_before_permissions_were_recorded_starts_only_its_owners_workflows(
    parts: Parts, owner: Principal, status: RunStatus
) -> None:
    # Given a run of Oscar's stored without the permissions he held, as runs were before (put
    # in place over a run Victor submitted, which the submission check lets through)
    started = _save(parts, owner, _log("child"))
    run = parts.run_service.submit(VICTOR, _definition(_workflow("call", started)), {})
    with _store(parts).lock:
        stored = _store(parts).runs[(T, run.run_id)]
        _store(parts).runs[(T, run.run_id)] = stored.model_copy(
            update={"owner_id": "oscar", "owner_permissions": None}
        )

    drain(parts)

    ended = _run(parts, run.run_id)
    assert ended.status == status
    assert _error_code(ended) == (None if status == RunStatus.SUCCEEDED else "workflow_forbidden")


def test_single_user_mode_records_no_permissions_and_checks_none(clock: FakeClock) -> None:
    parts = make_fake(clock)  # single_user: one caller, every permission
    admin = Principal(tenant_id=T, user_id="admin", permissions=ALL_PERMISSIONS)
    elsewhere = _save(parts, BOB, _log("child"))  # a workflow of another user id, as stored
    run = parts.run_service.submit(admin, _definition(_workflow("call", elsewhere)), {})
    drain(parts)

    assert run.owner_permissions is None
    assert _run(parts, run.run_id).status == RunStatus.SUCCEEDED


def test_multi_user_mode_records_the_owners_permissions_sorted(parts: Parts) -> None:
    run = parts.run_service.submit(OLIVIA, _definition(_log("hi")), {})
    assert _run(parts, run.run_id).owner_permissions == sorted([RUNS_CONTROL, RUNS_READ])
    assert parts.run_service.submit(OSCAR, _definition(_log("hi")), {}).owner_permissions == []


# ---- when a run is submitted -------------------------------------------------------------------


class Api:
    """The tenant's users, each with a key for their roles."""

    def __init__(self, parts: Parts, client: TestClient) -> None:
        self.parts = parts
        self.client = client
        roles = {"oscar": [], "bob": [], "victor": ["viewer"]}
        self.keys = {who: parts.api_keys.create(T, who, granted)[0] for who, granted in roles.items()}

    def __call__(self, who: str, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, P + path, json=body, headers={"X-API-KEY": self.keys[who]})

    def save(self, who: str, *steps: Step) -> str:
        created = self(who, "POST", "", {"name": f"{who}-{uuid.uuid4().hex[:8]}", "steps": list(steps)})
        assert created.status_code == 201, created.text
        workflow_id: str = created.json()["workflow_id"]
        return workflow_id


@pytest.fixture
def api(parts: Parts) -> Iterator[Api]:
    with APPS.lend(parts) as app, TestClient(app, raise_server_exceptions=False) as client:
        yield Api(parts, client)


def _parallel(step_id: str, **branches: list[Step]) -> Step:
    return {"id": step_id, "type": "parallel", "config": {"branches": branches}}


def test_an_ad_hoc_run_naming_another_users_workflow_is_refused_before_anything_happens(api: Api) -> None:
    bobs = api.save("bob", _log("bobs"))
    definition = {"name": "adhoc", "steps": [_parallel("both", inner=[_workflow("call", bobs)])]}

    refused = api("oscar", "POST", "/runs", {"definition": definition})

    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "workflow_forbidden"
    assert [d["field"] for d in error["details"]] == [
        "definition.steps[0].config.branches.inner[0].config.workflow_id"
    ]
    assert bobs in error["message"]
    assert api("oscar", "GET", "/runs").json()["runs"] == []
    assert not any("#oscar#" in counter for counter in api.parts.quotas.counters)  # type: ignore[attr-defined]


def test_running_a_saved_workflow_that_names_another_users_workflow_is_refused(api: Api) -> None:
    bobs = api.save("bob", _log("bobs"))
    oscars = api.save("oscar", _log("first"), _workflow("call", bobs))

    refused = api("oscar", "POST", f"/{oscars}/runs", {"inputs": {}})

    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "workflow_forbidden"
    assert [d["field"] for d in error["details"]] == ["steps[1].config.workflow_id"]
    assert api("oscar", "GET", "/runs").json()["runs"] == []


@pytest.mark.parametrize("case", ["own", "unknown", "readable"])
def test_a_run_naming_a_workflow_its_submitter_may_run_or_that_is_not_found_is_accepted(
    api: Api, case: str
) -> None:
    # An unknown id is the step's to report when it runs (workflow_not_found)
    who, named = {
        "own": ("oscar", api.save("oscar", _log("mine"))),
        "unknown": ("oscar", str(uuid.uuid4())),
        "readable": ("victor", api.save("bob", _log("bobs"))),
    }[case]
    definition = {"name": "adhoc", "steps": [_workflow("call", named)]}

    accepted = api(who, "POST", "/runs", {"definition": definition})

    assert accepted.status_code == 202, accepted.text
    drain(api.parts)
    run = api(who, "GET", f"/runs/{accepted.json()['run_id']}").json()
    assert run["status"] == ("failed" if case == "unknown" else "succeeded"), run
