"""The webhook egress policy: verdicts on URLs and resolved addresses, and pinned connects.

Nothing here opens a connection to a non-loopback address: resolvers are fakes, and the
connectors record the address they were asked for and then refuse (or fake a TLS handshake).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpcore
import pytest

from workflows.adapters.http.delivery import HttpDeliverer
from workflows.adapters.http.egress import (
    EgressDenied,
    EgressPolicy,
    EgressResolutionFailed,
    PinnedNetworkBackend,
    tenant_key,
)
from workflows.adapters.http.signing import sign, signature_headers
from workflows.settings import Settings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PUBLIC = "93.184.216.34"

DNS: dict[str, list[str]] = {
    "hooks.example.com": [PUBLIC],
    "example.com": [PUBLIC],
    "a.example.com": [PUBLIC],
    "a.b.example.com": [PUBLIC],
    "bad.example.com": [PUBLIC],
    "badexample.com": [PUBLIC],
    "hooks.acme.io": ["1.1.1.1"],
    "v6.example.org": ["2606:2800:220:1:248:1893:25c8:1946"],
    # An attacker's zone: a public answer first, a private one next.
    "mixed.example.net": [PUBLIC, "10.0.0.5"],
    "internal.example.com": ["10.1.2.3"],
    "internal.corp": ["10.1.2.3"],
    "localhost": ["127.0.0.1", "::1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
}


def fake_resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise EgressResolutionFailed(f"cannot resolve {host}")
    return list(DNS[host])


def settings(**overrides: Any) -> Settings:
    # Explicit values: the process environment must not leak into the policy under test.
    values: dict[str, Any] = {
        "webhook_allowlist": "",
        "webhook_denylist": "",
        "webhook_allowed_ports": "80,443",
        "webhook_follow_redirects": False,
        "webhook_max_redirects": 3,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass(frozen=True)
class Case:
    url: str
    expected: str  # "allow", or a fragment of the refusal message
    lists: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    tenant: str | None = None


ALLOW = "allow"
TENANTS = {
    "WORKFLOWS_WEBHOOK_ALLOWLIST_ACME": "*.acme.io",
    "WORKFLOWS_WEBHOOK_DENYLIST_ACME": "bad.example.com",
    "WORKFLOWS_WEBHOOK_DENYLIST_GLOBEX_EU": "hooks.example.com",
}

SSRF_TABLE = [
    # Schemes and ports
    Case("file:///etc/passwd", "scheme 'file' is not allowed"),
    Case("gopher://hooks.example.com/_x", "scheme 'gopher' is not allowed"),
    Case("ftp://hooks.example.com/x", "scheme 'ftp' is not allowed"),
    Case("dict://hooks.example.com:11211/", "scheme 'dict' is not allowed"),
    Case("http://hooks.example.com/x", ALLOW),
    Case("https://hooks.example.com/x?y=1", ALLOW),
    Case("https://HOOKS.Example.COM./x", ALLOW),
    Case("https://v6.example.org/x", ALLOW),
    Case("http://hooks.example.com:8080/x", "port 8080 is not allowed"),
    Case("http://hooks.example.com:22/", "port 22 is not allowed", {"webhook_allowed_ports": "80,443,8443"}),
    Case("https://hooks.example.com:8443/", ALLOW, {"webhook_allowed_ports": "80,443,8443"}),
    Case("https://hooks.example.com:9999/", ALLOW, {"webhook_allowed_ports": "*"}),
    Case("http:///no-host", "no host"),
    # Odd IPv4 spellings
    Case("http://2130706433/", "not a canonical IP address"),
    Case("http://0177.0.0.1/", "invalid webhook url"),
    Case("http://0x7f.0.0.1/", "not a canonical IP address"),
    Case("http://0x7f000001/", "not a canonical IP address"),
    Case("http://127.1/", "not a canonical IP address"),
    Case("http://%31%32%37.0.0.1/", "not a valid hostname"),
    Case("http://[fe80::1%25eth0]/", "not a valid hostname"),
    Case("http://ho%6fks.example.com/", "not a valid hostname"),
    # Address classes
    Case("http://127.0.0.1/", "address 127.0.0.1 is loopback"),
    Case("http://[::1]/", "address ::1 is loopback"),
    Case("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
    Case("http://[::ffff:a9fe:a9fe]/", "IPv4-mapped"),
    Case("http://[fd00:ec2::254]/", "cloud metadata"),
    Case("http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is a cloud metadata address"),
    Case("http://[::]/", "unspecified"),
    Case("http://0.0.0.0/", "unspecified"),
    Case("http://100.64.0.1/", "CGNAT"),
    Case("http://224.0.0.1/", "multicast"),
    Case("http://[ff02::1]/", "multicast"),
    Case("http://10.0.0.5/x", "address 10.0.0.5 is private"),
    Case("http://172.16.0.1/", "private"),
    Case("http://192.168.1.1/", "private"),
    Case("http://[fc00::1]/", "private"),
    Case("http://169.254.1.1/", "link-local"),
    Case("http://[fe80::1]/", "link-local"),
    Case("http://240.0.0.1/", "reserved"),
    Case("http://[64:ff9b::a00:5]/", "NAT64"),
    Case("http://[2002:a00:5::]/", "6to4"),
    Case("http://[2001::1]/", "Teredo"),
    # Names that resolve to forbidden addresses
    Case("http://mixed.example.net/", "mixed.example.net resolves to 10.0.0.5, which is private"),
    Case("http://localhost/", "localhost resolves to 127.0.0.1, which is loopback"),
    Case("http://127.0.0.1.nip.io/", "resolves to 127.0.0.1, which is loopback"),
    Case("http://metadata.example.com/", "cloud metadata"),
    # Literal allowlist entries open a non-public address; wildcards never do
    Case(
        "http://127.0.0.1:8080/hook", ALLOW, {"webhook_allowlist": "127.0.0.1", "webhook_allowed_ports": "*"}
    ),
    Case("http://[::1]/hook", ALLOW, {"webhook_allowlist": "[::1]"}),
    Case("http://127.0.0.2/", "host 127.0.0.2 is not on the allowlist", {"webhook_allowlist": "127.0.0.1"}),
    Case("http://localhost/", "host localhost is not on the allowlist", {"webhook_allowlist": "127.0.0.1"}),
    Case("http://localhost/", ALLOW, {"webhook_allowlist": "localhost"}),
    Case("http://internal.corp/", ALLOW, {"webhook_allowlist": "internal.corp"}),
    Case("http://internal.example.com/", "which is private", {"webhook_allowlist": "*.example.com"}),
    Case("http://169.254.169.254/", "cloud metadata", {"webhook_allowlist": "169.254.169.254"}),
    Case("http://[::ffff:127.0.0.1]/", "IPv4-mapped", {"webhook_allowlist": "::ffff:127.0.0.1"}),
    Case("http://0.0.0.0/", "unspecified", {"webhook_allowlist": "0.0.0.0"}),
    # Wildcards: subdomains at any depth, never the bare domain or a look-alike
    Case("https://a.example.com/", ALLOW, {"webhook_allowlist": "*.example.com"}),
    Case("https://a.b.example.com/", ALLOW, {"webhook_allowlist": "*.example.com"}),
    Case(
        "https://example.com/",
        "host example.com is not on the allowlist",
        {"webhook_allowlist": "*.example.com"},
    ),
    Case("https://badexample.com/", "not on the allowlist", {"webhook_allowlist": "*.example.com"}),
    Case("https://example.com/", ALLOW, {"webhook_allowlist": "example.com,*.example.com"}),
    # Deny wins
    Case(
        "https://bad.example.com/",
        "host bad.example.com is on the denylist",
        {"webhook_allowlist": "*.example.com", "webhook_denylist": "bad.example.com"},
    ),
    Case(
        "http://127.0.0.1/",
        "on the denylist",
        {"webhook_allowlist": "127.0.0.1", "webhook_denylist": "127.0.0.1"},
    ),
    Case("https://a.b.example.com/", "on the denylist", {"webhook_denylist": "*.example.com"}),
    Case("https://example.com/", ALLOW, {"webhook_denylist": "*.example.com"}),
    Case(
        "https://hooks.example.com/",
        f"resolves to {PUBLIC}, which is on the denylist",
        {"webhook_denylist": PUBLIC},
    ),
    # Tenant overrides: a tenant allowlist replaces the global one; deny lists add up
    Case("https://hooks.acme.io/", ALLOW, {"webhook_allowlist": "hooks.example.com"}, TENANTS, "acme"),
    Case(
        "https://hooks.example.com/",
        "not on the allowlist",
        {"webhook_allowlist": "hooks.example.com"},
        TENANTS,
        "acme",
    ),
    Case("https://hooks.example.com/", ALLOW, {"webhook_allowlist": "hooks.example.com"}, TENANTS, "initech"),
    Case(
        "https://hooks.acme.io/", "not on the allowlist", {"webhook_allowlist": "hooks.example.com"}, TENANTS
    ),
    Case("https://bad.example.com/", "on the denylist", {}, TENANTS, "acme"),
    Case("https://bad.example.com/", ALLOW, {}, TENANTS, "initech"),
    Case("https://hooks.acme.io/", "on the denylist", {"webhook_denylist": "*.acme.io"}, TENANTS, "acme"),
    Case("https://hooks.example.com/", "on the denylist", {}, TENANTS, "globex.eu"),
    Case("https://hooks.example.com/", "on the denylist", {}, TENANTS, "Globex-EU"),
]


@pytest.mark.parametrize("case", SSRF_TABLE, ids=lambda c: f"{c.url} {c.lists} {c.tenant}")
def test_ssrf_table(case: Case) -> None:
    policy = EgressPolicy.from_settings(settings(**case.lists), case.environ, resolver=fake_resolver)

    try:
        destination = policy.check(case.url, case.tenant)
    except EgressDenied as exc:
        verdict = exc.message
    else:
        verdict = ALLOW
        assert destination.addresses

    if case.expected == ALLOW:
        assert verdict == ALLOW
    else:
        assert case.expected in verdict


def test_ssrf_table_is_large_enough() -> None:
    assert len(SSRF_TABLE) >= 30


def test_allowed_destination_names_the_validated_addresses() -> None:
    policy = EgressPolicy(allowlist="localhost", resolver=fake_resolver)

    destination = policy.check("http://localhost/hook")

    assert (destination.host, destination.port, destination.addresses) == (
        "localhost",
        80,
        ("127.0.0.1", "::1"),
    )


def test_unresolvable_host_is_a_resolution_failure_not_a_refusal() -> None:
    policy = EgressPolicy(resolver=fake_resolver)

    with pytest.raises(EgressResolutionFailed):
        policy.check("https://nowhere.example.com/")


def test_empty_resolver_answer_is_a_resolution_failure() -> None:
    policy = EgressPolicy(resolver=lambda host, port: [])

    with pytest.raises(EgressResolutionFailed):
        policy.check("https://hooks.example.com/")


@pytest.mark.parametrize("ports", ["", "80,http", "0", "65536", "*,80"])
def test_invalid_port_setting_fails_at_startup(ports: str) -> None:
    with pytest.raises(ValueError, match="port"):
        EgressPolicy.from_settings(settings(webhook_allowed_ports=ports), {})


@pytest.mark.parametrize("entry", ["*", "*.", "http://x.com", "a b.com", "127.1", "*.*.example.com"])
def test_invalid_list_entry_fails_at_startup(entry: str) -> None:
    with pytest.raises(ValueError, match="entry"):
        EgressPolicy.from_settings(settings(webhook_allowlist=entry), {})


def test_tenant_key_upper_cases_and_replaces_non_alphanumerics() -> None:
    assert tenant_key("acme-corp.eu") == "ACME_CORP_EU"
    assert tenant_key("Tenant_1") == "TENANT_1"


def test_empty_tenant_allowlist_falls_back_to_the_global_one() -> None:
    policy = EgressPolicy.from_settings(
        settings(webhook_allowlist="hooks.example.com"),
        {"WORKFLOWS_WEBHOOK_ALLOWLIST_ACME": " "},
        resolver=fake_resolver,
    )

    assert policy.check("https://hooks.example.com/", "acme").host == "hooks.example.com"


def test_redirect_settings_are_carried_by_the_policy() -> None:
    policy = EgressPolicy.from_settings(settings(webhook_follow_redirects=True, webhook_max_redirects=2), {})

    assert (policy.follow_redirects, policy.max_redirects) == (True, 2)


# ---- the address connected to is the validated one ------------------------------------------


class ChangingResolver:
    """Answers with each list in turn: a rebinding DNS server."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class RecordingConnector:
    """Records every address a connect was asked for; connects nowhere."""

    def __init__(self, respond: Callable[[str, int], httpcore.NetworkStream] | None = None) -> None:
        self.connected: list[tuple[str, int]] = []
        self._respond = respond

    def __call__(self, address: str, port: int, timeout: float | None) -> httpcore.NetworkStream:
        self.connected.append((address, port))
        if self._respond is None:
            raise httpcore.ConnectError("connects are recorded, not made, in this test")
        return self._respond(address, port)


