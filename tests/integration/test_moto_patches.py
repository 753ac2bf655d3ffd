"""The emulator patches: TransactWriteItems all-or-nothing while copying only what it touches,
standard queues that deliver fairly between message groups (SQS fair queues), and a Query of
the table that reads only its partition yet answers as moto does."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from devstack import moto_patches


def _table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "x"}}


@pytest.fixture
def ddb() -> Any:
    moto_patches.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _table(client, "a")
        _table(client, "b")
        yield client


def test_a_cancelled_transaction_leaves_every_item_as_it_was(ddb: Any) -> None:
    ddb.put_item(TableName="a", Item={**_key("kept"), "v": {"N": "1"}, "g": {"S": "old"}})
    ddb.put_item(TableName="b", Item={**_key("guard"), "v": {"N": "1"}})
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "a", "Item": {**_key("kept"), "v": {"N": "2"}, "g": {"S": "new"}}}},
                {"Put": {"TableName": "a", "Item": {**_key("fresh"), "v": {"N": "1"}}}},
                {"Delete": {"TableName": "b", "Key": _key("guard-2")}},
                {
                    "Update": {
                        "TableName": "b",
                        "Key": _key("guard"),
                        "UpdateExpression": "SET v = :two",
                        "ConditionExpression": "v = :zero",
                        "ExpressionAttributeValues": {":two": {"N": "2"}, ":zero": {"N": "0"}},
                    }
                },
            ]
        )
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    kept = ddb.get_item(TableName="a", Key=_key("kept"))["Item"]
    assert kept["v"] == {"N": "1"}
    assert kept["g"] == {"S": "old"}
    assert "Item" not in ddb.get_item(TableName="a", Key=_key("fresh"))
    assert ddb.get_item(TableName="b", Key=_key("guard"))["Item"]["v"] == {"N": "1"}
    by_g = ddb.query(
        TableName="a",
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "new"}},
    )
    assert by_g["Items"] == []


def test_a_committed_transaction_applies_every_item(ddb: Any) -> None:
    ddb.put_item(TableName="b", Item={**_key("gone"), "v": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "a", "Item": {**_key("one"), "v": {"N": "1"}}}},
            {"Delete": {"TableName": "b", "Key": _key("gone")}},
            {
                "ConditionCheck": {
                    "TableName": "a",
                    "Key": _key("absent"),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
    )
    assert ddb.get_item(TableName="a", Key=_key("one"))["Item"]["v"] == {"N": "1"}
    assert "Item" not in ddb.get_item(TableName="b", Key=_key("gone"))


def test_the_table_is_not_copied(ddb: Any) -> None:
    """A transaction against a table costs the same whatever else the table holds."""
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends["123456789012"]["us-east-1"]
    table_before = backend.tables["a"]
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "a", "Item": {**_key("one")}}}])
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "a", "Item": {**_key("two")}}},
                {
                    "Put": {
                        "TableName": "a",
                        "Item": {**_key("one")},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    assert backend.tables["a"] is table_before
    assert "Item" not in ddb.get_item(TableName="a", Key=_key("two"))


def test_a_query_of_the_table_answers_its_partition_in_order_with_conditions_and_pages(ddb: Any) -> None:
    for pk in ("p1", "p2", "p0"):
        for sk in ("c", "a", "e", "b", "d"):
            ddb.put_item(TableName="a", Item={"pk": {"S": pk}, "sk": {"S": sk}, "g": {"S": "G"}})

    def query(**extra: Any) -> list[tuple[str, str]]:
        answer = ddb.query(
            TableName="a",
            KeyConditionExpression="pk = :pk" + extra.pop("range", ""),
            ExpressionAttributeValues={":pk": {"S": "p1"}, **extra.pop("values", {})},
            **extra,
        )
        return [(item["pk"]["S"], item["sk"]["S"]) for item in answer["Items"]]

    assert query() == [("p1", s) for s in "abcde"]
    assert query(ScanIndexForward=False, Limit=2) == [("p1", "e"), ("p1", "d")]
    assert query(range=" AND sk > :sk", values={":sk": {"S": "b"}}) == [("p1", s) for s in "cde"]
    page = ddb.query(
        TableName="a",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "p1"}},
        Limit=2,
    )
    rest = ddb.query(
        TableName="a",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "p1"}},
        ExclusiveStartKey=page["LastEvaluatedKey"],
    )
    assert [item["sk"]["S"] for item in rest["Items"]] == ["c", "d", "e"]
    # An index is queried as moto does: across partitions.
    found = ddb.query(
        TableName="a",
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "G"}},
    )
    assert len(found["Items"]) == 15
    missing = ddb.query(
        TableName="a", KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "nope"}}
    )
    assert missing["Items"] == []


@pytest.fixture
def sqs() -> Any:
    moto_patches.install()
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _receive(sqs: Any, url: str, count: int) -> list[str]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count).get("Messages", [])
    return [m["Body"] for m in messages]


def test_a_group_with_a_backlog_does_not_hold_back_another_groups_message(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="dispatch")["QueueUrl"]
    for n in range(30):
        sqs.send_message(QueueUrl=url, MessageBody=f"flood-{n}", MessageGroupId="acme")
    sqs.send_message(QueueUrl=url, MessageBody="quiet", MessageGroupId="globex")

    assert "quiet" in _receive(sqs, url, 10)


def test_a_group_with_messages_in_flight_is_served_after_the_others(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="dispatch")["QueueUrl"]
    for n in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"flood-{n}", MessageGroupId="acme")
    assert _receive(sqs, url, 2) == ["flood-0", "flood-1"]
    sqs.send_message(QueueUrl=url, MessageBody="quiet", MessageGroupId="globex")

    assert _receive(sqs, url, 1) == ["quiet"]


def test_each_groups_messages_keep_their_order(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="dispatch")["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"a-{n}", MessageGroupId="acme")
        sqs.send_message(QueueUrl=url, MessageBody=f"b-{n}", MessageGroupId="globex")

    received = _receive(sqs, url, 10)

    assert [body for body in received if body.startswith("a-")] == ["a-0", "a-1", "a-2"]
    assert [body for body in received if body.startswith("b-")] == ["b-0", "b-1", "b-2"]
