"""`make run`: the whole service on this machine.

1. An embedded moto server on 127.0.0.1 (unless AWS_ENDPOINT_URL points elsewhere).
2. The stateful resources of template.yaml, created through CloudFormation on that endpoint.
3. The dispatcher fed from the dispatch queue, the consumer of its dead letters, the DLQ worker
   and the sweeper on their schedules, and the workflows' own schedules fired into the
   dispatch queue (devstack/scheduler.py).
4. The FastAPI app on http://127.0.0.1:8000 (uvicorn), with a webhook receiver under
   /_local/webhooks (devstack/receiver.py); the WebSocket API that follows runs on
   ws://127.0.0.1:8001/v1 (devstack/websocket.py), fed by the runs table's stream
   (devstack/workers.py, StreamPoller). Ctrl-C stops everything.
5. events/local/env.json: the SAM `--env-vars` file for `sam local invoke` against this stack
   (devstack/sam_local.py); `make events` writes sample events bound to its live objects.

Environment: WORKFLOWS_API_KEY (else one is generated), PORT (8000), MOTO_PORT (5050),
WS_PORT (8001: the WebSocket API and its management endpoint),
BIND_ADDRESS (127.0.0.1: where the API and the emulator listen; 0.0.0.0 lets a function's
container reach them), FUNCTION_HOST (the host name env.json gives the functions: 127.0.0.1 when
bound to loopback, else host.docker.internal), AWS_ENDPOINT_URL (use another endpoint instead of
the embedded server), LOG_LEVEL (WARNING), DEVSTACK_WORKERS (on; off: no dispatcher, consumers,
workers or schedules, so an invoked function is the one that does the work), DEVSTACK_ACTIVITY
(on: a line per step outcome and run ending; off), DEVSTACK_METRICS (off: the functions' metric
lines, CloudWatch's EMF, stay out of the terminal; on: printed as deployed functions log them),
DEVSTACK_VISIBILITY_TIMEOUT (10: seconds before a failed dispatch message is retried),
DEVSTACK_DISPATCHERS (4: concurrent dispatcher invocations; calls out in flight are kept below it),
WORKFLOWS_TENANT_STEPS_PER_SEC (10 in multi_user mode: each tenant's step rate here).

`python -m devstack --workers-only` runs only the workers (pollers, DLQ worker, sweeper,
scheduler) against a stack another process serves (AWS_ENDPOINT_URL set): no API, no receiver.
`make chaos` runs the API and the workers this way, in processes it can kill one at a time.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import warnings
from collections.abc import Callable
from typing import Protocol

from devstack import metrics

DEFAULTS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STACK = "workflows-local"


def _environment() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "workflows")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Workflows")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", os.environ.get("LOG_LEVEL", "WARNING"))
    # The functions' metrics stay out of the terminal unless DEVSTACK_METRICS=on.
    metrics.configure()
    # Handlers that emit no metric in an invocation would warn on every call.
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def _switched_on(name: str) -> bool:
    """An on/off setting, on unless it says off (off, 0, false or no)."""
    return os.environ.get(name, "on").lower() not in {"off", "0", "false", "no"}


def _busy_port(host: str, port: int, setting: str) -> str | None:
    """A message naming `setting` when something listens on host:port, else None.

    The probe binds as the servers do, with SO_REUSEADDR: the connections of a stack stopped a
    moment ago linger in TIME_WAIT for a minute, which holds a plain bind but not theirs, while
    a listener still holds both."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"devstack: {host}:{port} is busy ({exc.strerror}); set {setting} to another port"
    return None


