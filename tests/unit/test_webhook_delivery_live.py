"""Webhook delivery through the egress policy against real receivers on 127.0.0.1.

Every connect goes through a connector that records the address and refuses anything outside
loopback, so a policy bug fails the test instead of sending a packet off the machine.
"""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime
from typing import Any

import httpcore
import pytest

from tests.receivers import Receiver, Reply, trickler
from workflows.adapters.http.delivery import HttpDeliverer
from workflows.adapters.http.egress import (
    EgressPolicy,
    EgressResolutionFailed,
    system_resolver,
    tcp_connector,
)
from workflows.adapters.http.signing import verify
from workflows.domain.delivery import DeliveryResult

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BODY = b'{"event":"run_completed"}'


class LoopbackOnlyConnector:
    """Records each connect; makes it only to loopback, never elsewhere."""

    def __init__(self) -> None:
        self.connected: list[str] = []

    def __call__(self, address: str, port: int, timeout: float | None) -> httpcore.NetworkStream:
        self.connected.append(address)
        if not ipaddress.ip_address(address).is_loopback:
            raise AssertionError(f"a test tried to connect to {address}")
        return tcp_connector(address, port, timeout)


@pytest.fixture
def connector() -> LoopbackOnlyConnector:
    return LoopbackOnlyConnector()


def resolver(host: str, port: int) -> list[str]:
    # The test zone: names under .test resolve to fixed addresses, nothing else resolves.
    zone = {
        "internal.test": ["10.0.0.5"],
        "metadata.test": ["169.254.169.254"],
        "hooks.test": ["127.0.0.1"],
    }
    if host not in zone:
        raise EgressResolutionFailed(f"cannot resolve {host}")
    return zone[host]


def deliverer(connector: LoopbackOnlyConnector, *, timeout: float = 5, **policy: Any) -> HttpDeliverer:
    policy.setdefault("allowlist", "127.0.0.1")
    policy.setdefault("allowed_ports", "*")
    return HttpDeliverer(
        [SECRET],
        timeout=timeout,
        policy=EgressPolicy(resolver=resolver, **policy),
        clock=lambda: NOW,
        connector=connector,
    )


