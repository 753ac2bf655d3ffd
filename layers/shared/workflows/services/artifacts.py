"""A run's artifacts: metadata, bytes, and short-lived download URLs."""

from __future__ import annotations

from workflows.domain.artifacts import ArtifactMeta
from workflows.domain.principal import Principal
from workflows.ports import ArtifactStore, RunLog
from workflows.services.access import readable_run


class ArtifactService:
    def __init__(self, runs: RunLog, artifacts: ArtifactStore) -> None:
        self._runs = runs
        self._artifacts = artifacts

    def list(self, principal: Principal, run_id: str) -> list[ArtifactMeta]:
        readable_run(self._runs, principal, run_id)  # 404 for a missing or another tenant's run
        return self._artifacts.list(principal.tenant_id, run_id)

    def get(self, principal: Principal, run_id: str, artifact_id: str) -> ArtifactMeta:
        readable_run(self._runs, principal, run_id)
        return self._artifacts.get(principal.tenant_id, run_id, artifact_id)

    def read(self, meta: ArtifactMeta) -> bytes:
        return self._artifacts.read(meta)

    def download_url(self, meta: ArtifactMeta, expires_in: int) -> str:
        return self._artifacts.presigned_url(meta, expires_in)
