"""1. Cost per step: every AWS request and capacity unit one run consumes, in dollars.

Each scenario is a whole run as a client causes it: the submission through the API function's
real handler (Mangum, in-process), the dispatcher function's real handler fed from the dispatch
queue the way Lambda's SQS event source feeds it, and for the approval the approve call through
the API handler. AWS is moto in-process; the webhook receiver and the OpenAI-compatible model
listen on 127.0.0.1. Steps that call out are also priced at volume (many runs at once, full
batches), and long waits on a moved clock with the sweeper on its schedule (bench/waits.py).

Each scenario's definition runs twice and the second run is measured: workflows run again and
again, and a definition's snapshot is stored once per content, by its first run (which also
pays one read to find it missing). Both function processes stay warm between the two runs, as
Lambda's do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import common
from bench.meter import Meter
from bench.prices import (
    API_MEMORY_MB,
    DISPATCHER_MEMORY_MB,
    FOLLOW_MEMORY_MB,
    FOLLOW_STREAM_MS_PER_RECORD,
    PRICES,
    SQS_BATCH,
    STREAM_BATCH,
)

PREFIX = "/api/v1/workflows"
DELAY_SECONDS = 1
RUN_DEADLINE_SECONDS = 60
# Scaling: runs of more steps, and steps with bigger outputs (as many steps as max_steps allows).
MAX_STEPS = 1000
OUTPUT_BYTES = 4096
# One long run whose `log` steps each output about 100 KB of digits (a template renders them;
# about 45 KB compressed, so they go to S3), measured once:
# 1,000 steps (100 with --quick), a log step and a branch looping back to it, so the definition
# stays small. The log step counts its own rounds in its output.
BIG_OUTPUT_STEPS = 1000
BIG_OUTPUT_TEMPLATE = (
    "{{ ((steps.big.output.message.split(';')[0] | int) if steps.big is defined else 0) + 1 }};"
    "{% for i in range(9000) %}{{ (i * 2654435761) % 4294967296 }},{% endfor %}"
)

# Calls out at volume: this many one-step runs submitted at once (batches of 10 records), each
# call answered at once and after these many seconds.
CALL_RUNS = 30
CALL_RUNS_QUICK = 10
SLOW_WEBHOOK_SECONDS = 0.2
SLOW_MODEL_SECONDS = 2.0
SLOW_MODEL = "bench-slow"
CALL_TARGET_RATIO = 1.5
# The section's targets (report.py prints each beside its figure).
TARGETS = {
    "log_usd_per_million_steps": 1.60,
    "scaling.log_x500.wru_per_step": 2.0,
    "tco_default_retention_usd_per_million_steps": 2.50,
}

# TCO assumptions for the 10-step `log` run (printed with the figure).
TCO = {
    # Lambda duration: the in-process time measured here plus, per AWS request, the latency it
    # has in the same region (moto answers in-process, so its time is not a network wait).
    "aws_request_latency_ms": 6.0,
    # CloudWatch Logs beside what the functions log: START, END and REPORT per invocation, and
    # the Embedded Metric Format line Powertools writes at the end of each.
    "platform_log_bytes_per_invocation": 350,
    "metrics_log_bytes_per_invocation": 600,
    # X-Ray's default sampling (template TracingMode=Active): at volume about 5% of invocations.
    "xray_sampled_share": 0.05,
    # DynamoDB bills 100 bytes of overhead per stored item; indexes store their projection.
    "dynamodb_item_overhead_bytes": 100,
    "log_retention_days": 30,
}


class Receiver:
    """A webhook receiver and an OpenAI-compatible model on 127.0.0.1. Webhooks: every POST to
    `/hook` is answered 200 at once, to `/slow-hook` after `SLOW_WEBHOOK_SECONDS`. The model
    (`POST /v1/chat/completions`) answers a short completion at once, or after
    `SLOW_MODEL_SECONDS` for the model named `SLOW_MODEL`."""

    def __init__(self) -> None:
        self.count = 0
        self.completions = 0

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.endswith("/chat/completions"):
                    model = json.loads(body).get("model")
                    outer.completions += 1
                    time.sleep(SLOW_MODEL_SECONDS if model == SLOW_MODEL else 0)
                    self._answer("application/json", json.dumps(_completion(model)).encode())
                    return
                outer.count += 1
                time.sleep(SLOW_WEBHOOK_SECONDS if self.path == "/slow-hook" else 0)
                self._answer("text/plain", b"ok")

            def _answer(self, content_type: str, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _completion(model: str | None) -> dict[str, Any]:
    """A chat completion as an OpenAI-compatible server answers it."""
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello, Ada."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }


class LogBytes(logging.Handler):
    """Counts the bytes the functions' logger writes at INFO (the template's default LogLevel),
    formatted as in CloudWatch; the bench's own environment keeps the logger quiet otherwise."""

    def __init__(self) -> None:
        from workflows.observability import logger

        super().__init__(level=logging.INFO)
        self.total = 0
        self._logger = logger._logger
        self.setFormatter(logger.registered_formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.total += len(self.format(record).encode()) + 1

    def reset(self) -> None:
        self.total = 0

    def __enter__(self) -> LogBytes:
        self._saved = (self._logger.level, list(self._logger.handlers))
        self._logger.handlers = [self]
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        level, handlers = self._saved
        self._logger.setLevel(level)
        self._logger.handlers = handlers


@dataclass
class Usage:
    steps: int
    counts: dict[str, float] = field(default_factory=dict)
    log_bytes: int = 0
    stored_bytes: int = 0
    api_invocations: int = 0
    api_seconds: float = 0.0
    dispatcher_invocations: int = 0
    dispatcher_seconds: float = 0.0
    messages_consumed: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    s3_stored_bytes: int = 0
    status: str = ""

    def dollars(self) -> dict[str, float]:
        c = self.counts
        wru = c.get("dynamodb.wru", 0) + c.get("dynamodb.wru_index", 0)
        rru = c.get("dynamodb.rru", 0)
        # The event source's ReceiveMessage and DeleteMessageBatch, amortised over full batches.
        sqs_requests = c.get("sqs.billed_requests", 0) + 2 * self.messages_consumed / SQS_BATCH
        # At volume one dispatcher invocation takes a full batch; duration is paid per message.
        lambda_requests = self.api_invocations + self.messages_consumed / SQS_BATCH
        gb_seconds = (
            _billed(self.api_seconds, self.api_invocations) * API_MEMORY_MB / 1024
            + _billed(self.dispatcher_seconds, self.dispatcher_invocations) * DISPATCHER_MEMORY_MB / 1024
        )
        # Every commit of a run item is a record of the runs table's stream, which FollowFunction
        # reads whether anyone follows the run or not: at volume a batch of STREAM_BATCH records
        # per invocation, FOLLOW_STREAM_MS_PER_RECORD of its time each (bench/follow.py measures
        # it and checks this bound), and at most one eventually consistent read of a run's
        # followers item per record. Stream reads by Lambda's event source are not billed.
        records = c.get("dynamodb.stream_records", 0)
        return {
            "dynamodb_write": wru * PRICES["dynamodb_per_million_wru"] / 1e6,
            "dynamodb_read": rru * PRICES["dynamodb_per_million_rru"] / 1e6,
            "sqs": sqs_requests * PRICES["sqs_per_million_requests"] / 1e6,
            "lambda_requests": lambda_requests * PRICES["lambda_per_million_requests"] / 1e6,
            "lambda_duration": gb_seconds * PRICES["lambda_per_gb_second_arm64"],
            "api_gateway": self.api_invocations * PRICES["apigw_http_per_million_requests"] / 1e6,
            "s3": c.get("s3.put_requests", 0) * PRICES["s3_per_thousand_put"] / 1e3
            + c.get("s3.get_requests", 0) * PRICES["s3_per_thousand_get"] / 1e3,
            "follow_stream": records
            * (
                PRICES["lambda_per_million_requests"] / 1e6 / STREAM_BATCH
                + FOLLOW_STREAM_MS_PER_RECORD
                / 1000
                * FOLLOW_MEMORY_MB
                / 1024
                * PRICES["lambda_per_gb_second_arm64"]
                + 0.5 * PRICES["dynamodb_per_million_rru"] / 1e6
            ),
        }

    def summary(self) -> dict[str, Any]:
        dollars = self.dollars()
        total = sum(dollars.values())
        c = self.counts
        return {
            "status": self.status,
            "steps": self.steps,
            "dynamodb_requests": c.get("dynamodb.requests", 0),
            "dynamodb_wru": c.get("dynamodb.wru", 0),
            "dynamodb_wru_index": c.get("dynamodb.wru_index", 0),
            "dynamodb_rru": c.get("dynamodb.rru", 0),
            "dynamodb_by_operation": {
                k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("dynamodb.") and k[9].isupper()
            },
            "sqs_requests_direct": c.get("sqs.billed_requests", 0),
            "sqs_messages": self.messages_consumed,
            "s3_requests": c.get("s3.requests", 0),
            "api_invocations": self.api_invocations,
            "api_ms": round(self.api_seconds * 1000, 1),
            "dispatcher_invocations": self.dispatcher_invocations,
            "dispatcher_ms": round(self.dispatcher_seconds * 1000, 1),
            "stream_records": c.get("dynamodb.stream_records", 0),
            "log_bytes": self.log_bytes,
            "stored_bytes": self.stored_bytes,
            "s3_stored_bytes": self.s3_stored_bytes,
            "dispatcher_batch_sizes": sorted(set(self.batch_sizes)),
            "dispatcher_full_batches": sum(1 for b in self.batch_sizes if b == SQS_BATCH),
            "wru_per_step": (c.get("dynamodb.wru", 0) + c.get("dynamodb.wru_index", 0)) / self.steps,
            "usd_per_run": total,
            "usd_per_million_steps": total / self.steps * 1e6,
            "usd_per_million_steps_by_part": {k: v / self.steps * 1e6 for k, v in dollars.items()},
        }


def _billed(seconds: float, invocations: int) -> float:
    """Lambda bills each invocation's duration rounded up to the millisecond."""
    if invocations == 0:
        return 0.0
    return math.ceil(seconds / invocations * 1000) / 1000 * invocations


def sfn_costs(steps: int, wait_seconds: float = 0.0) -> dict[str, float]:
    """Step Functions for the same workflow, one state per step, per million steps.

    Standard: one state transition per state. Express: one request per execution plus duration
    in 64 MB, with the 100 ms minimum (a wait is paid as duration; Express runs at most 5 min).
    """
    standard = PRICES["sfn_standard_per_million_transitions"]
    duration = max(0.1, 0.1 + wait_seconds)
    express_run = (
        PRICES["sfn_express_per_million_requests"] / 1e6
        + duration * (64 / 1024) * PRICES["sfn_express_per_gb_second"]
    )
    return {"standard": standard, "express": express_run / steps * 1e6}


class Driver:
    """Plays API Gateway and the SQS event source around the real handlers."""

    def __init__(self, meter: Meter) -> None:
        import boto3

        from workflows.roots import api as api_root

        self.meter = meter
        self.log_bytes = LogBytes()
        self.api = common.load_function("api")
        self.dispatcher = common.load_function("dispatcher")
        self.container = api_root.parts()  # built after the meter was installed: metered clients
        self.queue_url = self.container.settings.dispatch_queue_url
        # The event source's own client: its requests are priced separately (amortised).
        self.raw_sqs = boto3.session.Session().client("sqs")
        self.queue_arn = self.raw_sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

    def call_api(self, usage: Usage, method: str, path: str, body: Any = None) -> dict[str, Any]:
        event = common.api_event(method, PREFIX + path, body=body)
        context = common.lambda_context("ApiFunction", API_MEMORY_MB, 29_000)
        started = time.perf_counter()
        response: dict[str, Any] = self.api.handler(event, context)
        usage.api_seconds += time.perf_counter() - started
        usage.api_invocations += 1
        if response["statusCode"] >= 300:
            raise RuntimeError(f"{method} {path}: {response['statusCode']} {response.get('body')}")
        return dict(json.loads(response["body"]))

    def deliver(self, usage: Usage) -> int:
        received = self.raw_sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=SQS_BATCH, WaitTimeSeconds=0, AttributeNames=["All"]
        )
        messages = received.get("Messages", [])
        if not messages:
            return 0
        self.dispatch(usage, messages)
        return len(messages)

    def dispatch(self, usage: Usage, messages: list[dict[str, Any]]) -> None:
        """One dispatcher invocation with `messages` as its batch; those it did not report
        failed are deleted, as the event source does."""
        usage.batch_sizes.append(len(messages))
        context = common.lambda_context("DispatcherFunction", DISPATCHER_MEMORY_MB, 120_000)
        started = time.perf_counter()
        response = self.dispatcher.handler(common.sqs_event(messages, self.queue_arn), context) or {}
        usage.dispatcher_seconds += time.perf_counter() - started
        usage.dispatcher_invocations += 1
        usage.messages_consumed += len(messages)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.raw_sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )

    def status(self, run_id: str) -> dict[str, Any]:
        with self.meter.paused():
            run = self.container.runs.get("default", run_id)
        return {"status": run.status.value, "current_step_id": run.current_step_id}

    def run(
        self, definition: dict[str, Any], steps: int, *, approve: bool = False, deadline_s: float = 0
    ) -> Usage:
        usage = Usage(steps=steps)
        self.meter.reset()
        self.log_bytes.reset()
        accepted = self.call_api(
            usage, "POST", "/runs", {"definition": definition, "inputs": {"name": "Ada"}}
        )
        run_id = accepted["run_id"]
        deadline = time.monotonic() + (deadline_s or RUN_DEADLINE_SECONDS)
        while time.monotonic() < deadline:
            if self.deliver(usage):
                continue
            state = self.status(run_id)
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            if state["status"] == "waiting_approval" and approve:
                step = state["current_step_id"]
                self.call_api(
                    usage, "POST", f"/runs/{run_id}/steps/{step}/approve", {"comment": "looks right"}
                )
                continue
            time.sleep(0.05)  # a delayed kick is not visible yet
        usage.status = self.status(run_id)["status"]
        usage.counts = self.meter.snapshot()
        usage.log_bytes = self.log_bytes.total
        with self.meter.paused():
            usage.stored_bytes = self.stored_bytes(run_id)
            usage.s3_stored_bytes = self.s3_stored_bytes(run_id)
        return usage

    def run_many(self, definition: dict[str, Any], runs: int, *, deadline_s: float = 0) -> Usage:
        """`runs` runs of a one-step definition submitted at once, then worked the way the event
        source works a busy queue: batches of up to 10 messages, one invocation at a time. Each
        invocation's duration is shared by the records of its batch (the figures are per step)."""
        usage = Usage(steps=runs)
        self.meter.reset()
        self.log_bytes.reset()
        body = {"definition": definition, "inputs": {"name": "Ada"}}
        run_ids = [self.call_api(usage, "POST", "/runs", body)["run_id"] for _ in range(runs)]
        pending = set(run_ids)
        deadline = time.monotonic() + (deadline_s or RUN_DEADLINE_SECONDS)
        while pending and time.monotonic() < deadline:
            if self.deliver(usage):
                continue
            pending = {
                r for r in pending if self.status(r)["status"] not in ("succeeded", "failed", "cancelled")
            }
            if pending:
                time.sleep(0.05)
        statuses = {self.status(r)["status"] for r in run_ids}
        usage.status = statuses.pop() if len(statuses) == 1 else "mixed: " + ",".join(sorted(statuses))
        usage.counts = self.meter.snapshot()
        usage.log_bytes = self.log_bytes.total
        return usage

    def s3_stored_bytes(self, run_id: str) -> int:
        """What the run keeps in S3 (outputs too big for an item, artifacts)."""
        s3 = self.container.s3
        bucket = self.container.settings.artifacts_bucket
        total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            total += sum(o["Size"] for o in page.get("Contents", []) if f"/{run_id}/" in o["Key"])
        return total

    def stored_bytes(self, run_id: str) -> int:
        """What the run keeps in DynamoDB: its items and their index entries, with DynamoDB's
        per-item overhead (a shared definition snapshot is not counted: one per definition)."""
        from bench.meter import item_size

        client = self.container.dynamodb
        settings = self.container.settings
        overhead = TCO["dynamodb_item_overhead_bytes"]
        total = 0
        for table in (settings.runs_table, settings.run_events_table):
            pages = client.get_paginator("query").paginate(
                TableName=table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"default#{run_id}"}},
            )
            for item in (item for page in pages for item in page["Items"]):
                total += item_size(item) + overhead
                # Index entries (listing indexes project the keys, status and owner).
                for index_key in ("gsi1pk", "gsi2pk", "active_shard"):
                    if index_key in item:
                        total += 120 + overhead
        return total


