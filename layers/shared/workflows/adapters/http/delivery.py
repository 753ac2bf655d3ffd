"""One webhook delivery over HTTP: egress check, Standard Webhooks signature, outcome.

The outcome decides what the caller does next: `delivered` is done, `transient` is worth
retrying later (timeouts, connection errors, DNS failures, 408/425/429/5xx), `permanent` is not
(refused by the egress policy, other 4xx, redirects unless the policy follows them).

The egress policy (workflows.adapters.http.egress) runs before any connection is made and names the
addresses it validated; the request then goes through a transport that connects only to those
addresses, while the Host header, TLS SNI and certificate checks keep the URL's hostname. When
the policy follows redirects, every hop is checked the same way before it is connected to.

A request carrying secrets limited to some hosts (`secret_hosts`) goes to no other host, on any
hop: one that is not allowed fails permanently with the code `secret_host_not_allowed` before
any connection. A redirect to another origin is sent without the request's own headers and
without its body (an empty body, signed anew): only the origin the caller named receives them.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from workflows.adapters.http.egress import (
    Connector,
    Destination,
    DestinationCheck,
    EgressDenied,
    EgressPolicy,
    EgressResolutionFailed,
    PinnedNetworkBackend,
    PinnedTransport,
    UrlCheckPolicy,
    tcp_connector,
)
from workflows.adapters.http.signing import signature_headers
from workflows.adapters.http.signing_secrets import SigningSecretUnavailable
from workflows.clock import Clock, system_clock
from workflows.deadline import call_deadline
from workflows.domain.delivery import DeliveryResult
from workflows.domain.secret_refs import SECRET_HOST_NOT_ALLOWED, host_refusal

# A plain check on the URL; it gets the address pinning but none of EgressPolicy's address rules.
UrlCheck = Callable[[str], None]

USER_AGENT = "workflows-webhooks/1.0"
MAX_RESPONSE_BYTES = 64 * 1024
_SNIPPET_CHARS = 200
_TRANSIENT_4XX = frozenset({408, 425, 429})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
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


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _secret_host_refused(
    secret_hosts: Mapping[str, Sequence[str]], destination: Destination, *, redirect: bool = False
) -> DeliveryResult | None:
    """A permanent failure if the request's secrets may not go to this hop's host (checked
    before connecting), else None."""
    reason = host_refusal(secret_hosts, destination.host) if secret_hosts else None
    if reason is None:
        return None
    hop = "redirect not followed: " if redirect else ""
    return DeliveryResult("permanent", error=f"{hop}{reason}", code=SECRET_HOST_NOT_ALLOWED)


class HttpDeliverer:
    """Delivers signed webhooks to destinations the egress policy allows.

    `secrets` is the list of signing secrets (newest first) or a callable returning it, called
    once per delivery (SigningSecrets reads Secrets Manager lazily and caches it). `policy` is
    required: an EgressPolicy (production), or a plain URL check such as `scheme_policy`, which
    checks only the scheme and host and suits tests against local receivers, never production.
    `connector` makes the TCP connection to a validated address; tests replace it to record or
    refuse.
    """

    def __init__(
        self,
        secrets: Sequence[str] | Callable[[], Sequence[str]],
        *,
        timeout: float,
        policy: DestinationCheck | UrlCheck,
        clock: Clock = system_clock,
        connector: Connector = tcp_connector,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if callable(secrets):
            self._secrets: Callable[[], Sequence[str]] = secrets
        else:
            fixed = list(secrets)
            self._secrets = lambda: fixed
        self._timeout = timeout
        self._policy: DestinationCheck = UrlCheckPolicy(policy) if callable(policy) else policy
        self._clock = clock
        self._connector = connector
        self._max_response_bytes = max_response_bytes
        # Built once: loading the CA bundle is the expensive part of a client.
        self._ssl_context = httpx.create_ssl_context()

    def deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        method: str = "POST",
        timeout: float | None = None,
        secret_hosts: Mapping[str, Sequence[str]] | None = None,
    ) -> DeliveryResult:
        """One signed request. `method` and `timeout` let a webhook step override the defaults;
        `secret_hosts` (secret name -> allowed hosts) limits every hop to hosts all allow.

        `timeout` (else the deliverer's own) is one overall deadline for the whole delivery:
        the policy's lookups, connect, TLS, sending, status line, headers and the body read,
        across redirects. A peer that trickles its answer is cut off at the deadline and the
        delivery is a transient `timeout: ...`, like any other timeout.
        """
        budget = timeout or self._timeout
        with call_deadline(budget):
            return self._deliver(
                url, body, webhook_id, extra_headers, tenant_id, method, budget, secret_hosts or {}
            )

    def _deliver(
        self,
        url: str,
        body: bytes,
        webhook_id: str,
        extra_headers: Mapping[str, str] | None,
        tenant_id: str | None,
        method: str,
        budget: float,
        secret_hosts: Mapping[str, Sequence[str]],
    ) -> DeliveryResult:
        try:
            destination = self._policy.check(url, tenant_id)
        except EgressDenied as exc:
            return DeliveryResult("permanent", error=f"egress denied: {exc.message}")
        except EgressResolutionFailed as exc:
            return DeliveryResult("transient", error=f"dns: {exc.message}")
        refused = _secret_host_refused(secret_hosts, destination)
        if refused is not None:
            return refused

        try:
            secrets = self._secrets()
        except SigningSecretUnavailable as exc:
            # Never send unsigned because the secret store hiccuped; a later attempt may sign.
            return DeliveryResult("transient", error=f"signing secret unavailable: {exc}")

        timestamp = int(self._clock().timestamp())

        def signed(content: bytes) -> dict[str, str]:
            """The deliverer's own headers for `content`."""
            own = {"content-type": "application/json"}
            if secrets:
                # One signature per secret (newest first): receivers on the old or the new one verify.
                own.update(signature_headers(secrets, webhook_id, timestamp, content))
            else:
                own.update({"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)})
            return own

        headers = {k: v for k, v in (extra_headers or {}).items() if k.lower() not in _RESERVED_HEADERS}
        headers.update(signed(body))

        # A client per delivery: its pins and connections live exactly as long as this delivery.
        backend = PinnedNetworkBackend(self._connector)
        # trust_env=False: no proxy from the environment may see or redirect webhook traffic.
        # The transport keeps the deadline set in `deliver` (workflows.deadline).
        with httpx.Client(
            timeout=httpx.Timeout(budget),
            follow_redirects=False,
            trust_env=False,
            transport=PinnedTransport(backend, self._ssl_context),
            headers={"user-agent": USER_AGENT},
        ) as client:
            return self._send(
                client, backend, destination, url, body, headers, tenant_id, method, secret_hosts, signed
            )

    def _send(
        self,
        client: httpx.Client,
        backend: PinnedNetworkBackend,
        destination: Destination,
        url: str,
        body: bytes,
        headers: dict[str, str],
        tenant_id: str | None,
        method: str,
        secret_hosts: Mapping[str, Sequence[str]],
        signed: Callable[[bytes], dict[str, str]],
    ) -> DeliveryResult:
        redirects = 0
        while True:
            backend.pin(destination)
            try:
                with client.stream(method, url, content=body, headers=headers) as response:
                    result = classify(response.status_code, response.headers, now=self._clock())
                    location = response.headers.get("location")
                    follow = (
                        self._policy.follow_redirects
                        and response.status_code in _REDIRECT_STATUSES
                        and location is not None
                    )
                    snippet = "" if follow else self._read_bounded(response)
                    current = response.url
            except httpx.TimeoutException as exc:
                return DeliveryResult("transient", error=f"timeout: {type(exc).__name__}")
            except httpx.LocalProtocolError as exc:
                # Our own request broke HTTP (a header httpx will not send): retrying cannot help.
                return DeliveryResult("permanent", error=f"invalid request: {exc}")
            except httpx.HTTPError as exc:
                return DeliveryResult("transient", error=f"{type(exc).__name__}: {exc}")
            except (httpx.InvalidURL, ValueError) as exc:
                # A URL or header value httpx cannot encode will not become valid by retrying.
                return DeliveryResult("permanent", error=f"invalid request: {exc}")

            if not follow or location is None:
                if result.outcome != "delivered" and snippet:
                    return DeliveryResult(
                        result.outcome, result.status_code, f"{result.error}: {snippet}", result.retry_after
                    )
                return result

            redirects += 1
            if redirects > self._policy.max_redirects:
                return DeliveryResult(
                    "permanent",
                    result.status_code,
                    f"HTTP {result.status_code}: more than {self._policy.max_redirects} redirects",
                )
            try:
                next_url = current.join(location)
                destination = self._policy.check(str(next_url), tenant_id)
            except httpx.InvalidURL as exc:
                return DeliveryResult("permanent", result.status_code, f"invalid redirect location: {exc}")
            except EgressDenied as exc:
                return DeliveryResult(
                    "permanent", result.status_code, f"egress denied: redirect to {next_url}: {exc.message}"
                )
            except EgressResolutionFailed as exc:
                return DeliveryResult("transient", result.status_code, f"dns: {exc.message}")
            refused = _secret_host_refused(secret_hosts, destination, redirect=True)
            if refused is not None:
                return refused
            if _origin(next_url) != _origin(current):
                # The request's own headers and body (credentials, secrets) were meant for the
                # origin the caller named; another origin gets an empty body, signed anew.
                body = b""
                headers = signed(body)
            url = str(next_url)

    def _read_bounded(self, response: httpx.Response) -> str:
        """At most `max_response_bytes` of the body by the deadline; a short text snippet."""
        received = bytearray()
        try:
            # The delivery's overall deadline ends a body that trickles (a ReadTimeout).
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= self._max_response_bytes:
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
    "DeliveryResult",
    "EgressDenied",
    "EgressPolicy",
    "EgressResolutionFailed",
    "HttpDeliverer",
    "UrlCheck",
    "classify",
    "parse_retry_after",
    "scheme_policy",
]
