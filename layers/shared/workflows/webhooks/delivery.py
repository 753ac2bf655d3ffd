"""One webhook delivery over HTTP: egress check, Standard Webhooks signature, outcome.

The outcome decides what the caller does next: `delivered` is done, `transient` is worth
retrying later (timeouts, connection errors, 408/425/429/5xx), `permanent` is not (refused by
the egress policy, other 4xx, redirects, which are never followed).

The egress policy is a callable that raises EgressDenied; it runs before any connection is
made. The default only insists on an http(s) URL with a host; the allow/deny list and
private-address checks plug in here later, and `transport` lets such a policy also pin the
address actually connected to.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx

from workflows.clock import Clock, system_clock
from workflows.errors import DomainError
from workflows.webhooks.signing import signature_headers

DeliveryOutcome = Literal["delivered", "transient", "permanent"]
EgressPolicy = Callable[[str], None]

USER_AGENT = "workflows-webhooks/1.0"
MAX_RESPONSE_BYTES = 64 * 1024
_SNIPPET_CHARS = 200
_TRANSIENT_4XX = frozenset({408, 425, 429})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# Set by the deliverer itself; a row's own headers must not override the signature or framing.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


class EgressDenied(DomainError):
    """The egress policy refuses this destination; retrying will not change that."""

    code = "egress_denied"


def scheme_policy(url: str) -> None:
    """The default egress policy: an http or https URL with a host, nothing more."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise EgressDenied(f"invalid webhook url: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise EgressDenied(f"webhook url scheme '{parts.scheme}' is not allowed")
    if not host:
        raise EgressDenied("webhook url has no host")


@dataclass(frozen=True)
class DeliveryResult:
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify(status_code: int, headers: Mapping[str, str], *, now: datetime | None = None) -> DeliveryResult:
    if 200 <= status_code < 300:
        return DeliveryResult("delivered", status_code)
    error = f"HTTP {status_code}"
    if status_code in _TRANSIENT_4XX or status_code >= 500:
        retry_after = None
        if status_code in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(_header(headers, "retry-after"), now=now or system_clock())
        return DeliveryResult("transient", status_code, error, retry_after)
    if 300 <= status_code < 400:
        error += " (redirects are not followed)"
    return DeliveryResult("permanent", status_code, error)


class HttpDeliverer:
    def __init__(
        self,
        secrets: Sequence[str],
        *,
        timeout: float,
        policy: EgressPolicy | None = None,
        clock: Clock = system_clock,
        transport: httpx.BaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._secrets = list(secrets)
        self._timeout = timeout
        self._policy = policy or scheme_policy
        self._clock = clock
        self._max_response_bytes = max_response_bytes
        # trust_env=False: no proxy from the environment may see or redirect webhook traffic.
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            headers={"user-agent": USER_AGENT},
        )

    def close(self) -> None:
        self._client.close()

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> DeliveryResult:
        try:
            self._policy(url)
        except EgressDenied as exc:
            return DeliveryResult("permanent", error=f"egress denied: {exc.message}")

        headers = {k: v for k, v in (extra_headers or {}).items() if k.lower() not in _RESERVED_HEADERS}
        headers["content-type"] = "application/json"
        timestamp = int(self._clock().timestamp())
        if self._secrets:
            headers.update(signature_headers(self._secrets[0], webhook_id, timestamp, body))
        else:
            headers.update({"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)})

        try:
            with self._client.stream("POST", url, content=body, headers=headers) as response:
                result = classify(response.status_code, response.headers, now=self._clock())
                snippet = self._read_bounded(response)
        except httpx.TimeoutException as exc:
            return DeliveryResult("transient", error=f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return DeliveryResult("transient", error=f"{type(exc).__name__}: {exc}")
        except (httpx.InvalidURL, ValueError) as exc:
            # A URL or header value httpx cannot encode will not become valid by retrying.
            return DeliveryResult("permanent", error=f"invalid request: {exc}")
        if result.outcome != "delivered" and snippet:
            return DeliveryResult(
                result.outcome, result.status_code, f"{result.error}: {snippet}", result.retry_after
            )
        return result

    def _read_bounded(self, response: httpx.Response) -> str:
        """At most `max_response_bytes` of the body within the timeout; a short text snippet."""
        deadline = time.monotonic() + self._timeout
        received = bytearray()
        try:
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= self._max_response_bytes or time.monotonic() > deadline:
                    break
        except httpx.HTTPError:
            # The status line already decided the outcome; the body is only for the error text.
            pass
        if response.headers.get("content-encoding"):
            return ""
        text = bytes(received[: self._max_response_bytes]).decode("utf-8", errors="replace")
        return " ".join(text.split())[:_SNIPPET_CHARS]


__all__ = [
    "MAX_RESPONSE_BYTES",
    "DeliveryOutcome",
    "DeliveryResult",
    "EgressDenied",
    "EgressPolicy",
    "HttpDeliverer",
    "classify",
    "parse_retry_after",
    "scheme_policy",
]