class TlsRecordingStream(httpcore.NetworkStream):
    """A stream that records the TLS handshake it is asked for, then fails it."""

    def __init__(self) -> None:
        self.server_hostname: str | None = None
        self.ssl_context: ssl.SSLContext | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise httpcore.ReadError("no data in this test")

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("no data in this test")

    def close(self) -> None:
        pass

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        raise httpcore.ConnectError("handshake recorded, not made")


def test_rebinding_resolver_cannot_change_the_connected_address() -> None:
    # Given DNS that answers a public address first and loopback afterwards
    resolver = ChangingResolver([PUBLIC], ["127.0.0.1"])
    connector = RecordingConnector()
    deliverer = HttpDeliverer(
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        timeout=2,
        policy=EgressPolicy(resolver=resolver),
        clock=lambda: NOW,
        connector=connector,
    )

    # When a webhook is delivered
    result = deliverer.deliver("http://hooks.example.com/x", b"{}", "msg_1")

    # Then the name was resolved once and only the validated address was connected to
    assert resolver.calls == ["hooks.example.com"]
    assert connector.connected == [(PUBLIC, 80)]
    assert result.outcome == "transient"
    assert (result.error or "").startswith("ConnectError")


def test_tls_keeps_the_hostname_for_sni_and_certificate_checks() -> None:
    stream = TlsRecordingStream()
    connector = RecordingConnector(lambda address, port: stream)
    deliverer = HttpDeliverer(
        [], timeout=2, policy=EgressPolicy(resolver=fake_resolver), clock=lambda: NOW, connector=connector
    )

    result = deliverer.deliver("https://hooks.example.com/x", b"{}", "msg_1")

    assert connector.connected == [(PUBLIC, 443)]
    assert stream.server_hostname == "hooks.example.com"
    assert stream.ssl_context is not None
    assert stream.ssl_context.check_hostname
    assert stream.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert result.outcome == "transient"


