"""`make events`: sample events for `sam local invoke`, bound to live objects of the running stack.

    python -m devstack.events          # write events/local/<FunctionLogicalId>/*.json
    python -m devstack.events check    # after invoking them: did each do its work?

With `make run` up (best with DEVSTACK_WORKERS=off, so that nothing else takes the work), this
submits runs through the API and takes their dispatch messages off the queue, so that each event
does real work when invoked:

- DispatcherFunction/advance.json: the first kick of a run (log, delay, log); invoked, the
  dispatcher runs its first step.
- DispatchDlqFunction/dead_letter.json: a run's kick as the dispatch dead-letter queue delivers
  it; invoked, the consumer fails the run with `internal_error`.
- DlqRetryFunction/schedule.json: the schedule's event, and a due webhook DLQ row addressed to
  the stack's receiver (/_local/webhooks); invoked, the worker delivers it.
- SweeperFunction/schedule.json: the schedule's event (it finds nothing lost in a fresh stack).
- ApiFunction/*.json: health, a submission, and reads of the dispatcher's run, with the stack's
  API key.

What the events name is kept in events/local/state.json for `check`.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from devstack.functions import LAYER
from devstack.provision import ROOT
from devstack.sam_local import LOCAL_EVENTS, read_env_file, read_stack_file, write_private
from devstack.workers import sqs_event

SAMPLES = ROOT / "events"
STATE_FILE = LOCAL_EVENTS / "state.json"
REGION = "us-east-1"

ADVANCE_DEFINITION = {
    "name": "sam-local-advance",
    "steps": [
        {"id": "greet", "type": "log", "config": {"message": "Hello from sam local invoke"}},
        {"id": "pause", "type": "delay", "config": {"seconds": 1}},
        {"id": "done", "type": "log", "config": {"message": "done"}},
    ],
}
DEAD_LETTER_DEFINITION = {
    "name": "sam-local-dead-letter",
    "steps": [{"id": "never", "type": "log", "config": {"message": "not reached"}}],
}


class Stack:
    def __init__(self) -> None:
        import boto3

        self.env = read_env_file()
        self.stack = read_stack_file()
        if self.env.get("WORKFLOWS_AUTH_MODE") == "multi_user":
            raise SystemExit("make events needs the local stack in single_user mode (its one API key)")
        self.key = self.env["WORKFLOWS_API_KEY"]
        self.http = httpx.Client(base_url=self.stack["api"], headers={"X-API-KEY": self.key}, timeout=30)
        self.sqs = boto3.client("sqs", endpoint_url=self.stack["aws_endpoint"], region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", endpoint_url=self.stack["aws_endpoint"], region_name=REGION)

    def submit(self, definition: dict[str, Any]) -> str:
        answer = self.http.post("/runs", json={"definition": definition, "inputs": {}})
        if answer.status_code != 202:
            raise SystemExit(f"submitting a run answered {answer.status_code}: {answer.text}")
        run_id: str = answer.json()["run_id"]
        return run_id

    def take_kick(self, queue_url: str, run_id: str, wait: float = 20.0) -> dict[str, Any]:
        """Receive the run's message and delete it from the queue: the event is its delivery."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            received = self.sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                VisibilityTimeout=1,
            ).get("Messages", [])
            for message in received:
                if json.loads(message["Body"]).get("run_id") == run_id:
                    self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                    return dict(message)
        raise SystemExit(
            f"no dispatch message for run {run_id} within {wait:.0f} s: is the stack running "
            "with its workers on? Start it with DEVSTACK_WORKERS=off so that the message waits"
        )

    def queue_arn(self, queue_url: str) -> str:
        attributes = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        arn: str = attributes["Attributes"]["QueueArn"]
        return arn

    def sqs_event(self, message: dict[str, Any], queue_url: str) -> dict[str, Any]:
        """The message as Lambda's SQS event source delivers it (devstack.workers builds it)."""
        return sqs_event([message], self.queue_arn(queue_url), REGION)

    def due_dlq_row(self, run_id: str) -> dict[str, str]:
        """A webhook that failed once and is due now, addressed to the stack's receiver."""
        if str(LAYER) not in sys.path:
            sys.path.insert(0, str(LAYER))
        from workflows.adapters.dlq import WebhookDlqRepository
        from workflows.domain.dlq import DlqRow

        name = f"sam-local-{uuid.uuid4().hex[:8]}"
        row = DlqRow.new(
            tenant_id="default",
            run_id=run_id,
            url=f"{self.stack['function_base']}/_local/webhooks/{name}",
            body_json=json.dumps({"type": "run.sample", "data": {"run_id": run_id}}),
            now=datetime.now(UTC),
            last_error="connection refused (a sample row)",
            attempts=1,
        )
        WebhookDlqRepository(self.dynamodb, self.env["WORKFLOWS_WEBHOOK_DLQ_TABLE"]).add(row)
        return {"row_id": row.id, "path": f"/_local/webhooks/{name}"}


