"""Faults: crashes mid-step, duplicate and concurrent deliveries, racing dispatchers."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from tests.conftest import drain, log_definition
from tests.faults import Faulty, one_step_left
from workflows.domain.messages import AdvanceMessage
from workflows.domain.run import RunStatus
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


def _submit(client: TestClient, *messages: str) -> str:
    response = client.post("/api/v1/workflows/runs", json={"definition": log_definition(*messages)})
    run_id: str = response.json()["run_id"]
    return run_id


def _assert_clean_history(container: Parts, run_id: str, steps: int) -> None:
    events = container.runs.list_events("default", run_id, limit=1000).events
    assert [e.event_seq for e in events] == list(range(1, len(events) + 1))
    completed = Counter(e.step_id for e in events if e.event_type == "step_completed")
    assert completed == Counter({f"s{i + 1}": 1 for i in range(steps)})
    assert [e.event_type for e in events].count("run_completed") == 1


def test_crash_after_the_step_ran_before_commit_reruns_the_step_once(
    client: TestClient, container: Parts
) -> None:
    runs = Faulty(container.runs)
    container.give(runs=runs)
    run_id = _submit(client, "a", "b")
    kick = AdvanceMessage(tenant_id="default", run_id=run_id, version=1)

    # When the process dies between executing the step and committing it
    runs.fail("commit", RuntimeError("the Lambda was killed"))
    with pytest.raises(RuntimeError):
        container.engine.process(kick, one_step_left)
    assert runs.faults["commit"] == 1
    assert container.runs.get("default", run_id).steps_executed == 0  # nothing was recorded

    # Then SQS redelivers the same message and the run completes with each step once
    drain(container)
    assert container.runs.get("default", run_id).status == RunStatus.SUCCEEDED
    _assert_clean_history(container, run_id, 2)


def test_the_same_message_delivered_concurrently_commits_once(client: TestClient, container: Parts) -> None:
    run_id = _submit(client, "a", "b", "c")
    kick = AdvanceMessage(tenant_id="default", run_id=run_id, version=1)
    barrier = threading.Barrier(4)
    actions: list[str] = []

    def deliver() -> None:
        barrier.wait()
        actions.append(container.engine.process(kick, one_step_left).action)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert actions.count("advanced") == 1
    assert set(actions) <= {"advanced", "lost_race", "stale"}
    drain(container)
    assert container.runs.get("default", run_id).status == RunStatus.SUCCEEDED
    _assert_clean_history(container, run_id, 3)


def test_two_dispatchers_racing_on_every_message(client: TestClient, container: Parts) -> None:
    run_ids = [_submit(client, "a", "b", "c", "d") for _ in range(3)]
    url = container.settings.dispatch_queue_url

    def dispatcher() -> None:
        # Each dispatcher handles every message it sees, and also replays it once more, as a
        # duplicate delivery would.
        for _ in range(200):
            received = container.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5, VisibilityTimeout=0)
            messages = received.get("Messages", [])
            if not messages and all(
                container.runs.get("default", r).status == RunStatus.SUCCEEDED for r in run_ids
            ):
                return
            for message in messages:
                kick = AdvanceMessage.from_body(message["Body"])
                container.engine.process(kick, one_step_left)
                container.engine.process(kick, one_step_left)
                container.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for run_id in run_ids:
        assert container.runs.get("default", run_id).status == RunStatus.SUCCEEDED
        _assert_clean_history(container, run_id, 4)