def definitions(webhook_url: str) -> dict[str, tuple[dict[str, Any], int, dict[str, Any]]]:
    def one(step: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"bench-{step['type']}", "steps": [step]}

    log10 = {
        "name": "bench-log10",
        "steps": [
            {"id": f"s{i}", "type": "log", "config": {"message": f"step {i} for {{{{ inputs.name }}}}"}}
            for i in range(1, 11)
        ],
    }
    rng = random.Random(7)

    def text(size: int) -> str:
        # Incompressible like most real outputs: letters and digits drawn at random.
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=size))

    def logs(count: int, size: int = 0) -> dict[str, Any]:
        return {
            "name": f"bench-log{count}-{size}",
            "steps": [
                {"id": f"s{i}", "type": "log", "config": {"message": text(size) if size else f"step {i}"}}
                for i in range(1, count + 1)
            ],
        }

    return {
        "log10": (log10, 10, {}),
        "scale_log50": (logs(50), 50, {}),
        "scale_log500": (logs(500), 500, {}),
        # Outputs of 100 random characters: each kept inline, none compressible.
        "scale_log10_100b": (logs(10, 100), 10, {}),
        "scale_log500_100b": (logs(500, 100), 500, {}),
        "scale_log10_4kb": (logs(10, OUTPUT_BYTES), 10, {}),
        "scale_log50_4kb": (logs(50, OUTPUT_BYTES), 50, {}),
        "log1": (
            one({"id": "s1", "type": "log", "config": {"message": "step 1 for {{ inputs.name }}"}}),
            1,
            {},
        ),
        "delay": (one({"id": "wait", "type": "delay", "config": {"seconds": DELAY_SECONDS}}), 1, {}),
        "webhook": (
            one(
                {
                    "id": "call",
                    "type": "webhook",
                    "config": {
                        "url": webhook_url,
                        "body": {"run": "{{ run.id }}", "name": "{{ inputs.name }}"},
                    },
                }
            ),
            1,
            {},
        ),
        # A log step follows the approval: approving a run's last step is refused today (409).
        "approval": (
            {
                "name": "bench-approval",
                "steps": [
                    {
                        "id": "review",
                        "type": "approval",
                        "config": {"instructions": "check it", "timeout_seconds": 3600},
                    },
                    {"id": "after", "type": "log", "config": {"message": "approved"}},
                ],
            },
            2,
            {"approve": True},
        ),
    }


