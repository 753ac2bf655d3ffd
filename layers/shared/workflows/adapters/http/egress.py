"""Webhook egress policy: which destinations a webhook may reach, decided before connecting.

The policy checks the URL (scheme, port, host against the allow and deny lists), resolves the
host once and checks every resolved address. The result is a `Destination` naming the
validated addresses; the pinned transport below connects only to those, so a second DNS answer
(rebinding) can never change where the request goes. TLS still verifies the certificate for the
URL's hostname (SNI and Host header keep the name, only the TCP connect uses the address).

The rules, and how tenant and global lists combine, are written down in docs/webhooks.md.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpcore
import httpx

from workflows.deadline import DeadlineTransport, bounded

# Host patterns are shared with the hosts a secret may be sent to (domain.hosts).
from workflows.domain.hosts import HOSTNAME as _HOSTNAME
from workflows.domain.hosts import NUMERIC_LABEL as _NUMERIC_LABEL
from workflows.domain.hosts import HostPattern, IPAddress, parse_host_list
from workflows.domain.hosts import ip_or_none as _ip
from workflows.errors import DomainError
from workflows.settings import Settings

Resolver = Callable[[str, int], list[str]]
Connector = Callable[[str, int, float | None], httpcore.NetworkStream]

ALLOWLIST_ENV = "WORKFLOWS_WEBHOOK_ALLOWLIST"
DENYLIST_ENV = "WORKFLOWS_WEBHOOK_DENYLIST"
DEFAULT_PORTS = {"http": 80, "https": 443}
# A host with several validated addresses: try at most this many, in the resolver's order.
MAX_CONNECT_ADDRESSES = 3


_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack instance metadata
        "169.254.170.2",  # ECS task metadata and credentials
        "169.254.170.23",  # EKS pod identity agent
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "fd00:ec2::23",  # EKS pod identity agent over IPv6
    )
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 ranges that carry an IPv4 address inside: what they reach is decided by the IPv4 part.
_EMBEDDING = (
    (ipaddress.ip_network("64:ff9b::/96"), "a NAT64 address"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "a NAT64 address"),
    (ipaddress.ip_network("2002::/16"), "a 6to4 address"),
    (ipaddress.ip_network("2001::/32"), "a Teredo address"),
)


class EgressDenied(DomainError):
    """The egress policy refuses this destination; retrying will not change that."""

    code = "egress_denied"


class EgressResolutionFailed(DomainError):
    """The destination's hostname did not resolve; DNS may answer later, so this is transient."""

    code = "egress_resolution_failed"


def system_resolver(host: str, port: int) -> list[str]:
    """Every TCP address of `host`, in the system resolver's order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise EgressResolutionFailed(f"cannot resolve {host}: {exc}") from exc
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and str(sockaddr[0]) not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def tenant_key(tenant_id: str) -> str:
    """The environment variable suffix for a tenant: upper case, non-alphanumerics as `_`."""
    return re.sub(r"[^A-Z0-9]", "_", tenant_id.upper())


def address_refusal(address: IPAddress) -> tuple[str, bool] | None:
    """Why `address` is not a public destination, and whether an allowlist entry may override it.

    None for a public unicast address. Metadata, unspecified, multicast and IPv4-embedding IPv6
    addresses are refused even when listed (the bool is False); the rest (loopback, private,
    link-local, CGNAT, reserved...) are allowed when named literally on the allowlist.
    """
    if address in _METADATA:
        return "a cloud metadata address", False
    if address.is_unspecified:
        return "unspecified", False
    if address.is_multicast:
        return "multicast", False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address", False
        for network, reason in _EMBEDDING:
            if address in network:
                return reason, False
        if address.is_site_local:
            return "site-local", True
    if address.is_loopback:
        return "loopback", True
    if address.is_link_local:
        return "link-local", True
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared address space (CGNAT)", True
    if address.is_reserved:
        return "reserved", True
    if address.is_private:
        return "private", True
    if not address.is_global:
        return "not publicly routable", True
    return None


def parse_ports(raw: str) -> frozenset[int] | None:
    """`80,443` -> {80, 443}; `*` -> None (any port)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if items == ["*"]:
        return None
    ports: set[int] = set()
    for item in items:
        if not item.isascii() or not item.isdigit() or not 1 <= int(item) <= 65535:
            raise ValueError(f"invalid webhook port: {item!r}")
        ports.add(int(item))
    if not ports:
        raise ValueError("webhook_allowed_ports is empty; use '*' to allow any port")
    return frozenset(ports)