def test_refused_destination_is_never_connected_to() -> None:
    connector = RecordingConnector()
    deliverer = HttpDeliverer(
        [], timeout=2, policy=EgressPolicy(resolver=fake_resolver), clock=lambda: NOW, connector=connector
    )

    result = deliverer.deliver("http://mixed.example.net/x", b"{}", "msg_1")

    assert connector.connected == []
    assert result.outcome == "permanent"
    assert result.error == "egress denied: mixed.example.net resolves to 10.0.0.5, which is private"


def test_tenant_is_applied_per_delivery() -> None:
    connector = RecordingConnector()
    policy = EgressPolicy.from_settings(settings(), TENANTS, resolver=fake_resolver)
    deliverer = HttpDeliverer([], timeout=2, policy=policy, clock=lambda: NOW, connector=connector)

    refused = deliverer.deliver("https://hooks.example.com/x", b"{}", "msg_1", tenant_id="globex.eu")
    attempted = deliverer.deliver("https://hooks.example.com/x", b"{}", "msg_1", tenant_id="initech")

    assert refused.error == "egress denied: host hooks.example.com is on the denylist"
    assert attempted.outcome == "transient"
    assert connector.connected == [(PUBLIC, 443)]


def test_unresolvable_host_is_transient() -> None:
    deliverer = HttpDeliverer([], timeout=2, policy=EgressPolicy(resolver=fake_resolver), clock=lambda: NOW)

    result = deliverer.deliver("https://nowhere.example.com/x", b"{}", "msg_1")

    assert result.outcome == "transient"
    assert (result.error or "").startswith("dns:")