def test_allowlisted_loopback_receiver_gets_a_signed_webhook(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    result = deliverer(connector).deliver(receiver.url(), BODY, "msg_1")

    assert result.outcome == "delivered"
    [request] = receiver.requests
    verify([SECRET], request.headers, request.body, now=NOW)
    assert connector.connected == ["127.0.0.1"]


def test_hostname_keeps_its_host_header_while_connecting_to_the_pinned_address(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    result = deliverer(connector, allowlist="hooks.test").deliver(receiver.url(host="hooks.test"), BODY, "m")

    assert result.outcome == "delivered"
    assert receiver.requests[0].headers["host"] == f"hooks.test:{receiver.port}"
    assert connector.connected == ["127.0.0.1"]


def test_redirect_to_a_private_address_is_not_followed_by_default(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    receiver.replies.append(Reply(302, {"Location": "http://10.0.0.5/x"}))

    result = deliverer(connector).deliver(receiver.url(), BODY, "msg_1")

    assert (result.outcome, result.status_code) == ("permanent", 302)
    assert "redirects are not followed" in (result.error or "")
    assert connector.connected == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.5/x", "redirect to http://10.0.0.5/x: host 10.0.0.5 is not on the allowlist"),
        ("http://internal.test/x", "internal.test resolves to 10.0.0.5, which is private"),
        ("http://metadata.test/latest/meta-data/", "169.254.169.254, which is a cloud metadata address"),
    ],
)
def test_followed_redirect_to_a_private_address_is_refused_before_connecting(
    receiver: Receiver, connector: LoopbackOnlyConnector, location: str, reason: str
) -> None:
    # Given redirects are followed and the receiver points at a private destination
    receiver.replies.append(Reply(307, {"Location": location}))
    delivery = deliverer(connector, allowlist="127.0.0.1,*.test", follow_redirects=True)

    # When the webhook is delivered
    result = delivery.deliver(receiver.url(), BODY, "msg_1")

    # Then the second hop is refused by the policy and never connected to
    assert result.outcome == "permanent"
    assert (result.error or "").startswith("egress denied: ")
    assert reason in (result.error or "")
    assert connector.connected == ["127.0.0.1"]
    assert len(receiver.requests) == 1


def test_followed_redirect_resends_the_signed_post_to_an_allowed_hop(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    receiver.replies.append(Reply(308, {"Location": "/moved"}))

    result = deliverer(connector, follow_redirects=True).deliver(receiver.url(), BODY, "msg_1")

    assert result.outcome == "delivered"
    assert [r.path for r in receiver.requests] == ["/hook", "/moved"]
    moved = receiver.requests[1]
    assert moved.body == BODY
    verify([SECRET], moved.headers, moved.body, now=NOW)
    assert connector.connected == ["127.0.0.1", "127.0.0.1"]


def test_redirects_beyond_the_limit_fail_permanently(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    receiver.replies.extend(Reply(302, {"Location": f"/hop{i}"}) for i in range(3))

    result = deliverer(connector, follow_redirects=True, max_redirects=2).deliver(receiver.url(), BODY, "m")

    assert (result.outcome, result.status_code) == ("permanent", 302)
    assert "more than 2 redirects" in (result.error or "")
    assert [r.path for r in receiver.requests] == ["/hook", "/hop0", "/hop1"]


def test_receiver_hanging_past_the_timeout_is_transient(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    receiver.replies.append(Reply(200, delay=1.5))

    result = deliverer(connector, timeout=0.3).deliver(receiver.url(), BODY, "msg_1")

    # A delivered answer would mean the 0.3 s timeout never fired (the receiver waits 1.5 s).
    assert result.outcome == "transient"
    assert (result.error or "").startswith("timeout")


def _hung_up(receiver: Receiver, within: float) -> bool:
    """Whether the receiver saw the client hang up (its next trickled byte fails) in time."""
    ends = time.monotonic() + within
    while not receiver.hangups and time.monotonic() < ends:
        time.sleep(0.05)
    return bool(receiver.hangups)


def test_a_trickled_status_line_and_headers_end_at_the_deadline(connector: LoopbackOnlyConnector) -> None:
    # Given a receiver that sends its status line and headers one byte every 0.5 s: every read
    # is quick, the whole answer would take over a minute
    trickling = Receiver(default=trickler(0.5))
    try:
        # When a delivery with a 1 s deadline is made (the deliverer's default is 10 s)
        started = time.monotonic()
        result = deliverer(connector, timeout=10).deliver(trickling.url(), BODY, "msg_1", timeout=1)
        elapsed = time.monotonic() - started

        # Then it is a transient timeout at the deadline, and the connection was closed
        assert result == DeliveryResult("transient", error="timeout: ReadTimeout")
        assert elapsed < 5, f"took {elapsed:.1f} s for a 1 s deadline"
        assert _hung_up(trickling, within=3)
        assert len(trickling.requests) == 1
    finally:
        trickling.close()


def test_a_trickled_body_ends_at_the_deadline_with_the_status_already_known(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    receiver.reply(Reply(503, body=b"busy " * 40, trickle_body=0.5))

    started = time.monotonic()
    result = deliverer(connector, timeout=1).deliver(receiver.url(), BODY, "msg_1")
    elapsed = time.monotonic() - started

    # The status line decided the outcome; the body is cut at the deadline.
    assert (result.outcome, result.status_code) == ("transient", 503)
    assert (result.error or "").startswith("HTTP 503: b")
    assert len(result.error or "") < len("HTTP 503: busy busy")
    assert elapsed < 5, f"took {elapsed:.1f} s for a 1 s deadline"
    assert _hung_up(receiver, within=3)


def test_localhost_not_on_the_allowlist_is_refused(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    result = deliverer(connector).deliver(receiver.url(host="localhost"), BODY, "msg_1")

    assert result.outcome == "permanent"
    assert result.error == "egress denied: host localhost is not on the allowlist"
    assert connector.connected == []
    assert receiver.requests == []


def test_loopback_is_refused_without_an_allowlist_entry(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    result = deliverer(connector, allowlist="").deliver(receiver.url(), BODY, "msg_1")

    assert result.error == "egress denied: address 127.0.0.1 is loopback"
    assert connector.connected == []
    assert receiver.requests == []


def test_localhost_listed_literally_is_delivered_through_the_system_resolver(
    receiver: Receiver, connector: LoopbackOnlyConnector
) -> None:
    # localhost may resolve to ::1 first; the receiver listens on 127.0.0.1 only, so that
    # connect is refused and the next validated address is used.
    delivery = HttpDeliverer(
        [SECRET],
        timeout=5,
        policy=EgressPolicy(allowlist="localhost", allowed_ports="*", resolver=system_resolver),
        clock=lambda: NOW,
        connector=connector,
    )

    result = delivery.deliver(receiver.url(host="localhost"), BODY, "msg_1")

    assert result.outcome == "delivered"
    assert connector.connected[-1] == "127.0.0.1"
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"