@dataclass(frozen=True)
class Destination:
    """A checked destination: connect only to `addresses`, speak to `host` (Host, SNI, cert)."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    # The host exactly as httpx puts it on the request; the pinned transport keys on it.
    connect_host: str = field(default="", compare=False)


class DestinationCheck(Protocol):
    """What the deliverer needs from a policy."""

    @property
    def follow_redirects(self) -> bool: ...

    @property
    def max_redirects(self) -> int: ...

    def check(self, url: str, tenant_id: str | None = None) -> Destination: ...


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    scheme: str
    host: str
    connect_host: str
    host_ip: IPAddress | None
    port: int


def _parse_target(url: str) -> _Target:
    try:
        parsed = httpx.URL(url)
        raw_host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise EgressDenied(f"invalid webhook url: {exc}") from exc
    scheme = parsed.scheme
    if scheme not in DEFAULT_PORTS:
        raise EgressDenied(f"webhook url scheme '{scheme}' is not allowed")
    if not raw_host:
        raise EgressDenied("webhook url has no host")
    host = raw_host.lower().removesuffix(".")
    if "%" in host:
        # Percent-encoded names and IPv6 zone ids (fe80::1%eth0) are not webhook destinations.
        raise EgressDenied(f"host '{host}' is not a valid hostname")
    host_ip = _ip(host)
    if host_ip is None:
        last_label = host.rsplit(".", 1)[-1]
        if _NUMERIC_LABEL.match(last_label):
            # 2130706433, 0x7f.0.0.1, 127.1: resolvers read these as IPv4 in odd spellings.
            raise EgressDenied(f"host '{host}' is not a canonical IP address")
        if not _HOSTNAME.match(host):
            raise EgressDenied(f"host '{host}' is not a valid hostname")
    else:
        host = host_ip.compressed
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    return _Target(parsed, scheme, host, raw_host, host_ip, port)


class EgressPolicy:
    """Allow/deny lists, allowed ports and address rules for webhook destinations.

    `check` raises EgressDenied (permanent) or EgressResolutionFailed (transient) and returns
    the Destination to connect to. Build it with `from_settings` at the composition root.
    """

    def __init__(
        self,
        *,
        allowlist: str | Iterable[str] = (),
        denylist: str | Iterable[str] = (),
        tenant_allowlists: Mapping[str, str | Iterable[str]] | None = None,
        tenant_denylists: Mapping[str, str | Iterable[str]] | None = None,
        allowed_ports: str = "80,443",
        follow_redirects: bool = False,
        max_redirects: int = 3,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._allow = parse_host_list(allowlist)
        self._deny = parse_host_list(denylist)
        self._tenant_allow = {tenant_key(k): parse_host_list(v) for k, v in (tenant_allowlists or {}).items()}
        self._tenant_deny = {tenant_key(k): parse_host_list(v) for k, v in (tenant_denylists or {}).items()}
        self._ports = parse_ports(allowed_ports)
        self._follow_redirects = follow_redirects
        self._max_redirects = max_redirects
        self._resolver = resolver

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str], *, resolver: Resolver = system_resolver
    ) -> EgressPolicy:
        """Global lists from settings; per-tenant `WORKFLOWS_WEBHOOK_{ALLOW,DENY}LIST_<TENANT>`
        from `environ` (the composition root passes os.environ)."""
        tenant_allow: dict[str, str] = {}
        tenant_deny: dict[str, str] = {}
        for name, value in environ.items():
            upper = name.upper()
            for prefix, target in ((ALLOWLIST_ENV + "_", tenant_allow), (DENYLIST_ENV + "_", tenant_deny)):
                if upper.startswith(prefix) and len(upper) > len(prefix) and value.strip(", "):
                    target[upper.removeprefix(prefix)] = value
        return cls(
            allowlist=settings.webhook_allowlist,
            denylist=settings.webhook_denylist,
            tenant_allowlists=tenant_allow,
            tenant_denylists=tenant_deny,
            allowed_ports=settings.webhook_allowed_ports,
            follow_redirects=settings.webhook_follow_redirects,
            max_redirects=settings.webhook_max_redirects,
            resolver=resolver,
        )

    @property
    def follow_redirects(self) -> bool:
        return self._follow_redirects

    @property
    def max_redirects(self) -> int:
        return self._max_redirects

    def lists_for(self, tenant_id: str | None) -> tuple[tuple[HostPattern, ...], tuple[HostPattern, ...]]:
        """(allowlist, denylist) for a tenant: its own allowlist replaces the global one when set;
        deny lists add up."""
        if tenant_id is None:
            return self._allow, self._deny
        key = tenant_key(tenant_id)
        allow = self._tenant_allow.get(key, self._allow)
        return allow, self._deny + self._tenant_deny.get(key, ())

    def check(self, url: str, tenant_id: str | None = None) -> Destination:
        target = _parse_target(url)
        host, host_ip = target.host, target.host_ip
        if self._ports is not None and target.port not in self._ports:
            raise EgressDenied(f"port {target.port} is not allowed")
        if not 1 <= target.port <= 65535:
            raise EgressDenied(f"port {target.port} is not valid")
        allow, deny = self.lists_for(tenant_id)
        if any(entry.matches_host(host, host_ip) for entry in deny):
            raise EgressDenied(f"host {host} is on the denylist")
        if allow and not any(entry.matches_host(host, host_ip) for entry in allow):
            raise EgressDenied(f"host {host} is not on the allowlist")
        host_named = any(entry.names_literally(host, host_ip) for entry in allow)

        raw_addresses = [host] if host_ip is not None else self._resolver(host, target.port)
        if not raw_addresses:
            raise EgressResolutionFailed(f"{host} has no addresses")
        addresses: list[str] = []
        for raw in raw_addresses:
            address = _ip(raw)
            if address is None:
                raise EgressDenied(f"{host} resolved to an invalid address {raw!r}")
            self._check_address(host, address, allow, deny, host_named=host_named)
            if address.compressed not in addresses:
                addresses.append(address.compressed)
        return Destination(target.scheme, host, target.port, tuple(addresses), target.connect_host)

    @staticmethod
    def _check_address(
        host: str,
        address: IPAddress,
        allow: Sequence[HostPattern],
        deny: Sequence[HostPattern],
        *,
        host_named: bool,
    ) -> None:
        # One forbidden answer refuses the host: an attacker's DNS may mix public and private.
        where = f"address {address}" if host == address.compressed else f"{host} resolves to {address}, which"
        if any(entry.ip == address for entry in deny):
            raise EgressDenied(f"{where} is on the denylist")
        refusal = address_refusal(address)
        if refusal is None:
            return
        reason, overridable = refusal
        address_named = any(entry.ip == address for entry in allow)
        if overridable and (host_named or address_named):
            return
        raise EgressDenied(f"{where} is {reason}")


class UrlCheckPolicy:
    """Adapts a plain `url -> None` check: resolves and pins, but applies no address rules."""

    follow_redirects = False
    max_redirects = 0

    def __init__(self, url_check: Callable[[str], None], resolver: Resolver = system_resolver) -> None:
        self._url_check = url_check
        self._resolver = resolver

    def check(self, url: str, tenant_id: str | None = None) -> Destination:
        self._url_check(url)
        target = _parse_target(url)
        raw = [target.host] if target.host_ip is not None else self._resolver(target.host, target.port)
        addresses = tuple(dict.fromkeys(a for a in raw if _ip(a) is not None))
        if not addresses:
            raise EgressResolutionFailed(f"{target.host} has no addresses")
        return Destination(target.scheme, target.host, target.port, addresses, target.connect_host)


# ---- connecting only to validated addresses ------------------------------------------------

_SYNC_BACKEND = httpcore.SyncBackend()


def tcp_connector(address: str, port: int, timeout: float | None) -> httpcore.NetworkStream:
    """The real connect: a TCP connection to one validated address."""
    return _SYNC_BACKEND.connect_tcp(address, port, timeout=timeout)


class PinnedNetworkBackend(httpcore.NetworkBackend):
    """Connects to the addresses pinned for (host, port), never to anything resolved later.

    A host that was not pinned (not checked by the policy) is refused without a connection.
    """

    def __init__(self, connector: Connector = tcp_connector) -> None:
        self._connector = connector
        self._pins: dict[tuple[str, int], tuple[str, ...]] = {}

    def pin(self, destination: Destination) -> None:
        self._pins[(destination.connect_host, destination.port)] = destination.addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._pins.get((host, port))
        if not addresses:
            raise httpcore.ConnectError(f"refusing to connect to {host}:{port}: not checked by the policy")
        error: Exception | None = None
        for address in addresses[:MAX_CONNECT_ADDRESSES]:
            # Each address gets at most the time left of the call's overall deadline.
            attempt_timeout = bounded(timeout, httpcore.ConnectTimeout)
            try:
                return self._connector(address, port, attempt_timeout)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook destinations")


class PinnedTransport(DeadlineTransport):
    """httpx's own transport, with a connection pool whose connects go through the pins and
    whose connections keep the call's overall deadline (workflows.deadline)."""

    def __init__(self, backend: PinnedNetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(backend, ssl_context=ssl_context)


__all__ = [
    "Connector",
    "Destination",
    "DestinationCheck",
    "EgressDenied",
    "EgressPolicy",
    "EgressResolutionFailed",
    "HostPattern",
    "PinnedNetworkBackend",
    "PinnedTransport",
    "Resolver",
    "UrlCheckPolicy",
    "address_refusal",
    "system_resolver",
    "tcp_connector",
    "tenant_key",
]