def call_definitions(receiver: Receiver) -> dict[str, dict[str, Any]]:
    """One-step runs that call out: a webhook and a prompt to a model, each answering at once
    and slowly (`slow`)."""

    def webhook(path: str) -> dict[str, Any]:
        config = {"url": receiver.url(path), "body": {"run": "{{ run.id }}", "name": "{{ inputs.name }}"}}
        return {
            "name": f"bench-webhook{path.replace('/', '-')}",
            "steps": [{"id": "call", "type": "webhook", "config": config}],
        }

    def prompt(model: str) -> dict[str, Any]:
        config = {"model": model, "template": "Greet {{ inputs.name }} in three words.", "max_tokens": 16}
        return {"name": f"bench-prompt-{model}", "steps": [{"id": "ask", "type": "prompt", "config": config}]}

    return {
        "webhook_instant": webhook("/hook"),
        "webhook_slow": webhook("/slow-hook"),
        "prompt_instant": prompt("bench-instant"),
        "prompt_slow": prompt(SLOW_MODEL),
    }


@contextlib.contextmanager
def metered_driver(extra: dict[str, str]) -> Iterator[Driver]:
    """A driver on fresh moto resources from template.yaml, every request metered."""
    import boto3

    with common.moto_resources(extra) as env:
        meter = Meter(common.table_properties(env), boto3.session.Session().client("dynamodb"))
        meter.install()
        try:
            driver = Driver(meter)
            with driver.log_bytes:
                yield driver
        finally:
            meter.uninstall()


