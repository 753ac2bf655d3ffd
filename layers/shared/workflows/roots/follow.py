"""FollowFunction's composition root and handler: the WebSocket API's routes (`$connect`,
`$disconnect`, `$default`) and the runs table's stream (docs/engine.md, "Following a run live").

One function for both: the stream pushes to the connections the routes record, and both need
the same few parts (the run log, the followers table, the management API's client). It imports
nothing from the HTTP edge (no fastapi, starlette or mangum): cold start matters here.

The stream batch costs one eventually consistent read per distinct run (a BatchGetItem of the
runs' follower items, which most runs do not have) and nothing more for a run nobody follows.
Records are handled with Powertools' batch processor: a run is pushed once per batch, on its
last record, and a failure reports that record, so Lambda retries the batch from there (a
record seen twice sends nothing twice: every follower's position is stored).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from workflows.domain.follow import is_connection_id
from workflows.domain.ids import is_tenant_id, is_uuid
from workflows.domain.principal import Principal
from workflows.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    LimitExceeded,
    NotFound,
    Throttled,
    Unauthenticated,
    ValidationFailed,
)
from workflows.observability import count, logger, metrics, tracer
from workflows.roots.parts import Parts
from workflows.services.follow import client_action, follow_target, presented_credential
from workflows.settings import get_settings

# A refused $connect answers one of these; the client sees the status of the failed handshake.
_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (ValidationFailed, 422),
    (LimitExceeded, 429),
    (Conflict, 409),
    (Throttled, 503),
    (DependencyUnavailable, 503),
)
_RUN_SK = "RUN"


@lru_cache(maxsize=1)
def parts() -> Parts:
    """This function's parts, built on the first invocation (tests replace this function)."""
    return Parts(get_settings())


def _answer(status: int, code: str | None = None, message: str = "", **headers: str) -> dict[str, Any]:
    import json

    answer: dict[str, Any] = {"statusCode": status}
    if code:
        answer["body"] = json.dumps({"code": code, "message": message})
    if headers:
        answer["headers"] = headers
    return answer


def _refused(exc: DomainError) -> dict[str, Any]:
    status = next((s for kind, s in _STATUS if isinstance(exc, kind)), 400)
    logger.info("connect refused", extra={"code": exc.code, "status": status})
    count("FollowConnects", result=exc.code)
    return _answer(status, exc.code, str(exc))


def _principal(event: dict[str, Any]) -> tuple[Principal, str | None]:
    credential = presented_credential(event.get("headers") or {})
    if credential is None:
        raise Unauthenticated(
            "missing credentials: send X-API-KEY or a bearer token, or from a browser the"
            " Sec-WebSocket-Protocol 'workflows.v1, key.<api key>'"
        )
    identity = parts().identity
    if credential.kind == "key":
        return identity.by_api_key(credential.value), credential.subprotocol
    return identity.by_bearer(credential.value), credential.subprotocol


def connect(event: dict[str, Any], connection_id: str) -> dict[str, Any]:
    try:
        principal, subprotocol = _principal(event)
        run_id, since = follow_target(event.get("queryStringParameters"))
        logger.append_keys(run_id=run_id, tenant_id=principal.tenant_id)
        parts().following.connect(principal, connection_id, run_id, since)
    except DomainError as exc:
        return _refused(exc)
    count("FollowConnects", result="connected")
    # A browser that offered subprotocols closes a connection whose answer names none of them.
    return _answer(200, **({"Sec-WebSocket-Protocol": subprotocol} if subprotocol else {}))


def message(event: dict[str, Any], connection_id: str) -> dict[str, Any]:
    following = parts().following
    try:
        client_action(event.get("body"))
        outcome = following.follow(connection_id)
    except DomainError as exc:
        following.refuse(connection_id, exc.code, str(exc))
        return _answer(200)
    logger.info("follow", extra={"outcome": outcome})
    return _answer(200)


def _run_of(raw: dict[str, Any]) -> tuple[str, str] | None:
    """The run (tenant, run id) a stream record's run item belongs to, or None for any other
    item (a definition snapshot, a signal) or a removal."""
    if raw.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    keys = raw.get("dynamodb", {}).get("Keys", {})
    if keys.get("sk", {}).get("S") != _RUN_SK:
        return None
    tenant_id, _, run_id = str(keys.get("pk", {}).get("S", "")).partition("#")
    if not is_tenant_id(tenant_id) or not is_uuid(run_id):
        return None
    return tenant_id, run_id


def stream(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    following = parts().following
    last: dict[tuple[str, str], str] = {}
    for raw in event.get("Records", []):
        run = _run_of(raw)
        if run is not None:
            last[run] = raw["dynamodb"]["SequenceNumber"]
    followed = following.followed(list(last)) if last else {}
    count("FollowedRuns", value=len(followed))

    def record_handler(record: DynamoDBRecord) -> str:
        run = _run_of(record.raw_event)
        if run is None or run not in followed or last[run] != record.raw_event["dynamodb"]["SequenceNumber"]:
            return "skipped"
        logger.append_keys(tenant_id=run[0], run_id=run[1])
        try:
            outcomes = following.push(*run)
            logger.info("pushed", extra={"outcomes": outcomes})
        finally:
            logger.remove_keys(["tenant_id", "run_id"])
        return "pushed"

    processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handle(event: dict[str, Any], context: LambdaContext) -> Any:
    if "Records" in event:
        return stream(event, context)
    request = event.get("requestContext") or {}
    connection_id = request.get("connectionId")
    if not isinstance(connection_id, str) or not is_connection_id(connection_id):
        return _answer(400, "bad_request", "no valid connection id")
    kind = request.get("eventType")
    if kind == "CONNECT":
        return connect(event, connection_id)
    if kind == "DISCONNECT":
        parts().following.disconnect(connection_id)
        return _answer(200)
    if kind == "MESSAGE":
        return message(event, connection_id)
    return _answer(400, "bad_request", "unknown event type")
