"""Where the webhook signing secrets come from, newest first.

`WORKFLOWS_WEBHOOK_SECRET` holds them directly (local runs, tests); when deployed,
`WORKFLOWS_WEBHOOK_SECRET_ARN` names a Secrets Manager secret whose string value holds the same
comma-separated list. That secret is read on the first delivery, not at import or construction,
and Powertools caches it for `CACHE_SECONDS`: a rotated list is picked up within that time by
warm functions, without a redeploy.

Rotation: put the new secret first and keep the old one after it (`whsec_new,whsec_old`).
Deliveries are signed with every secret in the list, so receivers holding either verify; once
they all have the new one, drop the old one.
"""

from __future__ import annotations

from collections.abc import Callable

from workflows.adapters.http.signing import parse_secrets
from workflows.settings import Settings

CACHE_SECONDS = 300

SecretsSource = Callable[[], list[str]]


class SigningSecretUnavailable(Exception):
    """The secrets could not be read or parsed; a delivery then fails transiently, unsigned never."""


def _fetch_secret(arn: str) -> str:
    # Imported here, not at module level: it stays off the functions' cold-start path.
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        value = parameters.get_secret(arn, max_age=CACHE_SECONDS)
    except GetParameterError as exc:
        raise SigningSecretUnavailable("could not read the webhook signing secret") from exc
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise SigningSecretUnavailable("the webhook signing secret is not a string")
    return value


class SigningSecrets:
    """Callable returning the current secrets; `[]` means deliveries are sent unsigned."""

    def __init__(
        self, *, inline: str | None, secret_arn: str = "", fetch: Callable[[str], str] = _fetch_secret
    ):
        # An inline value is checked now, so a malformed one fails at startup.
        self._inline = parse_secrets(inline) if inline else None
        self._arn = secret_arn
        self._fetch = fetch

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningSecrets:
        inline = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        return cls(inline=inline, secret_arn=settings.webhook_secret_arn)

    def __call__(self) -> list[str]:
        if self._inline is not None:
            return list(self._inline)
        if not self._arn:
            return []
        raw = self._fetch(self._arn)
        try:
            secrets = parse_secrets(raw)
        except ValueError as exc:
            raise SigningSecretUnavailable(f"the webhook signing secret is malformed: {exc}") from exc
        if not secrets:
            raise SigningSecretUnavailable("the webhook signing secret is empty")
        return secrets


__all__ = ["CACHE_SECONDS", "SecretsSource", "SigningSecretUnavailable", "SigningSecrets"]
