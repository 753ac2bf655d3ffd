"""Artifacts: a run's stored outputs, their metadata (the bytes live in object storage)."""

from __future__ import annotations

import re
from urllib.parse import quote

from pydantic import BaseModel

# Short-lived download links; larger contents are never read through the API function.
PRESIGNED_URL_SECONDS = 300
MAX_READ_BYTES = 10 * 1024 * 1024


class ArtifactMeta(BaseModel):
    artifact_id: str
    tenant_id: str
    run_id: str
    step_id: str | None
    name: str
    size_bytes: int
    mime_type: str
    sha256: str
    created_at: str
    s3_key: str
    expires_at: int


def content_disposition(name: str) -> str:
    """`attachment` with the name as RFC 6266 / 5987 allow: an ASCII fallback and UTF-8."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "artifact"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
