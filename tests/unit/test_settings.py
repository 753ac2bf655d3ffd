"""Settings come from WORKFLOWS_* variables as pydantic-settings' BaseSettings read them."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError, create_model

from workflows.settings import Settings

pydantic_settings = pytest.importorskip("pydantic_settings")


class _Base(pydantic_settings.BaseSettings):
    # env_ignore_empty: an empty variable is unset (template.yaml declares unset ones empty).
    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="WORKFLOWS_", extra="ignore", env_ignore_empty=True
    )


# The same fields under BaseSettings: what Settings was before it stopped importing it.
Reference: type[BaseModel] = create_model(
    "Reference", __base__=_Base, **{name: (f.annotation, f) for name, f in Settings.model_fields.items()}
)

ENVIRONMENTS: list[dict[str, str]] = [
    {},
    {
        "WORKFLOWS_RUNS_TABLE": "runs-x",
        "workflows_max_steps": "7",
        "Workflows_Auth_Mode": "multi_user",
        "WORKFLOWS_DISABLE_QUOTAS": "yes",
        "WORKFLOWS_WEBHOOK_DLQ_ENABLED": "0",
        "WORKFLOWS_API_KEY": "",
        "WORKFLOWS_LLM_API_KEY": "sk-test",
        "WORKFLOWS_LLM_TIMEOUT_SEC": "2.5",
        "WORKFLOWS_TENANT_CONCURRENCY": "3",
        "WORKFLOWS_WEBHOOK_ALLOWLIST": "hooks.example.com",
        "WORKFLOWS_WEBHOOK_ALLOWLIST_ACME": "per-tenant, not a field",
        "WORKFLOWS_UNKNOWN": "ignored",
        "OTHER_RUNS_TABLE": "not ours",
    },
]


def _clean(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.lower().startswith("workflows_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def _dump(model: BaseModel) -> dict[str, Any]:
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in dict(model).items()}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_environment_is_read_as_base_settings_read_it(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    _clean(monkeypatch, environment)
    assert _dump(Settings()) == _dump(Reference())


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch, ENVIRONMENTS[1])
    arguments: dict[str, Any] = {"runs_table": "from-argument", "api_key": "k", "max_steps": 9}
    settings = Settings(**arguments)
    assert _dump(settings) == _dump(Reference(**arguments))
    assert settings.runs_table == "from-argument"
    assert settings.auth_mode == "multi_user"  # still from the environment


@pytest.mark.parametrize(
    "environment",
    [{"WORKFLOWS_MAX_STEPS": "0"}, {"WORKFLOWS_AUTH_MODE": "nobody"}, {"WORKFLOWS_DISABLE_QUOTAS": "maybe"}],
)
def test_invalid_values_are_refused_alike(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    _clean(monkeypatch, environment)
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValidationError):
        Reference()
