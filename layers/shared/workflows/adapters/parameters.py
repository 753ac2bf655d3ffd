"""Secrets from the environment locally, from SSM Parameter Store when deployed.

Powertools parameters caches each value for `max_age` seconds, so a rotated key is picked up
within that time without a cold start, and a warm function does not call SSM per request.
"""

from __future__ import annotations

from workflows.settings import Settings

CACHE_SECONDS = 300


def single_user_api_key(settings: Settings) -> str | None:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if settings.api_key_parameter:
        # Imported here, not at module level: it stays off the functions' cold-start path.
        from aws_lambda_powertools.utilities import parameters

        value = parameters.get_parameter(settings.api_key_parameter, decrypt=True, max_age=CACHE_SECONDS)
        return str(value) if value else None
    return None
