"""4. Engine overhead: runs of ten `log` steps through Engine.process, in-process on moto.

Pass one times every Engine.process call (no profiler): steps per second and messages per run.
Pass two repeats the workload under cProfile and splits the time spent inside Engine.process:
- AWS client: everything under botocore's `_make_api_call`, of which moto is what runs under
  moto's request stub and botocore/boto3 the rest (serialising, signing, parsing);
- ours, inclusive: the rest, i.e. our package plus what it calls itself (pydantic, jinja2, json,
  Powertools logging); ours, self: only functions defined in the `workflows` package.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import time
from typing import Any

from bench import common

STEPS = 10
# Runs in flight at once. moto copies every table on each TransactWriteItems (for its rollback),
# so its cost grows with all the data ever written; finished runs are removed between waves
# (unmeasured) to keep the emulator's share from growing with the benchmark's own length.
WAVE = 10
AWS_LATENCY_MS = 8.0


def _definition() -> dict[str, Any]:
    return {
        "name": "engine-bench",
        "steps": [
            {"id": f"s{i}", "type": "log", "config": {"message": f"step {i} for {{{{ inputs.name }}}}"}}
            for i in range(1, STEPS + 1)
        ],
    }


def _workload(runs: int, profiler: cProfile.Profile | None) -> dict[str, Any]:
    from workflows.domain.definition import WorkflowDefinition
    from workflows.domain.principal import ALL_PERMISSIONS, Principal
    from workflows.roots import api as api_root

    with common.moto_resources(), contextlib.redirect_stdout(io.StringIO()):
        container = api_root.parts()
        principal = Principal(tenant_id="default", user_id="admin", permissions=ALL_PERMISSIONS)
        definition = WorkflowDefinition.model_validate(_definition())
        service = container.run_service
        seconds = 0.0
        messages = 0
        steps = 0
        succeeded = 0
        for wave in range(0, runs, WAVE):
            run_ids = [
                service.submit(principal, definition, {"name": "Ada"}).run_id
                for _ in range(min(WAVE, runs - wave))
            ]
            s, m, n = _drain(container, profiler)
            seconds, messages, steps = seconds + s, messages + m, steps + n
            succeeded += sum(
                1 for run_id in run_ids if container.runs.get("default", run_id).status.value == "succeeded"
            )
            _purge(container, run_ids)
    return {"seconds": seconds, "messages": messages, "steps": steps, "succeeded": succeeded}


def _purge(container: Any, run_ids: list[str]) -> None:
    from workflows.adapters.run_items import run_pk

    client, settings = container.dynamodb, container.settings
    for run_id in run_ids:
        pk = run_pk("default", run_id)
        for table, sort in ((settings.runs_table, "sk"), (settings.run_events_table, "event_seq")):
            items = client.query(
                TableName=table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": pk}},
                ProjectionExpression=f"pk, {sort}",
            )["Items"]
            for start in range(0, len(items), 25):
                requests = [{"DeleteRequest": {"Key": item}} for item in items[start : start + 25]]
                client.batch_write_item(RequestItems={table: requests})


def _drain(container: Any, profiler: cProfile.Profile | None) -> tuple[float, int, int]:
    """Deliver every dispatch message to Engine.process; time (and profile) only that call."""
    from workflows.domain.messages import AdvanceMessage

    sqs, url = container.sqs, container.settings.dispatch_queue_url
    seconds = 0.0
    messages = steps = 0
    while True:
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not received:
            return seconds, messages, steps
        for message in received:
            kick = AdvanceMessage.from_body(message["Body"])
            if profiler:
                profiler.enable()
            started = time.perf_counter()
            outcome = container.engine.process(kick)
            seconds += time.perf_counter() - started
            if profiler:
                profiler.disable()
            messages += 1
            steps += outcome.steps
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)],
        )


def _split(profiler: cProfile.Profile) -> dict[str, Any]:
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = aws = moto = own_self = 0.0
    requests = 0
    own_functions: list[tuple[float, str]] = []
    for (filename, line, name), (_, _, tottime, cumtime, _) in raw.items():
        if name == "process" and filename.endswith("workflows/engine/advance.py"):
            total += cumtime
        elif name == "_make_api_call" and filename.endswith("botocore/client.py"):
            aws += cumtime
            requests += raw[(filename, line, name)][1]
        elif name == "__call__" and filename.endswith("moto/core/botocore_stubber.py"):
            moto += cumtime
        if "/layers/shared/workflows/" in filename:
            own_self += tottime
            own_functions.append((tottime, f"{filename.split('/layers/shared/')[1]}:{line}({name})"))
    own_inclusive = total - aws
    top = sorted(own_functions, reverse=True)[:8]
    return {
        "profiled_seconds": total,
        "own_inclusive_share": own_inclusive / total,
        "own_self_share": own_self / total,
        "botocore_share": (aws - moto) / total,
        "moto_share": moto / total,
        "own_inclusive_share_without_moto": own_inclusive / (total - moto),
        "top_own_functions_ms": {name: round(t * 1000, 1) for t, name in top},
        "aws_requests": requests,
        "own_inclusive_seconds": own_inclusive,
        "botocore_seconds": aws - moto,
    }


def run(quick: bool = False) -> dict[str, Any]:
    runs = 50 if quick else 200
    profiled_runs = 20 if quick else 50
    timed = _workload(runs, None)
    profiler = cProfile.Profile()
    profiled = _workload(profiled_runs, profiler)
    split = _split(profiler)
    steps = timed["steps"]
    profiled_steps = profiled["steps"]
    own_ms = split.pop("own_inclusive_seconds") / profiled_steps * 1000
    botocore_ms = split.pop("botocore_seconds") / profiled_steps * 1000
    requests_per_step = split.pop("aws_requests") / profiled_steps
    # On AWS the emulator's time becomes network and service time. A model, not a measurement:
    # every request (a transaction or a query, in-region) answering in AWS_LATENCY_MS.
    modelled = own_ms / (own_ms + botocore_ms + requests_per_step * AWS_LATENCY_MS)
    return {
        "runs": runs,
        "steps": steps,
        "succeeded_runs": timed["succeeded"],
        "messages_per_run": timed["messages"] / runs,
        "steps_per_second": steps / timed["seconds"],
        "ms_per_step": timed["seconds"] / steps * 1000,
        "profiled_succeeded_runs": profiled["succeeded"],
        "profiled_runs": profiled_runs,
        "own_code_share": split["own_inclusive_share"],
        "own_ms_per_step_profiled": own_ms,
        "botocore_ms_per_step_profiled": botocore_ms,
        "aws_requests_per_step": requests_per_step,
        "modelled_aws_latency_ms": AWS_LATENCY_MS,
        "own_share_modelled_on_aws": modelled,
        **split,
    }
