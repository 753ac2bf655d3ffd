"""`{{ secrets.NAME }}`: a secret named in a template, resolved only when the request is sent.

Rendering a template never sees a secret's value. `secrets.NAME` renders to a placeholder,
`[[secret:<nonce>:NAME]]`, whose nonce is drawn anew for each step execution, so text that
comes from inputs or outputs cannot forge one. The value replaces the placeholder in the URL,
headers and body only when the webhook is sent (and again when the DLQ worker retries it, from
the stored placeholder form), and every error text about that request is scrubbed of it, so
the value is never in a run's events, outputs, DLQ rows or logs (docs/steps.md, "Secrets").
"""

from __future__ import annotations

import re
import secrets as random_tokens
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

SECRET_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,127}$"  # noqa: S105 - a pattern, not a secret
_NAME = re.compile(SECRET_NAME_PATTERN)
_PLACEHOLDER = re.compile(r"\[\[secret:([0-9a-f]{16}):([A-Za-z][A-Za-z0-9_]{0,127})\]\]")
REDACTED = "***"
# A secret's value, at most (SSM Parameter Store's standard tier).
MAX_SECRET_BYTES = 4096


class SecretUnavailable(Exception):
    """A referenced secret could not be read: not set for the tenant, or (`transient`) the
    secret store failed in a way a later attempt may not meet."""

    def __init__(self, name: str, *, transient: bool = False) -> None:
        reason = (
            "could not be read; a later attempt may succeed" if transient else "is not set for this tenant"
        )
        super().__init__(f"secret '{name}' {reason}")
        self.name = name
        self.transient = transient


def new_nonce() -> str:
    return random_tokens.token_hex(8)


class SecretRefs:
    """The `secrets` template variable: `secrets.NAME` and `secrets['NAME']` are placeholders."""

    def __init__(self, nonce: str) -> None:
        self._nonce = nonce

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or not _NAME.fullmatch(name):
            raise AttributeError(name)
        return f"[[secret:{self._nonce}:{name}]]"

    def __getitem__(self, name: object) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise KeyError(name)
        return self.__getattr__(name)

    def __str__(self) -> str:
        return "<secrets>"


def names_in(text: str, nonce: str) -> set[str]:
    return {name for found, name in _PLACEHOLDER.findall(text) if found == nonce}


def substitute(text: str, nonce: str, lookup: Callable[[str], str]) -> str:
    """`text` with this nonce's placeholders replaced by the secrets' values.

    Placeholders with another nonce are left as they are: they were not made by this step.
    """

    def value(match: re.Match[str]) -> str:
        return lookup(match.group(2)) if match.group(1) == nonce else match.group(0)

    return _PLACEHOLDER.sub(value, text)


def scrub(text: str | None, values: Iterable[str]) -> str | None:
    """`text` with every secret value in it replaced by ***."""
    if text is None:
        return None
    for secret in sorted(values, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class ResolvedRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    # The values put in: every error text about this request is scrubbed of them.
    values: list[str] = field(default_factory=list)


def resolve_request(
    lookup: Callable[[str, str], str] | None,
    tenant_id: str,
    nonce: str | None,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
) -> ResolvedRequest:
    """The request as it is sent. Without a nonce (nothing referenced a secret) it is unchanged."""
    text = body.decode()
    if nonce is None or lookup is None:
        return ResolvedRequest(url, dict(headers), body)
    used = names_in(url, nonce) | names_in(text, nonce)
    for value in headers.values():
        used |= names_in(value, nonce)
    if not used:
        return ResolvedRequest(url, dict(headers), body)
    values = {name: lookup(tenant_id, name) for name in sorted(used)}

    def put(source: str) -> str:
        return substitute(source, nonce, values.__getitem__)

    return ResolvedRequest(
        url=put(url),
        headers={name: put(value) for name, value in headers.items()},
        body=put(text).encode(),
        values=list(values.values()),
    )
