"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

One contract for every outgoing webhook: the sender puts `webhook-id`, `webhook-timestamp` and
`webhook-signature` headers on the request; the signature is `v1,<base64 HMAC-SHA256>` over
`<id>.<timestamp>.<body>`. A retry keeps the same `webhook-id` (receivers dedupe on it) and gets
a fresh timestamp and signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105 - the key format's prefix, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SEC = 300


class WebhookVerificationError(ValueError):
    """The request's signature headers do not prove it came from a holder of the secret."""


def _key(secret: str) -> bytes:
    # `whsec_<base64>` is the spec's portable form; anything else is used as raw UTF-8 bytes.
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook secret has the whsec_ prefix but is not valid base64") from exc
    return secret.encode("utf-8")


def _digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(_key(secret), signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one secret: `v1,<base64 HMAC-SHA256>`."""
    digest = _digest(secret, msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def parse_secrets(value: str) -> list[str]:
    """Comma-separated secrets, newest first; each must be usable as a key (ValueError if not)."""
    secrets = [part.strip() for part in value.split(",") if part.strip()]
    for secret in secrets:
        _key(secret)
    return secrets


def signature_headers(
    secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Standard Webhooks headers; with several secrets (rotation), one signature per secret.

    Receivers holding any one of the secrets verify: the spec allows several space-separated
    `v1,<sig>` values in `webhook-signature`.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in keys),
    }


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | float,
    tolerance: float = DEFAULT_TOLERANCE_SEC,
) -> None:
    """Raise WebhookVerificationError unless a signature matches one of `secrets`.

    Several secrets allow rotation: the receiver accepts the old and the new one for a while.
    The header may carry several space-separated signatures (the sender's rotation). The
    timestamp must be within `tolerance` seconds of `now`, either way, to stop replays.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    raw_signatures = lowered.get("webhook-signature")
    if not msg_id or not raw_timestamp or not raw_signatures:
        raise WebhookVerificationError("missing webhook signature headers")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise WebhookVerificationError("invalid webhook-timestamp") from exc
    now_sec = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(now_sec - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance")

    candidates: list[bytes] = []
    for token in raw_signatures.split():
        version, _, value = token.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except binascii.Error:
            continue
    for secret in secrets:
        expected = _digest(secret, msg_id, timestamp, body)
        # compare_digest: timing does not reveal how much of a forged signature matched.
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return
    raise WebhookVerificationError("no matching webhook signature")


__all__ = [
    "DEFAULT_TOLERANCE_SEC",
    "WebhookVerificationError",
    "parse_secrets",
    "sign",
    "signature_headers",
    "verify",
]