def test_backend_refuses_a_host_the_policy_did_not_check() -> None:
    connector = RecordingConnector()
    backend = PinnedNetworkBackend(connector)

    with pytest.raises(httpcore.ConnectError, match="not checked by the policy"):
        backend.connect_tcp("hooks.example.com", 443)
    assert connector.connected == []


def test_backend_tries_the_next_validated_address_when_one_fails() -> None:
    connector = RecordingConnector()
    deliverer = HttpDeliverer(
        [],
        timeout=2,
        policy=EgressPolicy(resolver=lambda host, port: ["2606:2800:220:1:248:1893:25c8:1946", PUBLIC]),
        clock=lambda: NOW,
        connector=connector,
    )

    deliverer.deliver("https://hooks.example.com/x", b"{}", "msg_1")

    assert connector.connected == [("2606:2800:220:1:248:1893:25c8:1946", 443), (PUBLIC, 443)]


# ---- the receiver example in docs/webhooks.md ---------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


@pytest.fixture(scope="module")
def receiver_example() -> dict[str, Any]:
    text = DOCS.read_text()
    section = text[text.index("## Verifying signatures") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the Verifying signatures section has a python example"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def signed_request(
    secret: str = SECRET, body: bytes = b'{"event":"run_completed"}'
) -> tuple[dict[str, str], bytes]:
    timestamp = int(NOW.timestamp())
    return signature_headers(secret, "msg_2Lq8", timestamp, body), body


