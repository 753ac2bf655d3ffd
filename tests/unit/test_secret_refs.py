"""Secret values: escaped for where they land, kept to their hosts, scrubbed from every echo."""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import quote, quote_plus, unquote

import pytest

from workflows.domain.secret_refs import (
    MAX_SECRET_BYTES,
    SECRET_NOT_ALLOWED_HERE,
    Secret,
    SecretRefused,
    check_allowed_hosts,
    check_stored_size,
    host_refusal,
    pack,
    resolve_request,
    scrub,
    unpack,
)
from workflows.errors import ValidationFailed

NONCE = "0123456789abcdef"
VALUE = 'Tok3n "quoted" \\ back\\slash  and spaces-7f1c9e'


def ref(name: str) -> str:
    return f"[[secret:{NONCE}:{name}]]"


def lookup_of(**secrets: Secret) -> object:
    return lambda tenant_id, name: secrets[name]


def resolve(url: str, headers: dict[str, str] | None = None, body: object = None, **secrets: Secret):  # type: ignore[no-untyped-def]
    payload = json.dumps(body, separators=(",", ":")).encode()
    return resolve_request(lookup_of(**secrets), "t1", NONCE, url, headers or {}, payload)  # type: ignore[arg-type]


# ---- where a value lands ------------------------------------------------------------------


def test_a_value_with_quotes_and_backslashes_stays_valid_json_in_the_body() -> None:
    request = resolve("https://h.example/x", body={"key": ref("T"), "n": [f"a{ref('T')}b"]}, T=Secret(VALUE))
    assert json.loads(request.body) == {"key": VALUE, "n": [f"a{VALUE}b"]}


def test_a_value_in_the_path_or_query_is_percent_encoded() -> None:
    request = resolve(f"https://h.example/p/{ref('T')}?q={ref('T')}&x=1", T=Secret("a/b?c=d&e f"))
    path_and_query = request.url.removeprefix("https://h.example")
    assert path_and_query == "/p/a%2Fb%3Fc%3Dd%26e%20f?q=a%2Fb%3Fc%3Dd%26e%20f&x=1"
    assert unquote(path_and_query.split("?q=")[1].split("&")[0]) == "a/b?c=d&e f"


@pytest.mark.parametrize(
    "url",
    [
        f"https://{ref('T')}/x",  # the host
        f"https://h.example:{ref('T')}/x",  # the port
        f"https://{ref('T')}@h.example/x",  # the user info
        f"{ref('T')}://h.example/x",  # the scheme
        f"{ref('T')}",  # the whole URL
        f"https://h.{ref('T')}.example/x",  # part of the host
    ],
)
def test_a_value_may_not_pick_where_the_request_goes(url: str) -> None:
    with pytest.raises(SecretRefused) as refused:
        resolve(url, T=Secret("evil.example"))
    assert refused.value.code == SECRET_NOT_ALLOWED_HERE
    assert "'T'" in refused.value.message


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\0b", "a\x1bb"])
def test_a_value_with_a_line_break_or_control_is_refused_in_a_header(value: str) -> None:
    with pytest.raises(SecretRefused) as refused:
        resolve("https://h.example/x", {"Authorization": f"Bearer {ref('T')}"}, T=Secret(value))
    assert refused.value.code == SECRET_NOT_ALLOWED_HERE
    assert "Authorization" in refused.value.message
    assert value not in refused.value.message


def test_a_header_value_is_put_in_as_it_is() -> None:
    request = resolve("https://h.example/x", {"X-Api-Key": ref("T")}, T=Secret('a"b\\c d\te'))
    assert request.headers == {"X-Api-Key": 'a"b\\c d\te'}


def test_the_request_names_the_host_limits_of_the_secrets_it_carries() -> None:
    request = resolve(
        "https://h.example/x",
        {"A": ref("LIMITED"), "B": ref("FREE")},
        LIMITED=Secret("v1", ("h.example",)),
        FREE=Secret("v2"),
    )
    assert request.allowed_hosts == {"LIMITED": ("h.example",)}
    assert sorted(request.values) == ["v1", "v2"]


# ---- allowed hosts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("API.Example.com", True),
        ("deep.hooks.example.org", True),
        ("example.org", False),  # a wildcard never covers the domain itself
        ("api.example.com.evil.test", False),
        ("127.0.0.1", True),
        ("[::1]", False),
        ("evil.test", False),
    ],
)
def test_a_host_is_allowed_only_when_every_carried_secret_allows_it(host: str, allowed: bool) -> None:
    limits = {"A": ("api.example.com", "*.example.org", "127.0.0.1"), "B": ("*.com", "*.org", "127.0.0.1")}
    assert (host_refusal(limits, host) is None) is allowed