def _api_event(sample: str, *, key: str, path: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((SAMPLES / "ApiFunction" / sample).read_text()))
    if "x-api-key" in event["headers"]:
        event["headers"]["x-api-key"] = key
    if path is not None:
        full = f"/api/v1/workflows/{path}"
        event["rawPath"] = full
        event["requestContext"]["http"]["path"] = full
        event["pathParameters"] = {"proxy": path}
    return event


def _schedule_event(function: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SAMPLES / "DlqRetryFunction" / "schedule.json").read_text())
    event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["resources"] = [f"arn:aws:scheduler:{REGION}:123456789012:schedule/default/workflows-{function}"]
    return event


def _write(relative: str, event: dict[str, Any]) -> Path:
    path = LOCAL_EVENTS / relative
    # The API events carry the stack's key: readable by their owner only, as env.json.
    write_private(path, json.dumps(event, indent=2) + "\n")
    return path


def write_events() -> int:
    stack = Stack()
    queue = stack.env["WORKFLOWS_DISPATCH_QUEUE_URL"]
    dead_letters = stack.stack["dispatch_dlq_url"]

    advance_run = stack.submit(ADVANCE_DEFINITION)
    kick = stack.take_kick(queue, advance_run)
    written = [_write("DispatcherFunction/advance.json", stack.sqs_event(kick, queue))]

    dead_run = stack.submit(DEAD_LETTER_DEFINITION)
    dead_kick = stack.take_kick(queue, dead_run)
    # As SQS's redrive would: the same body, now a message of the dead-letter queue.
    stack.sqs.send_message(QueueUrl=dead_letters, MessageBody=dead_kick["Body"])
    dead_letter = stack.take_kick(dead_letters, dead_run)
    written.append(_write("DispatchDlqFunction/dead_letter.json", stack.sqs_event(dead_letter, dead_letters)))

    row = stack.due_dlq_row(advance_run)
    written.append(_write("DlqRetryFunction/schedule.json", _schedule_event("DlqRetryFunction")))
    written.append(_write("SweeperFunction/schedule.json", _schedule_event("SweeperFunction")))

    written.append(_write("ApiFunction/health.json", _api_event("health.json", key=stack.key)))
    written.append(_write("ApiFunction/submit_run.json", _api_event("submit_run.json", key=stack.key)))
    run_path = f"runs/{advance_run}"
    written.append(
        _write("ApiFunction/get_run.json", _api_event("get_run.json", key=stack.key, path=run_path))
    )
    written.append(
        _write(
            "ApiFunction/get_events.json",
            _api_event("get_events.json", key=stack.key, path=f"{run_path}/events"),
        )
    )
    state = {"advance_run": advance_run, "dead_letter_run": dead_run, "dlq_row": row}
    STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")
    for path in written:
        print(f"  {os.path.relpath(path)}")
    print(f"Runs: {advance_run} (waits for DispatcherFunction), {dead_run} (for DispatchDlqFunction)")
    return 0


def check() -> int:
    """Whether the invoked functions did the events' work; one line per finding."""
    stack = Stack()
    state = json.loads(STATE_FILE.read_text())
    problems: list[str] = []

    advanced, dead_letter = state["advance_run"], state["dead_letter_run"]
    events = stack.http.get(f"/runs/{advanced}/events", params={"since": 0}).json()["events"]
    if not any(e["event_type"] == "step_completed" and e.get("step_id") == "greet" for e in events):
        problems.append(f"DispatcherFunction: run {advanced} did not run its first step: {events}")

    dead = stack.http.get(f"/runs/{dead_letter}").json()
    if dead.get("status") != "failed" or (dead.get("error") or {}).get("code") != "internal_error":
        problems.append(f"DispatchDlqFunction: run {dead_letter} is not failed with internal_error: {dead}")

    receiver = stack.stack["api"].split("/api/")[0] + "/_local/webhooks"
    received = httpx.get(receiver, timeout=10).json()["items"]
    if not any(item["path"] == state["dlq_row"]["path"] for item in received):
        problems.append(f"DlqRetryFunction: the due row {state['dlq_row']['row_id']} was not delivered")

    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("Every invoked function did its work: the run advanced, the dead letter failed its run,")
        print("and the due webhook DLQ row was delivered.")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    # The local emulator takes any credentials; these, as `make run` uses, unless some are set.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    args = sys.argv[1:] if argv is None else argv
    if args == ["check"]:
        return check()
    if args:
        raise SystemExit("usage: python -m devstack.events [check]")
    return write_events()


if __name__ == "__main__":
    raise SystemExit(main())
