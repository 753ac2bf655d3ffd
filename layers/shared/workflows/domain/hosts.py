"""Host patterns: an exact hostname, `*.suffix`, or an IP address.

One syntax for the webhook egress lists (adapters/http/egress.py, docs/webhooks.md) and for the
hosts a secret may be sent to (docs/steps.md, "Secrets"), so both read and match the same way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
# WHATWG URL rule: a host whose last label is a number is an IPv4 address in some spelling.
NUMERIC_LABEL = re.compile(r"^(\d+|0x[0-9a-f]*)$")


def ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class HostPattern:
    """One allow/deny list entry: an exact hostname, `*.suffix`, or an IP address."""

    text: str
    ip: IPAddress | None = None
    suffix: str | None = None

    @classmethod
    def parse(cls, raw: str) -> HostPattern:
        text = raw.strip().lower()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text = text.removesuffix(".")
        ip = ip_or_none(text)
        if ip is not None:
            return cls(ip.compressed, ip=ip)
        if text.startswith("*."):
            suffix = text[1:]
            if HOSTNAME.match(suffix[1:]):
                return cls(text, suffix=suffix)
        elif HOSTNAME.match(text) and not NUMERIC_LABEL.match(text.rsplit(".", 1)[-1]):
            return cls(text)
        raise ValueError(f"invalid webhook host list entry: {raw!r}")

    def matches_host(self, host: str, host_ip: IPAddress | None) -> bool:
        if self.ip is not None:
            return host_ip == self.ip
        if self.suffix is not None:
            # `*.example.com` covers a.example.com and a.b.example.com, never example.com itself.
            return host.endswith(self.suffix) and len(host) > len(self.suffix)
        return host == self.text

    def names_literally(self, host: str, host_ip: IPAddress | None) -> bool:
        """An exact entry for this host (wildcards never vouch for a non-public address)."""
        return self.suffix is None and self.matches_host(host, host_ip)


def parse_host_list(raw: str | Iterable[str]) -> tuple[HostPattern, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(HostPattern.parse(item) for item in items if item.strip())


def host_matches(patterns: Iterable[HostPattern], host: str) -> bool:
    """Whether `host` (lower case, as a URL names it) matches one of `patterns`."""
    host = host.lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host_ip = ip_or_none(host)
    if host_ip is not None:
        host = host_ip.compressed
    return any(pattern.matches_host(host, host_ip) for pattern in patterns)