def run(quick: bool = False) -> dict[str, Any]:
    from bench import waits

    receiver = Receiver()
    extra = {
        "WORKFLOWS_WEBHOOK_ALLOWLIST": "127.0.0.1",
        "WORKFLOWS_WEBHOOK_ALLOWED_PORTS": "*",
        "WORKFLOWS_MAX_STEPS": str(MAX_STEPS),
        "WORKFLOWS_MAX_STEPS_PER_RUN": str(BIG_OUTPUT_STEPS + 10),
        "WORKFLOWS_LLM_PROVIDER": "openai",
        "WORKFLOWS_LLM_BASE_URL": receiver.url("/v1"),
        "WORKFLOWS_LLM_API_KEY": "sk-bench",
    }
    try:
        with metered_driver(extra) as driver:
            # One unmeasured run first: imports, the container and first-request costs.
            driver.run(definitions(receiver.url())["log1"][0], 1)
            scenarios: dict[str, Any] = {}
            for name, (definition, steps, options) in definitions(receiver.url()).items():
                # The steady state: a definition's first run stores its shared snapshot, and
                # the next ones (measured) find it stored.
                driver.run(definition, steps, **options)
                scenarios[name] = driver.run(definition, steps, **options).summary()
            big_steps = BIG_OUTPUT_STEPS // 10 if quick else BIG_OUTPUT_STEPS
            rounds = big_steps // 2
            big = {
                "name": "bench-big-outputs",
                "steps": [
                    {"id": "big", "type": "log", "config": {"message": BIG_OUTPUT_TEMPLATE}},
                    {
                        "id": "again",
                        "type": "branch",
                        "config": {
                            "condition": f"(steps.big.output.message.split(';')[0] | int) < {rounds}",
                            "true_next": "big",
                            "false_next": "_end",
                        },
                    },
                ],
            }
            scenarios["scale_log_big_100kb"] = driver.run(big, big_steps, deadline_s=1800).summary()
        # Calls out and long waits on tables of their own: moto's index queries (the sweeper's)
        # take time in proportion to every item of the table, which DynamoDB's do not.
        with metered_driver(extra) as driver:
            driver.run(definitions(receiver.url())["log1"][0], 1)
            calls: dict[str, Any] = {}
            runs = CALL_RUNS_QUICK if quick else CALL_RUNS
            for name, definition in call_definitions(receiver).items():
                driver.run(definition, 1)  # stores the definition's snapshot
                calls[name] = driver.run_many(definition, runs).summary()
            # Last: the waits move the clock days ahead of everything written above.
            waited = waits.run(
                driver,
                quick=quick,
                log1_usd_per_run=scenarios["log1"]["usd_per_run"],
                log_usd_per_million_steps=scenarios["log10"]["usd_per_million_steps"],
            )
        slots = _slots(extra, definitions(receiver.url())["log10"][0])
    finally:
        receiver.close()
    result = _figures(scenarios, webhooks_received=receiver.count)
    result["slots"] = slots
    result.update(_call_figures(calls))
    result["calls"]["model_requests"] = receiver.completions
    result["waits"] = waited
    return result


