"""7. The sweeper's reads: one sweep with 10,000 finished runs (2,000 with --quick) and 10 active
runs whose kicks were lost. The sweeper reads the sparse index of active runs only, so what it
reads must not grow with the finished ones: its items read are counted by the meter, against
two per active run (its index entry and its run item)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench import common
from bench.meter import Meter

ACTIVE = 10


def run(quick: bool = False) -> dict[str, Any]:
    import boto3

    from workflows.adapters.runs import stored_run_item
    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.principal import ALL_PERMISSIONS, Principal
    from workflows.domain.run import Run, RunStatus
    from workflows.roots.parts import Parts
    from workflows.settings import get_settings

    finished = 2_000 if quick else 10_000
    now = datetime.now(UTC)
    with common.moto_resources() as env:
        raw = boto3.session.Session().client("dynamodb")
        meter = Meter(common.table_properties(env), raw)
        meter.install()
        try:
            parts = Parts(get_settings())
            principal = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
            definition = WorkflowDefinition.model_validate(
                {"name": "swept", "steps": [{"id": "s1", "type": "log", "config": {"message": "x"}}]}
            )
            with meter.paused():
                stamp = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                items = [
                    stored_run_item(  # shaped as the repository writes
                        Run(
                            run_id=f"00000000-0000-4000-8000-{n:012d}",
                            tenant_id="default",
                            owner_id="admin",
                            definition_version=1,
                            definition_name="swept",
                            status=RunStatus.SUCCEEDED,
                            created_at=stamp,
                            updated_at=stamp,
                            ended_at=stamp,
                        ),
                        expires_at=int((now + timedelta(days=90)).timestamp()),
                    )
                    for n in range(finished)
                ]
                for start in range(0, len(items), 25):
                    batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
                    raw.batch_write_item(RequestItems={env["WORKFLOWS_RUNS_TABLE"]: batch})
                for _ in range(ACTIVE):
                    parts.run_service.submit(principal, definition, {})
                parts.sqs.purge_queue(QueueUrl=env["WORKFLOWS_DISPATCH_QUEUE_URL"])  # the kicks are lost
            later = now + timedelta(seconds=parts.settings.sweep_grace_sec + 60)
            sweeper = Parts(get_settings(), clock=lambda: later).sweeper
            meter.reset()
            report = sweeper.sweep()
            counts = meter.snapshot()
        finally:
            meter.uninstall()
    return {
        "finished_runs": finished,
        "active_runs": ACTIVE,
        "rekicked": report.rekicked,
        "items_read": counts["items_read"],
        "requests": counts.get("dynamodb.requests", 0),
        "rru": counts.get("dynamodb.rru", 0),
        "wru": counts.get("dynamodb.wru", 0),
        "items_read_target": 2 * ACTIVE,
    }
