"""The parts of Lambda's event sources the local stack plays itself.

- `QueuePoller` is the SQS event source mapping: it receives batches from the dispatch queue,
  hands them to the dispatcher's handler as an SQS event, and deletes the records the handler
  did not report as failed. Failed records come back after the visibility timeout, and moto
  moves them to the dead-letter queue after the redrive policy's receive count.
- `StreamPoller` is the DynamoDB stream event source mapping of the runs table: it reads each
  shard's records in order, hands them to FollowFunction's handler in batches (as Lambda does,
  binary values base64-encoded) and moves on past a batch once the handler returns, or from
  the first record it reported as failed.
- `Scheduler` is the EventBridge schedule: it invokes a handler every `period` seconds, each
  invocation on its own thread with a Lambda time limit of `timeout` seconds, so an invocation
  that outlasts the period overlaps the next one, as on AWS.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from devstack.functions import LambdaContext

Handler = Callable[[dict[str, Any], Any], Any]


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody")
                or hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class _Poller:
    """A thread that calls `poll_once` until stopped, resting `idle` seconds after a round that
    found nothing, and outliving a bad batch (its error reported, as Lambda's retries would)."""

    def __init__(self, name: str, idle: float, on_error: Callable[[BaseException], None]) -> None:
        self._idle = idle
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def poll_once(self) -> int:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once() == 0:
                    self._stop.wait(self._idle)
            except Exception as exc:  # noqa: BLE001 - a poller must outlive one bad batch, as Lambda does
                self._on_error(exc)
                self._stop.wait(1.0)


class QueuePoller(_Poller):
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        *,
        region: str,
        batch_size: int = 10,
        idle_sleep: float = 0.05,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        super().__init__("dispatch-poller", idle_sleep, on_error)
        self._sqs = sqs
        self._url = queue_url
        self._handler = handler
        self._region = region
        self._batch = batch_size
        self._arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def poll_once(self) -> int:
        received = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=self._batch,
            # A short long poll: the emulator answers as soon as a message arrives, and an idle
            # stack does not keep it busy answering empty receives.
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = received.get("Messages", [])
        if not messages:
            return 0
        context = LambdaContext(
            function_name="DispatcherFunction", aws_request_id=str(uuid.uuid4()), timeout_ms=120_000
        )
        response = self._handler(sqs_event(messages, self._arn, self._region), context) or {}
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)


class Scheduler:
    def __init__(
        self,
        handler: Handler,
        *,
        period: float,
        name: str,
        timeout: float | None = None,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self._handler = handler
        self._period = period
        self._timeout = timeout or period
        self._name = name
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # An invocation in progress may be between passes; like a Lambda that times out, it is
        # simply abandoned (a claimed row's lease expires and the row is retried).
        self._stop.set()
        self._thread.join(timeout=1)

    def _loop(self) -> None:
        # A pass at once, then at each moment of the period's grid, as a rate schedule's are,
        # with that moment as the event's time (the sweeper wakes the long waits of its slot).
        tick = math.floor(time.time() / self._period) * self._period
        while True:
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.scheduler",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tick)),
                "detail": {},
            }
            threading.Thread(target=self._invoke, args=(event,), name=self._name, daemon=True).start()
            tick = max(tick + self._period, math.floor(time.time() / self._period) * self._period)
            if self._stop.wait(max(0.0, tick - time.time())):
                return

    def _invoke(self, event: dict[str, Any]) -> None:
        try:
            context = LambdaContext(function_name=self._name, timeout_ms=int(self._timeout * 1000))
            self._handler(event, context)
        except Exception as exc:  # noqa: BLE001 - the schedule fires again regardless, as on AWS
            self._on_error(exc)


def streams_client() -> Any:
    """A DynamoDB Streams client that names the regional endpoint: botocore's default, an
    endpoint with the account id in its host name, is one moto does not answer in-process."""
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))


def _lambda_json(value: Any) -> Any:
    """A stream record as Lambda hands it over: JSON, with binary values base64-encoded."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _lambda_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_json(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.timestamp()
    return value


def stream_event(records: list[dict[str, Any]], stream_arn: str) -> dict[str, Any]:
    """The event Lambda's DynamoDB stream event source builds from GetRecords' records."""
    return {"Records": [{**_lambda_json(r), "eventSourceARN": stream_arn} for r in records]}


# How often the stream's shards are listed again (a table's stream gains shards as it grows).
SHARDS_EVERY = 10.0


class StreamPoller(_Poller):
    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        handler: Handler,
        *,
        batch_size: int = 100,
        # Lambda polls each shard of a stream about four times a second.
        idle_sleep: float = 0.25,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        super().__init__("runs-stream-poller", idle_sleep, on_error)
        self._streams = streams
        self._arn = stream_arn
        self._handler = handler
        self._batch = batch_size
        # Shard id -> its iterator, from the records there are now on (StartingPosition: LATEST,
        # as the template's event source mapping); and the records read but not yet handled.
        self._iterators: dict[str, str] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._known = self._shards()
        self._shards_listed_at = time.monotonic()
        for shard in self._known:
            iterator = streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard, ShardIteratorType="LATEST"
            )["ShardIterator"]
            self._iterators[shard] = iterator

    def _shards(self) -> list[str]:
        shards = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
        return [shard["ShardId"] for shard in shards]

    def poll_once(self) -> int:
        """One round over the shards: each shard's next records, up to a batch, to the handler."""
        handled = 0
        now = time.monotonic()
        if now >= self._shards_listed_at + SHARDS_EVERY:
            self._known = self._shards()
            self._shards_listed_at = now
        for shard in self._known:
            if shard not in self._iterators:  # a new shard: from its start
                self._iterators[shard] = self._streams.get_shard_iterator(
                    StreamArn=self._arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            pending = self._pending.setdefault(shard, [])
            if len(pending) < self._batch:
                response = self._streams.get_records(ShardIterator=self._iterators[shard], Limit=self._batch)
                self._iterators[shard] = response.get("NextShardIterator") or self._iterators[shard]
                pending += response.get("Records", [])
            if not pending:
                continue
            batch = pending[: self._batch]
            context = LambdaContext(function_name="FollowFunction", aws_request_id=str(uuid.uuid4()))
            answer = self._handler(stream_event(batch, self._arn), context) or {}
            failures = [item["itemIdentifier"] for item in answer.get("batchItemFailures", [])]
            # Lambda retries from the first failed record; the ones before it are done.
            done = len(batch)
            if failures:
                numbers = [r["dynamodb"]["SequenceNumber"] for r in batch]
                done = numbers.index(failures[0]) if failures[0] in numbers else 0
            del pending[:done]
            handled += done
        return handled
