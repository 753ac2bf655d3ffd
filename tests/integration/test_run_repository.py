"""The run repository against moto tables created from template.yaml's key schema."""

from __future__ import annotations

import threading
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.commits import new_run, transition
from workflows.adapters.runs import RunRepository
from workflows.domain.run import EventType, NewEvent, Run, RunStatus
from workflows.errors import StaleWrite
from workflows.roots.parts import Parts


@pytest.fixture
def container(moto_container: Parts) -> Parts:
    """These tests read the tables and queues themselves: they run on moto."""
    return moto_container


@pytest.fixture
def client(moto_client: TestClient) -> TestClient:
    return moto_client


def _new_run(container: Parts, run_id: str = "run-1", tenant: str = "t1") -> Run:
    return new_run(container.runs, run_id, tenant)


def test_twenty_concurrent_appends_yield_seqs_1_to_20(container: Parts) -> None:
    run = _new_run(container)
    barrier = threading.Barrier(20)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def append(n: int) -> None:
        try:
            barrier.wait()
            seqs = container.runs.append_events(
                run.tenant_id, run.run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY, payload={"n": n})]
            )
            results.append(seqs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(seq for seqs in results for seq in seqs) == list(range(1, 21))
    page = container.runs.list_events(run.tenant_id, run.run_id, limit=1000)
    assert [e.event_seq for e in page.events] == list(range(1, 21))
    assert sorted(e.payload["n"] for e in page.events) == list(range(20))
    assert container.runs.get(run.tenant_id, run.run_id).last_event_seq == 20


def test_state_change_and_events_are_written_together(container: Parts) -> None:
    run = _new_run(container)
    updated = transition(
        container.runs, run, {"status": RunStatus.RUNNING}, [NewEvent(event_type=EventType.RUN_STARTED)]
    )
    assert updated.version == 2
    assert updated.last_event_seq == 1
    stored = container.runs.get(run.tenant_id, run.run_id)
    assert (stored.status, stored.version, stored.last_event_seq) == (RunStatus.RUNNING, 2, 1)


def test_losing_writer_records_nothing(container: Parts) -> None:
    # Given two writers that read the same version
    run = _new_run(container)
    transition(
        container.runs, run, {"status": RunStatus.RUNNING}, [NewEvent(event_type=EventType.RUN_STARTED)]
    )

    # When the second writes from the stale read
    with pytest.raises(StaleWrite):
        transition(
            container.runs,
            run,
            {"status": RunStatus.CANCELLED},
            [NewEvent(event_type=EventType.RUN_CANCELLED)],
        )

    # Then neither its state nor its event exists
    stored = container.runs.get(run.tenant_id, run.run_id)
    assert stored.status == RunStatus.RUNNING
    events = container.runs.list_events(run.tenant_id, run.run_id).events
    assert [e.event_type for e in events] == ["run_started"]


def test_state_change_after_concurrent_append_is_renumbered(container: Parts) -> None:
    # An append (no state change) between read and write must not make the write stale.
    run = _new_run(container)
    container.runs.append_events(run.tenant_id, run.run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)])
    updated = transition(
        container.runs, run, {"status": RunStatus.RUNNING}, [NewEvent(event_type=EventType.RUN_STARTED)]
    )
    assert updated.last_event_seq == 2
    events = container.runs.list_events(run.tenant_id, run.run_id).events
    assert [(e.event_seq, e.event_type) for e in events] == [(1, "webhook_delivery"), (2, "run_started")]


def test_another_tenants_run_is_not_found(container: Parts) -> None:
    from workflows.errors import NotFound

    run = _new_run(container, tenant="t1")
    with pytest.raises(NotFound):
        container.runs.get("t2", run.run_id)


def _copying(container: Parts) -> RunRepository:
    """The container's run repository, but copying every commit's events to the events table at
    the next commit (none ride in the run item beyond the latest commit's)."""
    settings = container.settings
    return RunRepository(
        container.dynamodb, settings.runs_table, settings.run_events_table, carry_item_bytes=0
    )


def test_events_page_reads_only_the_page(container: Parts) -> None:
    # DynamoDB work is proportional to the page: the Query's Limit bounds the items read.
    run = _new_run(container)
    runs = _copying(container)
    for _ in range(60):
        runs.append_events(run.tenant_id, run.run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)])
    calls: list[dict[str, object]] = []
    original = container.dynamodb.query

    def counting_query(**kwargs: object) -> dict[str, object]:
        response: dict[str, object] = original(**kwargs)
        calls.append({"limit": kwargs.get("Limit"), "scanned": response.get("ScannedCount")})
        return response

    container.dynamodb.query = counting_query
    page = runs.list_events(run.tenant_id, run.run_id, since=40, limit=10)
    assert [e.event_seq for e in page.events] == list(range(41, 51))
    assert calls == [{"limit": 10, "scanned": 10}]