def _call_figures(calls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each slow call beside the same step answering at once, per step (the run's whole bill:
    one-step runs), with the parts that differ."""
    out: dict[str, Any] = {"calls": {"scenarios": calls, "target_ratio": CALL_TARGET_RATIO}}
    for step, wait in (("webhook", SLOW_WEBHOOK_SECONDS), ("prompt", SLOW_MODEL_SECONDS)):
        slow, instant = calls[f"{step}_slow"], calls[f"{step}_instant"]
        out[f"{step}_usd_per_million_steps"] = slow["usd_per_million_steps"]
        out[f"{step}_instant_usd_per_million_steps"] = instant["usd_per_million_steps"]
        out[f"{step}_ratio_to_instant"] = slow["usd_per_million_steps"] / instant["usd_per_million_steps"]
        parts = slow["usd_per_million_steps_by_part"]
        out["calls"][f"{step}_answer_seconds"] = wait
        out["calls"][f"{step}_extra_usd_per_million_steps_by_part"] = {
            k: round(v - instant["usd_per_million_steps_by_part"].get(k, 0), 4) for k, v in parts.items()
        }
    return out


def _figures(scenarios: dict[str, dict[str, Any]], webhooks_received: int) -> dict[str, Any]:
    log = scenarios["log10"]
    per_step = log["usd_per_million_steps"]
    sfn = sfn_costs(10)
    parts = sorted(log["usd_per_million_steps_by_part"].items(), key=lambda kv: -kv[1])
    log1 = scenarios["log1"]["usd_per_run"]
    result: dict[str, Any] = {
        "log_usd_per_million_steps": per_step,
        "sfn_standard_usd_per_million_steps": sfn["standard"],
        "sfn_express_usd_per_million_steps": sfn["express"],
        "log_ratio_to_sfn_standard": per_step / sfn["standard"],
        "log_ratio_to_sfn_express": per_step / sfn["express"],
        "log_dominant_part": parts[0][0],
        "log_parts_usd_per_million_steps": dict(parts),
        "webhooks_received": webhooks_received,
        "scenarios": scenarios,
        "targets": TARGETS,
    }
    for name, wait, extra_logs in (("delay", DELAY_SECONDS, 0), ("webhook", 0.0, 0), ("approval", 0.0, 1)):
        s = scenarios[name]
        if name != "webhook":  # webhook_usd_per_million_steps is the slow receiver's (_call_figures)
            result[f"{name}_usd_per_million_steps"] = s["usd_per_million_steps"]
        # What the step adds to a run, against a one-step log run (same submission and run
        # bookkeeping) with the log step's own cost taken from the ten-step run.
        result[f"{name}_marginal_usd_per_million_steps"] = (s["usd_per_run"] - log1) * 1e6 + (
            1 - extra_logs
        ) * per_step
        result[f"{name}_sfn_standard_usd_per_million_steps"] = sfn_costs(1, wait)["standard"]
        result[f"{name}_sfn_express_usd_per_million_steps"] = sfn_costs(1, wait)["express"]
    result["scaling"] = _scaling(scenarios)
    result["tco"] = {days: tco(log, days) for days in (30, 90)}
    from bench.waits import history_retention_days

    days = history_retention_days()
    result["tco_default_retention_days"] = days
    result["tco_default_retention_usd_per_million_steps"] = tco(log, days)["usd_per_million_steps"]
    result["tco_assumptions"] = TCO
    return result


# Runs of the tenant already running when a measured run starts and ends (cost.slots).
SLOT_HOLDERS = (10, 1000, 4000)
# The limit set: the most the settings allow, above every measured count.
SLOT_LIMIT = 5000
SLOTS_TARGET_RATIO = 1.25


def _slots(extra: dict[str, str], log10: dict[str, Any]) -> dict[str, Any]:
    """A 10-step log run's writes with the tenant concurrency limit on (WORKFLOWS_TENANT_CONCURRENCY),
    while 10, 1,000 and 4,000 other runs of the tenant hold slots (listed by the store as
    running runs are; unmetered), the run's own slot taken and given back through the engine.
    Target: WRU per run at 1,000 running within 1.25x of 10 running."""
    out: dict[str, Any] = {"target_ratio": SLOTS_TARGET_RATIO}
    with metered_driver({**extra, "WORKFLOWS_TENANT_CONCURRENCY": str(SLOT_LIMIT)}) as driver:
        quotas = driver.container.quotas
        driver.run(log10, 10)  # the definition's snapshot, unmeasured
        held = 0
        for holders in SLOT_HOLDERS:
            with driver.meter.paused():
                for i in range(held, holders):
                    quotas.take_slot("default", str(uuid.UUID(int=i + 1)), SLOT_LIMIT)  # a run id's length
                held = holders
            s = driver.run(log10, 10).summary()
            out[f"running_{holders}"] = {
                "status": s["status"],
                "wru_per_run": s["dynamodb_wru"] + s["dynamodb_wru_index"],
                "usd_per_million_steps": round(s["usd_per_million_steps"], 3),
            }
    base = out["running_10"]["wru_per_run"]
    for holders in SLOT_HOLDERS[1:]:
        out[f"running_{holders}_vs_10_wru_per_run"] = round(
            out[f"running_{holders}"]["wru_per_run"] / base, 3
        )
    return out


def _scaling(scenarios: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """WRU and dollars per step as runs get longer and outputs bigger (targets: 500 steps within
    1.2x of 10 per step; 4 KB outputs at most 8 WRU per step at 10 and at 50 steps)."""
    rows = {"log_x10": scenarios["log10"]}
    rows.update(
        {
            name.removeprefix("scale_").replace("log", "log_x"): s
            for name, s in scenarios.items()
            if name.startswith("scale_")
        }
    )
    figures: dict[str, Any] = {
        name: {
            "status": s["status"],
            "steps": s["steps"],
            "wru_per_step": round(s["wru_per_step"], 2),
            "usd_per_million_steps": round(s["usd_per_million_steps"], 2),
        }
        for name, s in rows.items()
    }
    base = figures["log_x10"]["wru_per_step"]
    figures["x500_vs_x10_wru_per_step"] = round(figures["log_x500"]["wru_per_step"] / base, 2)
    if "log_x500_100b" in figures and "log_x10_100b" in figures:
        figures["x500_vs_x10_100b_wru_per_step"] = round(
            figures["log_x500_100b"]["wru_per_step"] / figures["log_x10_100b"]["wru_per_step"], 2
        )
    return figures


def tco(s: dict[str, Any], retention_days: int) -> dict[str, Any]:
    """The whole bill of a run per million steps: requests as measured, Lambda duration as
    modelled (measured in-process time plus each AWS request's latency), DynamoDB storage and
    point-in-time recovery for the history kept, CloudWatch Logs at the default level, X-Ray."""
    steps = s["steps"]
    parts = {k: v * steps / 1e6 for k, v in s["usd_per_million_steps_by_part"].items()}
    requests = s["dynamodb_requests"] + s["sqs_requests_direct"] + s["s3_requests"]
    latency_s = requests * TCO["aws_request_latency_ms"] / 1000
    gb_seconds = (
        s["api_ms"] / 1000 * API_MEMORY_MB + (s["dispatcher_ms"] / 1000 + latency_s) * DISPATCHER_MEMORY_MB
    ) / 1024
    parts["lambda_duration"] = gb_seconds * PRICES["lambda_per_gb_second_arm64"]
    gib = 2**30
    months = retention_days / 30.4
    storage_gb_months = s["stored_bytes"] / gib * months
    parts["dynamodb_storage"] = storage_gb_months * PRICES["dynamodb_storage_per_gb_month"]
    parts["dynamodb_pitr"] = storage_gb_months * PRICES["dynamodb_pitr_per_gb_month"]
    # Outputs too big for an item and artifacts, kept in S3 as long (the bucket's lifecycle).
    parts["s3_storage"] = s.get("s3_stored_bytes", 0) / gib * months * PRICES["s3_storage_per_gb_month"]
    invocations = s["api_invocations"] + s["sqs_messages"] / SQS_BATCH
    log_bytes = s["log_bytes"] + invocations * (
        TCO["platform_log_bytes_per_invocation"] + TCO["metrics_log_bytes_per_invocation"]
    )
    log_months = TCO["log_retention_days"] / 30.4
    parts["logs"] = (
        log_bytes / gib * (PRICES["logs_ingest_per_gb"] + PRICES["logs_storage_per_gb_month"] * log_months)
    )
    parts["xray"] = invocations * TCO["xray_sampled_share"] * PRICES["xray_per_million_traces"] / 1e6
    total = sum(parts.values())
    return {
        "retention_days": retention_days,
        "usd_per_million_steps": total / steps * 1e6,
        "usd_per_million_steps_by_part": {k: round(v / steps * 1e6, 4) for k, v in parts.items()},
        "stored_bytes_per_run": s["stored_bytes"],
        "s3_stored_bytes_per_run": s.get("s3_stored_bytes", 0),
        "log_bytes_per_run": round(log_bytes),
        "target": 2.50 if retention_days == 30 else 3.00,
    }
