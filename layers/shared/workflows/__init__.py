"""Shared package of the workflow-run service: API edge, engine, steps, storage, webhooks."""

ENGINE_VERSION = "1.0.0"
