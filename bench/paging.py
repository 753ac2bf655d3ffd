"""3. Event paging: what one page of 100 events costs at history sizes 100, 1,000 and 10,000.

The page is requested through the API function's handler; the meter counts the DynamoDB
requests, the items they evaluate and the read units. Histories are written directly (batched,
unmetered) in the shape the run repository writes.
"""

from __future__ import annotations

import json
from typing import Any

from bench import common
from bench.meter import Meter

SIZES = (100, 1_000, 10_000)
PAGE = 100


def _seed(raw: Any, table: str, runs_table: str, pk: str, count: int) -> None:
    """`count` events, two per commit item (a step's step_started + step_completed)."""
    from workflows.adapters.run_items import events_item
    from workflows.domain.run import RunEvent

    events = [
        RunEvent(
            event_seq=seq,
            event_type="step_started" if seq % 2 else "step_completed",
            payload={"output": {"message": f"step {seq} for Ada", "level": "info"}, "attempt": 1},
            step_id=f"s{(seq + 1) // 2}",
            created_at="2026-11-25T12:00:00.000000Z",
        )
        for seq in range(1, count + 1)
    ]
    items = [events_item(pk, events[i : i + 2], expires_at=1_800_000_000) for i in range(0, count, 2)]
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        raw.batch_write_item(RequestItems={table: batch})
    raw.update_item(
        TableName=runs_table,
        Key={"pk": {"S": pk}, "sk": {"S": "RUN"}},
        UpdateExpression="SET last_event_seq = :n",
        ExpressionAttributeValues={":n": {"N": str(count)}},
    )


def run(quick: bool = False) -> dict[str, Any]:
    import boto3

    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.principal import ALL_PERMISSIONS, Principal
    from workflows.roots import api as api_root

    result: dict[str, Any] = {}
    with common.moto_resources() as env:
        raw = boto3.session.Session().client("dynamodb")
        meter = Meter(common.table_properties(env), raw)
        meter.install()
        try:
            api = common.load_function("api")
            container = api_root.parts()
            principal = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
            definition = WorkflowDefinition.model_validate(
                {"name": "paging", "steps": [{"id": "s1", "type": "log", "config": {"message": "x"}}]}
            )
            runs = {}
            with meter.paused():
                for size in SIZES:
                    run = container.run_service.submit(principal, definition, {})
                    _seed(
                        raw,
                        env["WORKFLOWS_RUN_EVENTS_TABLE"],
                        env["WORKFLOWS_RUNS_TABLE"],
                        f"default#{run.run_id}",
                        size,
                    )
                    runs[size] = run.run_id
            for size, run_id in runs.items():
                figures = {}
                for label, since in (("first", 0), ("last", size - PAGE)):
                    path = f"/api/v1/workflows/runs/{run_id}/events"
                    event = common.api_event("GET", path, query={"since": str(since), "limit": str(PAGE)})
                    meter.reset()
                    response = api.handler(event, common.lambda_context("ApiFunction", 1024, 29_000))
                    counts = meter.snapshot()
                    body = json.loads(response["body"])
                    figures[label] = {
                        "status": response["statusCode"],
                        "events_returned": len(body.get("events", [])),
                        "items_read": counts["items_read"],
                        "requests": counts.get("dynamodb.requests", 0),
                        "rru": counts.get("dynamodb.rru", 0),
                    }
                result[f"history_{size}"] = figures
        finally:
            meter.uninstall()
    small, large = result[f"history_{SIZES[0]}"]["first"], result[f"history_{SIZES[-1]}"]["first"]
    result["items_read_ratio"] = large["items_read"] / small["items_read"]
    result["requests_ratio"] = large["requests"] / small["requests"]
    result["rru_ratio"] = large["rru"] / small["rru"]
    last_small, last_large = result[f"history_{SIZES[0]}"]["last"], result[f"history_{SIZES[-1]}"]["last"]
    result["last_page_items_read_ratio"] = last_large["items_read"] / last_small["items_read"]
    return result
