"""Standard Webhooks signing: the spec's known answer, rotation, tolerance, tampering."""

from __future__ import annotations

import pytest

from workflows.adapters.http.signing import (
    WebhookVerificationError,
    parse_secrets,
    sign,
    signature_headers,
    verify,
)
from workflows.adapters.http.signing_secrets import SigningSecrets, SigningSecretUnavailable

# The example from the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_spec_example() -> None:
    assert sign(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_headers_carry_id_timestamp_and_signature() -> None:
    headers = signature_headers(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY)

    assert headers == {
        "webhook-id": SPEC_MSG_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_raw_secret_is_used_as_utf8_bytes() -> None:
    raw = sign("plain-secret", "msg_1", 1, b"{}")

    assert raw != sign("whsec_cGxhaW4tc2VjcmV0", "msg_2", 1, b"{}")
    # "cGxhaW4tc2VjcmV0" is base64 for "plain-secret": both forms name the same key.
    assert raw == sign("whsec_cGxhaW4tc2VjcmV0", "msg_1", 1, b"{}")


def test_malformed_whsec_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_not*base64", "msg_1", 1, b"{}")


def test_verify_accepts_the_spec_example() -> None:
    headers = signature_headers(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY)

    verify([SPEC_SECRET], headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10)


def test_verify_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in signature_headers("s3cret", "msg_1", 100, b"{}").items()}

    verify(["s3cret"], headers, b"{}", now=100)


def test_verify_accepts_any_secret_during_rotation() -> None:
    headers = signature_headers("old-secret", "msg_1", 100, b"{}")

    verify(["new-secret", "old-secret"], headers, b"{}", now=100)


def test_verify_accepts_any_of_several_signatures_in_the_header() -> None:
    old = sign("old-secret", "msg_1", 100, b"{}")
    new = sign("new-secret", "msg_1", 100, b"{}")
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "100", "webhook-signature": f"{old} {new}"}

    verify(["new-secret"], headers, b"{}", now=100)


def test_verify_refuses_an_unknown_secret() -> None:
    headers = signature_headers("attacker", "msg_1", 100, b"{}")

    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(["s3cret"], headers, b"{}", now=100)


def test_verify_refuses_a_tampered_body() -> None:
    headers = signature_headers("s3cret", "msg_1", 100, b'{"amount": 1}')

    with pytest.raises(WebhookVerificationError):
        verify(["s3cret"], headers, b'{"amount": 1000}', now=100)


def test_verify_refuses_another_message_id() -> None:
    headers = signature_headers("s3cret", "msg_1", 100, b"{}")
    headers["webhook-id"] = "msg_2"

    with pytest.raises(WebhookVerificationError):
        verify(["s3cret"], headers, b"{}", now=100)


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_verify_refuses_timestamps_outside_the_tolerance(skew: int) -> None:
    headers = signature_headers("s3cret", "msg_1", 1000, b"{}")

    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(["s3cret"], headers, b"{}", now=1000 + skew)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_verify_accepts_timestamps_at_the_tolerance_edge(skew: int) -> None:
    headers = signature_headers("s3cret", "msg_1", 1000, b"{}")

    verify(["s3cret"], headers, b"{}", now=1000 + skew)


def test_verify_tolerance_is_configurable() -> None:
    headers = signature_headers("s3cret", "msg_1", 1000, b"{}")

    with pytest.raises(WebhookVerificationError):
        verify(["s3cret"], headers, b"{}", now=1010, tolerance=5)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_refuses_missing_headers(missing: str) -> None:
    headers = signature_headers("s3cret", "msg_1", 100, b"{}")
    del headers[missing]

    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(["s3cret"], headers, b"{}", now=100)


@pytest.mark.parametrize("signature", ["v2,abc", "v1,not base64!", "garbage"])
def test_verify_ignores_unknown_versions_and_malformed_signatures(signature: str) -> None:
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "100", "webhook-signature": signature}

    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(["s3cret"], headers, b"{}", now=100)


def test_verify_refuses_a_non_numeric_timestamp() -> None:
    headers = signature_headers("s3cret", "msg_1", 100, b"{}")
    headers["webhook-timestamp"] = "yesterday"

    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify(["s3cret"], headers, b"{}", now=100)


# ---- several secrets (rotation) -----------------------------------------------------------


def test_several_secrets_give_one_signature_each_newest_first() -> None:
    headers = signature_headers(["new-secret", "old-secret"], "msg_1", 100, b"{}")

    new, old = headers["webhook-signature"].split(" ")
    assert new == sign("new-secret", "msg_1", 100, b"{}")
    assert old == sign("old-secret", "msg_1", 100, b"{}")
    verify(["old-secret"], headers, b"{}", now=100)
    verify(["new-secret"], headers, b"{}", now=100)


def test_parse_secrets_splits_trims_and_checks() -> None:
    assert parse_secrets(" whsec_YWJj , raw,,") == ["whsec_YWJj", "raw"]
    with pytest.raises(ValueError, match="base64"):
        parse_secrets("whsec_not base64!")


def test_signing_secrets_fetch_lazily_and_refuse_garbage() -> None:
    fetched: list[str] = []

    def fetch(arn: str) -> str:
        fetched.append(arn)
        return "whsec_YWJj,whsec_ZGVm"

    secrets = SigningSecrets(inline=None, secret_arn="arn:secret", fetch=fetch)
    assert fetched == []
    assert secrets() == ["whsec_YWJj", "whsec_ZGVm"]
    assert fetched == ["arn:secret"]

    broken = SigningSecrets(inline=None, secret_arn="arn:secret", fetch=lambda arn: "whsec_???")
    with pytest.raises(SigningSecretUnavailable, match="malformed"):
        broken()
    assert SigningSecrets(inline=None)() == []
