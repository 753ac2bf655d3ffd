"""Bearer JWTs verified against the issuer's published keys (docs/auth.md, "Bearer tokens").

The keys come from the issuer's JWKS: `jwks_url` when set, else the `jwks_uri` of its OpenID
discovery document (`<issuer>/.well-known/openid-configuration`), as API Gateway's JWT
authorizer finds them, over https (plain http only to this machine's loopback). They are
fetched on the first bearer request and kept for ten minutes; a token naming a key id the set
lacks refreshes it, and so does an expired set, but never more than once a minute whether the
last fetch worked or not, so neither made-up key ids nor an issuer that is down turn into a
flood of fetches. While no key can be read the API answers 503 (the issuer is unavailable),
not 401: the caller's credential was not refused. Only asymmetric algorithms are accepted
(never `none` or HMAC, whose "key" would be public), and a token's algorithm must suit the
key its `kid` names.

A fetch (discovery document and key set together) ends within `FETCH_TIMEOUT_SEC` from its
first connect to its last byte (workflows/deadline.py), however slowly the issuer sends. No
request waits for another's fetch: the lock guards only the bookkeeping, at most one fetch is in
flight per process, and while it is, other bearer requests use the keys in hand (or answer 503
when none were ever read). Only the request that started a fetch waits for it.

PyJWT (and cryptography) are imported on the first bearer request only: API-key requests and
the API's cold start never load them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from workflows.domain.json import JsonValue
from workflows.errors import DependencyUnavailable, Unauthenticated

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
KEYS_TTL_SEC = 600.0
UNKNOWN_KID_REFRESH_SEC = 60.0
LEEWAY_SEC = 60
MAX_TOKEN_CHARS = 8192
MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT_SEC = 5.0
# Algorithms a key also checks beyond the one PyJWK gives it (an RSA key's default is RS256).
_COMPATIBLE = {
    "RS256": ("RS384", "RS512", "PS256", "PS384", "PS512"),
}

logger = logging.getLogger(__name__)

Fetch = Callable[[str], Mapping[str, Any]]


def check_key_url(url: str) -> str:
    """`url` if keys may be fetched from it: https, or http to loopback only (anyone on the
    path of a plain-http fetch could swap in keys of their own and forge tokens)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return url
    raise ValueError(f"keys are fetched over https only, not from {url!r}")


def fetch_json(url: str) -> Mapping[str, Any]:
    """GET a JSON document of the issuer's, bounded in size, and in time by the current
    `call_deadline` as a whole (each network operation by FETCH_TIMEOUT_SEC outside one)."""
    import httpx

    from workflows.deadline import DeadlineTransport

    try:
        with (
            httpx.Client(transport=DeadlineTransport(), timeout=FETCH_TIMEOUT_SEC) as client,
            client.stream("GET", url, follow_redirects=False) as response,
        ):
            if response.status_code != 200:
                raise OSError(f"{url} answered {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise OSError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise OSError(f"{url}: {type(exc).__name__}") from exc
    try:
        document = json.loads(body)
    except RecursionError as exc:  # nested past the parser's depth: not a document of keys
        raise OSError(f"{url} sent JSON nested too deeply") from exc
    if not isinstance(document, dict):
        raise OSError(f"{url} is not a JSON object")
    return document


class JwksTokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audiences: tuple[str, ...],
        jwks_url: str = "",
        fetch: Fetch = fetch_json,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._audiences = audiences
        self._jwks_url = jwks_url
        self._fetch = fetch
        self._now = now
        # Guards the fields below only: no request holds it across a fetch.
        self._lock = threading.Lock()
        self._fetching = False
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")  # the last fetch that worked
        self._attempted_at = float("-inf")  # the last fetch, whatever came of it

    def verify(self, token: str) -> Mapping[str, JsonValue]:
        import jwt

        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the bearer token is malformed: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"the bearer token's algorithm {algorithm!r} is not accepted")
        key = self._key(str(header.get("kid") or ""))
        if key.algorithm_name != algorithm and algorithm not in _COMPATIBLE.get(key.algorithm_name, ()):
            raise Unauthenticated(f"the bearer token's algorithm {algorithm} does not suit its key")
        try:
            claims: dict[str, JsonValue] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=list(self._audiences) or None,
                leeway=LEEWAY_SEC,
                options={"require": ["exp", "iss"], "verify_aud": bool(self._audiences)},
            )
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            # PyJWTError: a token that does not verify; TypeError/ValueError: a key that cannot
            # check this token at all. Either way the credential is refused, never a 500.
            raise Unauthenticated(f"the bearer token is not valid: {exc}") from exc
        return claims

    def _key(self, kid: str) -> Any:
        with self._lock:
            now = self._now()
            stale = now - self._fetched_at > KEYS_TTL_SEC or kid not in self._keys
            fetch = stale and not self._fetching and now - self._attempted_at > UNKNOWN_KID_REFRESH_SEC
            if fetch:
                self._fetching = True
                self._attempted_at = now
        if fetch:
            fetched = None
            try:
                fetched = self._read_keys()
            finally:
                with self._lock:
                    if fetched is not None:
                        self._keys = fetched
                        self._fetched_at = self._now()
                    self._fetching = False
        keys = self._keys  # replaced whole, never changed in place: this one stays consistent
        if not keys:
            raise DependencyUnavailable("the token issuer's signing keys cannot be read; try again later")
        if kid in keys:
            return keys[kid]
        if not kid and len(keys) == 1:
            return next(iter(keys.values()))
        raise Unauthenticated("the bearer token is signed with a key the issuer does not publish")

    def _read_keys(self) -> dict[str, Any] | None:
        """The issuer's keys by id, or None when they cannot be read now (the reason is logged)."""
        import jwt

        from workflows.deadline import call_deadline

        try:
            # Discovery and key set share one deadline: a trickling issuer costs its caller
            # FETCH_TIMEOUT_SEC at most, and nobody else anything.
            with call_deadline(FETCH_TIMEOUT_SEC):
                url = check_key_url(self._jwks_url or self._discovered_jwks_url())
                document = self._fetch(url)
            keys = jwt.PyJWKSet.from_dict(dict(document)).keys
        except (OSError, ValueError, jwt.PyJWTError):
            # The last good keys stay in use; the next fetch waits for the minute to pass.
            logger.warning("the token issuer's signing keys could not be read", exc_info=True)
            return None
        return {str(k.key_id or ""): k for k in keys}

    def _discovered_jwks_url(self) -> str:
        document = self._fetch(check_key_url(self._issuer.rstrip("/") + "/.well-known/openid-configuration"))
        url = document.get("jwks_uri")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ValueError("the issuer's discovery document has no jwks_uri")
        return url