def test_documented_receiver_accepts_a_signed_webhook(receiver_example: dict[str, Any]) -> None:
    headers, body = signed_request()

    receiver_example["verify_webhook"]([SECRET], headers, body, now=NOW.timestamp() + 60)


def test_documented_receiver_accepts_the_old_secret_during_rotation(receiver_example: dict[str, Any]) -> None:
    headers, body = signed_request(OLD_SECRET)

    receiver_example["verify_webhook"]([SECRET, OLD_SECRET], headers, body, now=NOW.timestamp())


def test_documented_receiver_accepts_any_of_several_signatures(receiver_example: dict[str, Any]) -> None:
    headers, body = signed_request(OLD_SECRET)
    timestamp = int(headers["webhook-timestamp"])
    headers["webhook-signature"] = (
        f"{sign(SECRET, 'msg_2Lq8', timestamp, body)} {headers['webhook-signature']}"
    )

    receiver_example["verify_webhook"]([OLD_SECRET], headers, body, now=NOW.timestamp())


def test_documented_receiver_rejects_a_changed_body_byte(receiver_example: dict[str, Any]) -> None:
    headers, body = signed_request()
    tampered = body.replace(b"run_completed", b"run_completeD")

    with pytest.raises(receiver_example["InvalidWebhook"]):
        receiver_example["verify_webhook"]([SECRET], headers, tampered, now=NOW.timestamp())


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_documented_receiver_rejects_a_timestamp_out_of_tolerance(
    receiver_example: dict[str, Any], skew: int
) -> None:
    headers, body = signed_request()

    with pytest.raises(receiver_example["InvalidWebhook"]):
        receiver_example["verify_webhook"]([SECRET], headers, body, now=NOW.timestamp() + skew)


def test_documented_receiver_rejects_a_wrong_secret_and_missing_headers(
    receiver_example: dict[str, Any],
) -> None:
    headers, body = signed_request()
    invalid = receiver_example["InvalidWebhook"]

    with pytest.raises(invalid):
        receiver_example["verify_webhook"]([OLD_SECRET], headers, body, now=NOW.timestamp())
    with pytest.raises(invalid):
        receiver_example["verify_webhook"]([SECRET], {}, body, now=NOW.timestamp())
