"""A webhook request with its secret placeholders resolved, for the send only (domain.secret_refs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from workflows.domain.secret_refs import names_in, substitute

# (tenant_id, name) -> the value; raises SecretUnavailable.
SecretLookup = Callable[[str, str], str]


@dataclass(frozen=True)
class ResolvedRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    # The values put in: every error text about this request is scrubbed of them.
    values: list[str] = field(default_factory=list)


def resolve_request(
    lookup: SecretLookup | None,
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
