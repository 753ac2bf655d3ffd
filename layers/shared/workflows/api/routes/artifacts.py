"""Artifact routes: a run's artifacts, one artifact's metadata, and its bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from workflows.api.auth import Caller
from workflows.api.deps import Services
from workflows.api.guard import GuardedRoute
from workflows.api.ids import ArtifactId, RunId
from workflows.api.schemas import PREFIX, error_responses
from workflows.clock import iso
from workflows.domain.artifacts import (
    MAX_READ_BYTES,
    PRESIGNED_URL_SECONDS,
    ArtifactMeta,
    content_disposition,
)


class ArtifactLinks(BaseModel):
    self: str
    download: str


class ArtifactView(BaseModel):
    artifact_id: str
    run_id: str
    step_id: str | None
    name: str
    size_bytes: int
    mime_type: str
    sha256: str = Field(description="hex SHA-256 of the contents")
    created_at: str
    expires_at: str = Field(description="when the artifact is deleted with its run")
    links: ArtifactLinks

    @classmethod
    def of(cls, meta: ArtifactMeta) -> ArtifactView:
        base = f"{PREFIX}/runs/{meta.run_id}/artifacts/{meta.artifact_id}"
        return cls(
            artifact_id=meta.artifact_id,
            run_id=meta.run_id,
            step_id=meta.step_id,
            name=meta.name,
            size_bytes=meta.size_bytes,
            mime_type=meta.mime_type,
            sha256=meta.sha256,
            created_at=meta.created_at,
            expires_at=iso(datetime.fromtimestamp(meta.expires_at, tz=UTC)),
            links=ArtifactLinks(self=base, download=f"{base}?download=true"),
        )


class ArtifactList(BaseModel):
    run_id: str
    artifacts: list[ArtifactView]


class ArtifactDetail(ArtifactView):
    download_url: str = Field(description="presigned S3 GET URL, valid for 5 minutes")
    download_url_expires_at: str


router = APIRouter(route_class=GuardedRoute)


@router.get("/runs/{run_id}/artifacts", response_model=ArtifactList, responses=error_responses(404))
def list_artifacts(run_id: RunId, principal: Caller, c: Services) -> ArtifactList:
    """The run's artifacts, oldest first (metadata only)."""
    metas = c.artifact_service.list(principal, run_id)
    return ArtifactList(run_id=run_id, artifacts=[ArtifactView.of(meta) for meta in metas])


@router.get(
    "/runs/{run_id}/artifacts/{artifact_id}",
    response_model=ArtifactDetail,
    responses={
        200: {
            "description": "the metadata with a presigned `download_url`; with `download=true` the "
            "bytes themselves, with the artifact's own Content-Type",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        303: {"description": "`download=true` for an artifact over 10 MiB: fetch it from `Location`"},
        **error_responses(404),
    },
)
def get_artifact(
    run_id: RunId,
    artifact_id: ArtifactId,
    principal: Caller,
    c: Services,
    download: Annotated[bool, Query(description="stream the bytes instead of the metadata")] = False,
) -> ArtifactDetail | Response:
    artifacts = c.artifact_service
    meta = artifacts.get(principal, run_id, artifact_id)
    if download:
        if meta.size_bytes > MAX_READ_BYTES:
            # Large contents never pass through the API function: S3 serves them directly.
            return RedirectResponse(artifacts.download_url(meta, PRESIGNED_URL_SECONDS), status_code=303)
        return Response(
            content=artifacts.read(meta),
            media_type=meta.mime_type,
            headers={
                "Content-Disposition": content_disposition(meta.name),
                "X-Content-Type-Options": "nosniff",
                "ETag": f'"{meta.sha256}"',
                "Cache-Control": "private, no-store",
            },
        )
    expires = iso(c.clock() + timedelta(seconds=PRESIGNED_URL_SECONDS))
    view = ArtifactView.of(meta)
    return ArtifactDetail(
        **view.model_dump(),
        download_url=artifacts.download_url(meta, PRESIGNED_URL_SECONDS),
        download_url_expires_at=expires,
    )