def test_a_commit_longer_than_a_page_is_paged_through_without_a_gap(container: Parts) -> None:
    # Given one commit of 60 events, stored as one item
    run = _new_run(container)
    container.runs.append_events(
        run.tenant_id,
        run.run_id,
        [NewEvent(event_type=EventType.WEBHOOK_DELIVERY, payload={"n": n}) for n in range(60)],
    )
    # and a later commit, so the long one is read from the events table, not the run item
    container.runs.append_events(run.tenant_id, run.run_id, [NewEvent(event_type=EventType.WEBHOOK_DELIVERY)])
    # When it is paged 7 at a time from the middle of the commit
    seen: list[int] = []
    since = 40
    while True:
        page = container.runs.list_events(run.tenant_id, run.run_id, since=since, limit=7)
        assert page.next_since > since or not page.has_more  # every page makes progress
        seen += [e.event_seq for e in page.events]
        since = page.next_since
        if not page.has_more:
            break
    # Then every event once, in order
    assert seen == list(range(41, 62))
    tail = container.runs.list_events(run.tenant_id, run.run_id, since=58).events
    assert [e.payload.get("n") for e in tail] == [58, 59, None]


# ---- shared definition snapshots -------------------------------------------------------------


def _snapshot_items(container: Parts) -> list[dict[str, Any]]:
    table = container.settings.runs_table
    items = container.dynamodb.scan(TableName=table)["Items"]
    return [item for item in items if item["sk"]["S"] == "DEFINITION"]


def test_runs_of_one_definition_share_one_snapshot_per_tenant(container: Parts) -> None:
    for n in range(3):
        _new_run(container, f"run-{n}", tenant="t1")
    _new_run(container, "run-other", tenant="t2")
    snapshots = _snapshot_items(container)
    assert sorted(item["pk"]["S"].split("#def#")[0] for item in snapshots) == ["t1", "t2"]
    run, definition = container.runs.get_with_definition("t1", "run-2")
    assert run.definition_hash is not None
    assert definition.steps[0].id == "a"


def test_another_process_reads_the_snapshot_and_keeps_it_from_expiring(
    container: Parts, aws_env: dict[str, str]
) -> None:
    from tests.conftest import make_container

    _new_run(container, "run-1")
    [snapshot] = _snapshot_items(container)
    soon = int(container.clock().timestamp()) + 3600
    container.dynamodb.update_item(
        TableName=container.settings.runs_table,
        Key={"pk": snapshot["pk"], "sk": snapshot["sk"]},
        UpdateExpression="SET expires_at = :e",
        ExpressionAttributeValues={":e": {"N": str(soon)}},
    )
    fresh = make_container(aws_env, container.clock)  # type: ignore[arg-type]
    _, definition = fresh.runs.get_with_definition("t1", "run-1")
    assert definition.name == "d"
    [extended] = _snapshot_items(container)
    retention = container.settings.run_retention_days * 86_400
    assert int(extended["expires_at"]["N"]) >= int(container.clock().timestamp()) + retention


def test_a_run_stored_with_its_own_snapshot_still_reads_it(container: Parts) -> None:
    run = _new_run(container, "run-old")
    stored = container.runs.get("t1", "run-old")
    table = container.settings.runs_table
    # The layout before snapshots were shared: a DEFINITION item under the run's own key, and
    # no definition_hash on the run item.
    [snapshot] = _snapshot_items(container)
    container.dynamodb.put_item(
        TableName=table,
        Item={
            "pk": {"S": f"t1#{run.run_id}"},
            "sk": {"S": "DEFINITION"},
            "definition": snapshot["definition"],
        },
    )
    container.dynamodb.delete_item(TableName=table, Key={"pk": snapshot["pk"], "sk": snapshot["sk"]})
    container.dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": f"t1#{run.run_id}"}, "sk": {"S": "RUN"}},
        UpdateExpression="REMOVE definition_hash",
    )
    fresh_reader = container.runs.__class__(container.dynamodb, table, container.settings.run_events_table)
    read, definition = fresh_reader.get_with_definition("t1", "run-old")
    assert read.version == stored.version
    assert read.definition_hash is None
    assert definition.steps[0].id == "a"


def test_events_stored_compressed_and_as_plain_json_before_read_alike(container: Parts) -> None:
    run = _new_run(container, "run-events")
    current = container.runs.get("t1", "run-events")
    long_payload = {"output": {"message": "x" * 600}}
    runs = _copying(container)
    current = transition(
        runs, current, {}, [NewEvent(event_type=EventType.STEP_STARTED, payload=long_payload)]
    )
    current = transition(runs, current, {})  # the next commit copies the one before
    table = container.settings.run_events_table
    [compressed] = container.dynamodb.scan(TableName=table)["Items"]
    assert "B" in compressed["events"]  # compressed past a few hundred bytes
    # An item written before compression: plain JSON text.
    plain = dict(compressed)
    plain["events"] = {"S": zlib.decompress(compressed["events"]["B"]).decode()}
    container.dynamodb.put_item(TableName=table, Item=plain)
    page = container.runs.list_events("t1", run.run_id, since=0, limit=10)
    assert [e.payload for e in page.events] == [long_payload]
