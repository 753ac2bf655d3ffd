"""Saved workflows: a head (what the workflow is now) and its immutable versions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from workflows.domain.definition import WorkflowDefinition

ACTIVE = "active"
DELETED = "deleted"


class WorkflowHead(BaseModel):
    """What a workflow is now: its latest version and whether it may still be run."""

    workflow_id: str
    tenant_id: str
    name: str
    description: str | None = None
    tags: list[str] = []
    latest_version: int
    status: Literal["active", "deleted"]
    created_at: str
    updated_at: str
    deleted_at: str | None = None
    created_by: str


class WorkflowVersion(BaseModel):
    workflow_id: str
    version: int
    name: str
    description: str | None = None
    created_at: str
    created_by: str
    # None in version listings, which do not read the documents.
    definition: WorkflowDefinition | None = None
