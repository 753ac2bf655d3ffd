"""Delivery outcomes from status codes and Retry-After, the default egress policy, cold start."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from workflows.adapters.http.delivery import (
    DeliveryResult,
    EgressDenied,
    classify,
    parse_retry_after,
    scheme_policy,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (408, "transient"),
        (425, "transient"),
        (429, "transient"),
        (500, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (599, "transient"),
        (400, "permanent"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (410, "permanent"),
        (413, "permanent"),
        (422, "permanent"),
        (301, "permanent"),
        (302, "permanent"),
        (307, "permanent"),
    ],
)
def test_classify_status(status: int, outcome: str) -> None:
    result = classify(status, {}, now=NOW)

    assert result.outcome == outcome
    assert result.status_code == status
    assert (result.error is None) == (outcome == "delivered")


def test_classify_names_the_status_in_the_error() -> None:
    assert classify(410, {}, now=NOW).error == "HTTP 410"
    assert "redirect" in (classify(302, {"location": "http://elsewhere"}, now=NOW).error or "")


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "120"}, 120.0),
        (503, {"retry-after": "7"}, 7.0),
        (503, {"RETRY-AFTER": " 0 "}, 0.0),
        (429, {"Retry-After": "Thu, 01 Jan 2026 12:05:00 GMT"}, 300.0),
        (503, {"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}, 0.0),
        (429, {"Retry-After": "soon"}, None),
        (429, {"Retry-After": "-5"}, None),
        (429, {"Retry-After": "1.5"}, None),
        (429, {}, None),
        # Only 429 and 503 define a wait; elsewhere the header is ignored.
        (500, {"Retry-After": "120"}, None),
        (200, {"Retry-After": "120"}, None),
    ],
)
def test_classify_retry_after(status: int, headers: dict[str, str], retry_after: float | None) -> None:
    assert classify(status, headers, now=NOW).retry_after == retry_after


def test_parse_retry_after_without_a_value() -> None:
    assert parse_retry_after(None, now=NOW) is None


def test_parse_retry_after_date_without_zone_is_utc() -> None:
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 -0000", now=NOW) == 60.0


def test_delivery_result_defaults() -> None:
    assert DeliveryResult("delivered") == DeliveryResult("delivered", None, None, None)


@pytest.mark.parametrize(
    "url", ["http://hooks.example.com/x", "https://hooks.example.com:8443/x?y=1", "http://127.0.0.1:9/"]
)
def test_scheme_policy_allows_http_and_https(url: str) -> None:
    scheme_policy(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "file:///etc/passwd",
        "gopher://hooks.example.com/",
        "hooks.example.com/x",
        "http:///no-host",
        "http://[::1",
        "",
    ],
)
def test_scheme_policy_refuses_other_urls(url: str) -> None:
    with pytest.raises(EgressDenied):
        scheme_policy(url)


def test_webhooks_package_never_imports_the_http_edge() -> None:
    # A fresh interpreter: the test session itself has fastapi loaded already.
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "import workflows.roots.dlq_worker, workflows.services.webhooks.worker\n"
        "import workflows.adapters.http.delivery, workflows.adapters.dlq, workflows.adapters.http.signing\n"
        "edge = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'mangum'))\n"
        "print(','.join(edge))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root / "layers" / "shared")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == ""
