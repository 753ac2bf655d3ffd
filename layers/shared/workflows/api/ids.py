"""Path ids, checked against the format the service gives them before anything is read.

An id that cannot be one of ours (`sub%23<uuid>`, `../x`, 300 characters, non-ASCII) answers 404
like a missing object, without a storage read, so nothing a client puts in a path can reach into
another key's space. Each is a dependency named like its path parameter; it authenticates the
caller first (FastAPI runs that once per request), so a bad id never answers before a 401. They
are async because they never block: FastAPI would run a sync one in a worker thread.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path

from workflows.api.auth import Caller
from workflows.domain.definition import STEP_ID_PATTERN
from workflows.domain.ids import DOCUMENT_ID_PATTERN, is_hex32, is_uuid
from workflows.domain.secret_refs import SECRET_NAME_PATTERN
from workflows.errors import NotFound

_STEP_ID = re.compile(STEP_ID_PATTERN)
_DOCUMENT_ID = re.compile(DOCUMENT_ID_PATTERN)
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)


def _missing(what: str) -> NotFound:
    # The id is not echoed: it is the caller's own text, possibly huge or hostile.
    return NotFound(f"{what} not found")


async def run_id_path(
    run_id: Annotated[str, Path(description="the run's id (a UUID)")], _caller: Caller
) -> str:
    if not is_uuid(run_id):
        raise _missing("run")
    return run_id


async def step_id_path(
    step_id: Annotated[str, Path(description="a step id of the run's definition")], _caller: Caller
) -> str:
    if _STEP_ID.fullmatch(step_id) is None:
        raise _missing("step")
    return step_id


async def artifact_id_path(
    artifact_id: Annotated[str, Path(description="the artifact's id (a UUID)")], _caller: Caller
) -> str:
    if not is_uuid(artifact_id):
        raise _missing("artifact")
    return artifact_id


async def schedule_id_path(
    schedule_id: Annotated[str, Path(description="the schedule's id (a UUID)")], _caller: Caller
) -> str:
    if not is_uuid(schedule_id):
        raise _missing("schedule")
    return schedule_id


async def row_id_path(
    row_id: Annotated[str, Path(description="the DLQ row's id (32 hex digits)")], _caller: Caller
) -> str:
    if not is_hex32(row_id):
        raise _missing("webhook DLQ row")
    return row_id


async def key_id_path(
    key_id: Annotated[str, Path(description="the key's SHA-256 (64 hex digits)")], _caller: Caller
) -> str:
    if _KEY_ID.fullmatch(key_id) is None:
        raise _missing("API key")
    return key_id


async def doc_id_path(doc_id: Annotated[str, Path(description="the document's id")], _caller: Caller) -> str:
    if _DOCUMENT_ID.fullmatch(doc_id) is None:
        raise _missing("document")
    return doc_id


async def secret_name_path(
    name: Annotated[str, Path(description="the secret's name (a letter, then letters, digits, _)")],
    _caller: Caller,
) -> str:
    if _SECRET_NAME.fullmatch(name) is None:
        raise _missing("secret")
    return name


RunId = Annotated[str, Depends(run_id_path)]
StepId = Annotated[str, Depends(step_id_path)]
ArtifactId = Annotated[str, Depends(artifact_id_path)]
ScheduleId = Annotated[str, Depends(schedule_id_path)]
RowId = Annotated[str, Depends(row_id_path)]
KeyId = Annotated[str, Depends(key_id_path)]
DocId = Annotated[str, Depends(doc_id_path)]
SecretName = Annotated[str, Depends(secret_name_path)]