def main() -> int:
    _environment()
    bind = os.environ.get("BIND_ADDRESS", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    moto_port = int(os.environ.get("MOTO_PORT", "5050"))
    ws_port = int(os.environ.get("WS_PORT", "8001"))
    embedded = not os.environ.get("AWS_ENDPOINT_URL")
    workers_only = "--workers-only" in sys.argv[1:]
    if workers_only and embedded:
        sys.exit("devstack: --workers-only needs AWS_ENDPOINT_URL: the stack another process serves")
    # Before anything is printed or started: a busy port named with the setting that moves it.
    for busy in (
        None if workers_only else _busy_port(bind, port, "PORT"),
        None if workers_only else _busy_port(bind, ws_port, "WS_PORT"),
        _busy_port(bind, moto_port, "MOTO_PORT") if embedded else None,
    ):
        if busy:
            sys.exit(busy)
    workers = _switched_on("DEVSTACK_WORKERS")
    # Imported after the environment is set: Powertools reads it at import time.
    import boto3
    import uvicorn

    from devstack import provision
    from devstack.functions import LAYER
    from devstack.moto_server import MotoServerProcess
    from devstack.receiver import WebhookReceiver, with_receiver
    from devstack.sam_local import function_host, write_env_file, write_stack_file

    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    from devstack.scheduler import ensure_scheduling
    from workflows.settings import get_settings

    moto: MotoServerProcess | None = None
    if embedded:
        moto = MotoServerProcess(bind, moto_port)
        moto.start()
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{moto_port}"
    region = os.environ["AWS_DEFAULT_REGION"]

    cloudformation = boto3.client("cloudformation")
    existing = {
        s["StackName"]
        for s in cloudformation.list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    }
    if STACK in existing:
        resources = cloudformation.describe_stack_resources(StackName=STACK)["StackResources"]
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
        env = {name: physical[logical] for logical, name in provision.ENVIRONMENT.items()}
    else:
        # Failed dispatch messages come back after this many seconds (deployed: 720).
        visibility = os.environ.get("DEVSTACK_VISIBILITY_TIMEOUT", "10")
        env = provision.create_stack(
            cloudformation, stack_name=STACK, parameters={"DispatchVisibilityTimeout": visibility}
        )
    # Schedules of saved workflows: the group and role moto's CloudFormation skips.
    env.update(
        ensure_scheduling(
            boto3.client("scheduler"),
            boto3.client("iam"),
            boto3.client("sqs"),
            stack=STACK,
            queue_url=env["WORKFLOWS_DISPATCH_QUEUE_URL"],
        )
    )
    os.environ.update(env)
    # FollowFunction's PostToConnection goes to the local WebSocket API (devstack/websocket.py).
    os.environ.setdefault("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", f"http://127.0.0.1:{ws_port}")
    api_key = os.environ.get("WORKFLOWS_API_KEY") or secrets.token_urlsafe(24)
    os.environ["WORKFLOWS_API_KEY"] = api_key
    os.environ.setdefault("WORKFLOWS_WEBHOOK_DLQ_INTERVAL_SEC", "5")
    # The sweeper's grace must exceed the queue's visibility timeout plus the dispatcher's
    # timeout (settings refuse less, and say why, before anything starts).
    queue_attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=env["WORKFLOWS_DISPATCH_QUEUE_URL"], AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    os.environ.setdefault("WORKFLOWS_DISPATCH_VISIBILITY_TIMEOUT_SEC", queue_attributes["VisibilityTimeout"])
    os.environ.setdefault(
        "WORKFLOWS_SWEEP_GRACE_SEC", str(int(os.environ["WORKFLOWS_DISPATCH_VISIBILITY_TIMEOUT_SEC"]) + 150)
    )
    # The sweeper runs every 30 s here (below): it wakes the long waits of its 30 s slot.
    os.environ.setdefault("WORKFLOWS_SWEEP_PERIOD_SEC", "30")
    # Fair shares (docs/architecture.md): the same design as deployed, sized for this machine.
    # Slow calls never hold every dispatcher poller; with tenants (multi_user), each has a step
    # rate well inside what the machine runs, so one tenant's flood leaves room for the others.
    dispatchers = max(1, int(os.environ.get("DEVSTACK_DISPATCHERS", "4")))
    os.environ.setdefault("WORKFLOWS_CALLS_IN_FLIGHT", str(max(1, dispatchers - 1)))
    os.environ.setdefault("WORKFLOWS_TENANT_CALLS_IN_FLIGHT", str(max(1, dispatchers // 2)))
    os.environ.setdefault("WORKFLOWS_CALL_RECHECK_SEC", "2")
    if os.environ.get("WORKFLOWS_AUTH_MODE") == "multi_user":
        os.environ.setdefault("WORKFLOWS_TENANT_STEPS_PER_SEC", "10")
        os.environ.setdefault("WORKFLOWS_TENANT_STEPS_BURST", "20")
    # Local receivers: webhooks may reach this machine (and only it, among private addresses).
    os.environ.setdefault("WORKFLOWS_WEBHOOK_ALLOWLIST", "127.0.0.1,localhost,host.docker.internal")
    os.environ.setdefault("WORKFLOWS_WEBHOOK_ALLOWED_PORTS", "*")
    try:
        get_settings()
    except ValueError as exc:
        sys.exit(f"devstack: the settings do not hold together: {exc}")
    host = function_host(bind)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if moto is not None:
        endpoint = f"http://{host}:{moto_port}"
    env_file = write_env_file(os.environ, endpoint=endpoint)
    write_stack_file(
        api=f"http://127.0.0.1:{port}/api/v1/workflows",
        aws_endpoint=os.environ["AWS_ENDPOINT_URL"],
        function_base=f"http://{host}:{port}",
        dispatch_dlq_url=env["DEVSTACK_DISPATCH_DLQ_URL"],
    )

    def report(exc: BaseException) -> None:
        print(f"devstack: worker error: {exc!r}", file=sys.stderr)

    # The parts Lambda's event sources and EventBridge play when deployed (off: none of them).
    background = _start_workers(env, region, report) if workers or workers_only else []
    if workers_only:
        return _serve_workers(background)

    from workflows.api.app import create_app
    from workflows.roots import api as api_root

    base = f"http://127.0.0.1:{port}/api/v1/workflows"
    multi_user = os.environ.get("WORKFLOWS_AUTH_MODE") == "multi_user"
    lines = [
        "",
        f"  Workflows API   {base}   (OpenAPI: {base}/docs)",
        f"  AWS endpoint    {os.environ['AWS_ENDPOINT_URL']}",
        f"  sam local       --env-vars {os.path.relpath(env_file)}   (make events: samples)",
        f"  Webhooks        POST http://127.0.0.1:{port}/_local/webhooks/<name> is a receiver",
        f"  Follow live     ws://127.0.0.1:{ws_port}/v1?run_id=<run_id>&since=0   (docs/engine.md)",
    ]
    if not workers:
        lines.append("  Workers         off: runs advance only when you invoke the functions")
    if multi_user:
        # The single-user key is not accepted; callers use per-user keys (docs/auth.md).
        lines += [
            "",
            "  Multi-user mode: create a tenant admin key (printed once) and use it as API_KEY:",
            f"    AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']} .venv/bin/python -m devstack.keys create "
            "--tenant acme --user alice --roles admin",
        ]
    else:
        lines += [
            f"  API key         {api_key}",
            "",
            "  Try:",
            f"    export API_KEY={api_key}",
            f"    curl -s -X POST {base}/runs \\",
            "      -H \"X-API-KEY: $API_KEY\" -H 'Content-Type: application/json' \\",
            '      -d \'{"definition": {"name": "hello", "steps": [{"id": "greet", "type": "log", '
            '"config": {"message": "Hello {{ inputs.name }}"}}]}, "inputs": {"name": "Ada"}}\'',
        ]
    lines += ["", "  Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)
    app = with_receiver(create_app(api_root.parts), WebhookReceiver())
    from devstack.functions import load_function as load
    from devstack.websocket import LocalWebSocketApi, WebSocketServer

    websocket = WebSocketServer(
        LocalWebSocketApi(load("follow").handler, on_error=report), host=bind, port=ws_port
    )
    websocket.start()
    background.append(websocket)
    try:
        # Long-polled event reads hold connections for up to 25 s: Ctrl-C waits 3 s for them, no more.
        uvicorn.run(app, host=bind, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        for part in background:
            part.stop()
        if moto:
            moto.stop()
    return 0


def _serve_workers(background: list[_Stoppable]) -> int:
    """Until SIGTERM or Ctrl-C: the workers' threads do the work."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("devstack: workers running (SIGTERM or Ctrl-C stops them)", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for part in background:
            part.stop()
    return 0


class _Stoppable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def _start_workers(
    env: dict[str, str], region: str, report: Callable[[BaseException], None]
) -> list[_Stoppable]:
    import boto3

    from devstack.functions import load_function
    from devstack.scheduler import LocalScheduler
    from devstack.workers import QueuePoller, Scheduler

    dispatcher = load_function("dispatcher")
    handler = dispatcher.handler
    if _switched_on("DEVSTACK_ACTIVITY"):
        from devstack.activity import ActivityPrinter
        from workflows.roots import dispatcher as dispatcher_root

        # One line per step outcome and run ending, read after each dispatcher invocation.
        handler = ActivityPrinter(dispatcher_root.parts().runs).around(handler)
    # Lambda's SQS event source polls with several concurrent invocations; so does this.
    parts: list[_Stoppable] = [
        QueuePoller(
            boto3.client("sqs"),
            env["WORKFLOWS_DISPATCH_QUEUE_URL"],
            handler,
            region=region,
            on_error=report,
        )
        for _ in range(max(1, int(os.environ.get("DEVSTACK_DISPATCHERS", "4"))))
    ]
    # The dispatch queue's dead letters (DispatchDlqFunction's event source).
    parts.append(
        QueuePoller(
            boto3.client("sqs"),
            env["DEVSTACK_DISPATCH_DLQ_URL"],
            load_function("dispatch_dlq").handler,
            region=region,
            on_error=report,
        )
    )
    if os.environ.get("WORKFLOWS_WEBHOOK_DLQ_ENABLED", "true").lower() == "true":
        parts.append(
            Scheduler(
                load_function("dlq_retry").handler,
                period=60.0,
                # The template's timeout: each invocation's passes reach into the next minute's.
                timeout=80.0,
                name="DlqRetryFunction",
                on_error=report,
            )
        )
    # The runs table's stream feeds FollowFunction (its event source mapping when deployed).
    from devstack.workers import StreamPoller, streams_client

    runs_table = boto3.client("dynamodb").describe_table(TableName=env["WORKFLOWS_RUNS_TABLE"])["Table"]
    parts.append(
        StreamPoller(
            streams_client(), runs_table["LatestStreamArn"], load_function("follow").handler, on_error=report
        )
    )
    # SweeperFunction's schedule (5 minutes deployed; sooner here, for a grace of minutes).
    parts.append(
        Scheduler(
            load_function("sweeper").handler,
            period=float(os.environ.get("WORKFLOWS_SWEEP_PERIOD_SEC", "30")),
            name="SweeperFunction",
            on_error=report,
        )
    )
    # EventBridge Scheduler's part: fire the API's schedules into the dispatch queue.
    parts.append(
        LocalScheduler(
            boto3.client("scheduler"),
            boto3.client("sqs"),
            group=env["WORKFLOWS_SCHEDULE_GROUP"],
            on_error=report,
        )
    )
    for part in parts:
        part.start()
    return parts


if __name__ == "__main__":
    raise SystemExit(main())
