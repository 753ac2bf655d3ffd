"""The single-user API key: from the environment locally; when deployed, from the Secrets
Manager secret the stack generates, or from an SSM SecureString its deployer names instead.

Powertools parameters caches each value for `CACHE_SECONDS`, so a rotated key is picked up
within that time without a cold start, and a warm function does not call AWS per request.
A key that cannot be read (no source configured, the secret deleted, access denied, an empty
value) is `ApiKeyUnavailable`: the API answers 503 and logs why, never 500, and never 401,
which would blame the caller's key for the operator's problem.
"""

from __future__ import annotations

from workflows.errors import ApiKeyUnavailable
from workflows.observability import logger
from workflows.settings import Settings

CACHE_SECONDS = 300

UNAVAILABLE = (
    "the service cannot read its own API key, so no key can be checked: a problem of the deployment,"
    " not of your key (the API function's log says why)"
)


def single_user_api_key(settings: Settings) -> str:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    # The SSM parameter is the deployer's explicit choice (template parameter ApiKeyParameterName),
    # so it wins over the stack's generated secret.
    if settings.api_key_parameter:
        return _read("WORKFLOWS_API_KEY_PARAMETER", settings.api_key_parameter, secret=False)
    if settings.api_key_secret_arn:
        return _read("WORKFLOWS_API_KEY_SECRET_ARN", settings.api_key_secret_arn, secret=True)
    logger.error(
        "single-user API key not configured: set WORKFLOWS_API_KEY, WORKFLOWS_API_KEY_SECRET_ARN"
        " or WORKFLOWS_API_KEY_PARAMETER"
    )
    raise ApiKeyUnavailable(UNAVAILABLE)


def _read(setting: str, name: str, *, secret: bool) -> str:
    # Imported here, not at module level: they stay off the functions' cold-start path.
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        if secret:
            value = parameters.get_secret(name, max_age=CACHE_SECONDS)
        else:
            value = parameters.get_parameter(name, decrypt=True, max_age=CACHE_SECONDS)
    except GetParameterError as exc:
        # The error names the secret or parameter and AWS's reason, never the value.
        logger.error(
            "single-user API key unreadable", extra={"setting": setting, "source": name, "error": str(exc)}
        )
        raise ApiKeyUnavailable(UNAVAILABLE) from exc
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    key = str(value).strip() if value is not None else ""
    if not key:
        logger.error("single-user API key empty", extra={"setting": setting, "source": name})
        raise ApiKeyUnavailable(UNAVAILABLE)
    return key
