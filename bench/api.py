"""5. API overhead: the API function's handler in-process against minimal FastAPI routes.

All handlers are Mangum-wrapped FastAPI apps called with API Gateway HTTP API (2.0) events, in
the same process, interleaved. Two baselines:
- `same_reads`: a minimal route making the same DynamoDB requests as ours with a plain boto3
  client (GET run: one GetItem; GET events: a GetItem and a one-page Query) and returning the raw
  items as JSON: what the framework and the data access cost, so the ratio is our code's overhead;
- `empty`: a minimal route that returns a constant (no AWS at all).
AWS is moto in-process, so the absolute times are not DynamoDB latencies.
"""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

from bench import common

PREFIX = "/api/v1/workflows"


def _baseline_app(client: Any, runs_table: str, events_table: str) -> Any:
    import json

    from fastapi import FastAPI, Response
    from mangum import Mangum

    app = FastAPI()

    def get_item(pk: str) -> dict[str, Any]:
        item: dict[str, Any] = client.get_item(
            TableName=runs_table, Key={"pk": {"S": pk}, "sk": {"S": "RUN"}}, ConsistentRead=True
        ).get("Item", {})
        return item

    # Raw JSON responses: the baseline pays no response-model validation or encoder walk.
    @app.get(PREFIX + "/runs/{run_id}")
    def run(run_id: str) -> Response:
        return Response(
            json.dumps(get_item(f"default#{run_id}"), default=repr), media_type="application/json"
        )

    @app.get(PREFIX + "/runs/{run_id}/events")
    def events(run_id: str, since: int = 0, limit: int = 100) -> Response:
        pk = f"default#{run_id}"
        get_item(pk)
        items = client.query(
            TableName=events_table,
            KeyConditionExpression="pk = :pk AND event_seq > :since",
            ExpressionAttributeValues={":pk": {"S": pk}, ":since": {"N": str(since)}},
            Limit=limit,
        )["Items"]
        return Response(json.dumps({"events": items}, default=repr), media_type="application/json")

    @app.get(PREFIX + "/empty")
    def empty() -> dict[str, str]:
        return {"status": "ok"}

    return Mangum(app, lifespan="off", api_gateway_base_path="/")


def _time(handler: Any, event: dict[str, Any]) -> float:
    context = common.lambda_context("ApiFunction", 1024, 29_000)
    started = time.perf_counter()
    response = handler(event, context)
    elapsed = time.perf_counter() - started
    if response["statusCode"] != 200:
        raise RuntimeError(f"{event['rawPath']}: {response['statusCode']} {response.get('body')}")
    return elapsed


def run(quick: bool = False) -> dict[str, Any]:
    import boto3

    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.messages import AdvanceMessage
    from workflows.domain.principal import ALL_PERMISSIONS, Principal
    from workflows.roots import api as api_root

    rounds = 150 if quick else 400
    with common.moto_resources() as env, contextlib.redirect_stdout(io.StringIO()):
        api = common.load_function("api")
        container = api_root.parts()
        principal = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
        definition = WorkflowDefinition.model_validate(
            {
                "name": "api-bench",
                "steps": [
                    {"id": f"s{i}", "type": "log", "config": {"message": f"step {i}"}} for i in range(1, 6)
                ],
            }
        )
        run = container.run_service.submit(principal, definition, {"name": "Ada"})
        received = container.sqs.receive_message(QueueUrl=container.settings.dispatch_queue_url)["Messages"]
        container.engine.process(AdvanceMessage.from_body(received[0]["Body"]))
        baseline = _baseline_app(
            boto3.client("dynamodb"), env["WORKFLOWS_RUNS_TABLE"], env["WORKFLOWS_RUN_EVENTS_TABLE"]
        )
        run_path = f"{PREFIX}/runs/{run.run_id}"
        query = {"since": "0", "limit": "100"}
        cases = {
            "get_run": (api.handler, common.api_event("GET", run_path)),
            "get_run_baseline": (baseline, common.api_event("GET", run_path)),
            "get_events": (api.handler, common.api_event("GET", run_path + "/events", query=query)),
            "get_events_baseline": (baseline, common.api_event("GET", run_path + "/events", query=query)),
            "empty_baseline": (baseline, common.api_event("GET", PREFIX + "/empty")),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for handler, event in cases.values():  # warm-up, unmeasured
            for _ in range(10):
                _time(handler, event)
        for _ in range(rounds):
            for name, (handler, event) in cases.items():
                samples[name].append(_time(handler, event))
    result: dict[str, Any] = {"rounds": rounds}
    for name, values in samples.items():
        result[f"{name}_p50_ms"] = common.percentile(values, 50) * 1000
        result[f"{name}_p99_ms"] = common.percentile(values, 99) * 1000
    for name in ("get_run", "get_events"):
        result[f"{name}_p50_ratio"] = result[f"{name}_p50_ms"] / result[f"{name}_baseline_p50_ms"]
        result[f"{name}_p99_ratio"] = result[f"{name}_p99_ms"] / result[f"{name}_baseline_p99_ms"]
        result[f"{name}_p50_ratio_to_empty"] = result[f"{name}_p50_ms"] / result["empty_baseline_p50_ms"]
    result["p50_ratio"] = max(result["get_run_p50_ratio"], result["get_events_p50_ratio"])
    return result
