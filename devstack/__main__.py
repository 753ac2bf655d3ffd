"""`make run`: the whole service on this machine.

1. An embedded moto server on 127.0.0.1 (unless AWS_ENDPOINT_URL points elsewhere).
2. The stateful resources of template.yaml, created through CloudFormation on that endpoint.
3. The dispatcher fed from the dispatch queue, the consumer of its dead letters, the DLQ worker
   and the sweeper on their schedules, and the workflows' own schedules fired into the
   dispatch queue (devstack/scheduler.py).
4. The FastAPI app on http://127.0.0.1:8000 (uvicorn). Ctrl-C stops everything.

Environment: WORKFLOWS_API_KEY (else one is generated), PORT (8000), MOTO_PORT (5050),
AWS_ENDPOINT_URL (use another endpoint instead of the embedded server), LOG_LEVEL (WARNING),
DEVSTACK_VISIBILITY_TIMEOUT (10: seconds before a failed dispatch message is retried),
DEVSTACK_DISPATCHERS (4: concurrent dispatcher invocations).
"""

from __future__ import annotations

import os
import secrets
import sys
import warnings

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
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", os.environ.get("LOG_LEVEL", "WARNING"))
    # Handlers that emit no metric in an invocation would warn on every call.
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def main() -> int:
    _environment()
    # Imported after the environment is set: Powertools reads it at import time.
    import boto3
    import uvicorn

    from devstack import provision
    from devstack.functions import LAYER, load_function
    from devstack.moto_server import MotoServerProcess

    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    from devstack.scheduler import LocalScheduler, ensure_scheduling
    from devstack.workers import QueuePoller, Scheduler
    from workflows.settings import get_settings

    port = int(os.environ.get("PORT", "8000"))
    moto: MotoServerProcess | None = None
    if not os.environ.get("AWS_ENDPOINT_URL"):
        moto = MotoServerProcess("127.0.0.1", int(os.environ.get("MOTO_PORT", "5050")))
        moto.start()
        os.environ["AWS_ENDPOINT_URL"] = moto.url
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
    # Local receivers: webhooks may reach this machine (and only it, among private addresses).
    os.environ.setdefault("WORKFLOWS_WEBHOOK_ALLOWLIST", "127.0.0.1,localhost")
    os.environ.setdefault("WORKFLOWS_WEBHOOK_ALLOWED_PORTS", "*")
    try:
        get_settings()
    except ValueError as exc:
        sys.exit(f"devstack: the settings do not hold together: {exc}")

    def report(exc: BaseException) -> None:
        print(f"devstack: worker error: {exc!r}", file=sys.stderr)

    dispatcher = load_function("dispatcher")
    # Lambda's SQS event source polls with several concurrent invocations; so does this.
    pollers = [
        QueuePoller(
            boto3.client("sqs"),
            env["WORKFLOWS_DISPATCH_QUEUE_URL"],
            dispatcher.handler,
            region=region,
            on_error=report,
        )
        for _ in range(max(1, int(os.environ.get("DEVSTACK_DISPATCHERS", "4"))))
    ]
    # The dispatch queue's dead letters (DispatchDlqFunction's event source).
    pollers.append(
        QueuePoller(
            boto3.client("sqs"),
            env["DEVSTACK_DISPATCH_DLQ_URL"],
            load_function("dispatch_dlq").handler,
            region=region,
            on_error=report,
        )
    )
    for poller in pollers:
        poller.start()
    dlq_enabled = os.environ.get("WORKFLOWS_WEBHOOK_DLQ_ENABLED", "true").lower() == "true"
    scheduler = None
    if dlq_enabled:
        scheduler = Scheduler(
            load_function("dlq_retry").handler, period=60.0, name="DlqRetryFunction", on_error=report
        )
        scheduler.start()

    # SweeperFunction's schedule (5 minutes deployed; sooner here, for a grace of minutes).
    sweeper = Scheduler(
        load_function("sweeper").handler, period=30.0, name="SweeperFunction", on_error=report
    )
    sweeper.start()

    # EventBridge Scheduler's part: fire the API's schedules into the dispatch queue.
    run_schedules = LocalScheduler(
        boto3.client("scheduler"),
        boto3.client("sqs"),
        group=env["WORKFLOWS_SCHEDULE_GROUP"],
        on_error=report,
    )
    run_schedules.start()

    from workflows.api.app import create_app
    from workflows.roots import api as api_root

    base = f"http://127.0.0.1:{port}/api/v1/workflows"
    print(
        "\n".join(
            [
                "",
                f"  Workflows API   {base}",
                f"  AWS endpoint    {os.environ['AWS_ENDPOINT_URL']}",
                f"  API key         {api_key}",
                "",
                "  Try:",
                f"    export API_KEY={api_key}",
                f"    curl -s -X POST {base}/runs \\",
                "      -H \"X-API-KEY: $API_KEY\" -H 'Content-Type: application/json' \\",
                '      -d \'{"definition": {"name": "hello", "steps": [{"id": "greet", "type": "log", '
                '"config": {"message": "Hello {{ inputs.name }}"}}]}, "inputs": {"name": "Ada"}}\'',
                "",
                "  Ctrl-C stops everything.",
                "",
            ]
        ),
        flush=True,
    )
    if os.environ.get("WORKFLOWS_AUTH_MODE") == "multi_user":
        # Multi-user mode: the key above is not accepted; callers use per-user keys (docs/auth.md).
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        print(
            "  Multi-user mode: create a tenant admin key (printed once) and use it as API_KEY:\n"
            f"    AWS_ENDPOINT_URL={endpoint} .venv/bin/python -m devstack.keys create "
            "--tenant acme --user alice --roles admin\n",
            flush=True,
        )
    try:
        uvicorn.run(create_app(api_root.parts), host="127.0.0.1", port=port, log_level="warning")
    finally:
        for poller in pollers:
            poller.stop()
        run_schedules.stop()
        sweeper.stop()
        if scheduler:
            scheduler.stop()
        if moto:
            moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