def test_a_refusal_names_the_secret_and_its_hosts_not_its_value() -> None:
    reason = host_refusal({"API_TOKEN": ("hooks.example.com",)}, "evil.test")
    assert reason == "secret 'API_TOKEN' may not be sent to evil.test (allowed: hooks.example.com)"


def test_allowed_hosts_are_canonical_and_each_bad_entry_is_named() -> None:
    assert check_allowed_hosts(["Hooks.Example.com.", "*.example.org", "[::1]", "hooks.example.com"]) == (
        "hooks.example.com",
        "*.example.org",
        "::1",
    )
    with pytest.raises(ValidationFailed) as refused:
        check_allowed_hosts(["ok.example", "https://x.example/", "*", "bad host"])
    assert [d["field"] for d in refused.value.details] == [
        "allowed_hosts[1]",
        "allowed_hosts[2]",
        "allowed_hosts[3]",
    ]


def test_an_empty_list_of_allowed_hosts_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        check_allowed_hosts([])


# ---- stored form --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        Secret("plain"),
        Secret("line\nbreaks\nand {json}", ("a.example", "*.b.example")),
        Secret("#workflows-secret:v1 looks like a header\nbut is a value"),
    ],
)
def test_a_stored_secret_reads_back_as_it_was_put(secret: Secret) -> None:
    assert unpack(pack(secret)) == secret


def test_a_value_stored_before_host_limits_reads_as_unlimited() -> None:
    assert pack(Secret("old-value")) == "old-value"
    assert unpack("old-value") == Secret("old-value")


def test_limits_that_cannot_be_read_allow_no_host() -> None:
    secret = unpack("#workflows-secret:v1 {not json\nvalue")
    assert secret == Secret("value", ())
    assert host_refusal({"T": secret.allowed_hosts or ()}, "any.example") is not None


def test_a_value_and_its_hosts_must_fit_the_store_together() -> None:
    check_stored_size(Secret("v" * MAX_SECRET_BYTES))
    with pytest.raises(ValidationFailed) as refused:
        check_stored_size(Secret("v" * (MAX_SECRET_BYTES - 10), ("hooks.example.com",)))
    assert refused.value.details[0]["field"] == "value"


# ---- scrubbing ------------------------------------------------------------------------------

ECHOES = {
    "exact": VALUE,
    "json": json.dumps(VALUE),
    "json twice": json.dumps(json.dumps({"key": VALUE})),
    "quote": quote(VALUE, safe=""),
    "quote_plus": quote_plus(VALUE),
    "whitespace collapsed": " ".join(VALUE.split()),
    "whitespace removed": "".join(VALUE.split()),
    "upper case": VALUE.upper(),
    "html": html.escape(VALUE),
    "base64": base64.b64encode(VALUE.encode()).decode(),
    "base64 of a body holding it": base64.b64encode(json.dumps({"k": VALUE}).encode()).decode(),
    "truncated": VALUE[:12],
    "cut at both ends": VALUE[5:30],
    "line-wrapped": VALUE[:20] + "\n  " + VALUE[20:],
}


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
def test_an_altered_echo_of_a_value_is_scrubbed(echo: str) -> None:
    text = f"HTTP 400: invalid request {{received: {echo}}} end"
    scrubbed = scrub(text, [VALUE]) or ""
    assert scrubbed.startswith("HTTP 400: invalid request")
    assert scrubbed.endswith("end")
    assert "***" in scrubbed
    for form in (VALUE, VALUE[:8], "Tok3n", "7f1c9e"):
        assert form.casefold() not in scrubbed.casefold()


def test_text_without_the_value_is_unchanged() -> None:
    text = "HTTP 503: Service Unavailable, retry in 30 seconds"
    assert scrub(text, [VALUE, "another-secret-value"]) == text


def test_a_short_value_is_scrubbed_only_whole() -> None:
    assert scrub("key=abc, abd, ABC", ["abc"]) == "key=***, abd, ***"


def test_scrubbing_a_long_text_for_the_largest_value_stays_quick() -> None:
    # Bounded work: a 64 KiB text against a 4 KiB value is one pass of the text per form.
    value = "".join(chr(0x41 + (i * 7) % 26) for i in range(MAX_SECRET_BYTES))
    text = "x" * 65536 + value[1000:1100]
    assert scrub(text, [value]) == "x" * 65536 + "***"
