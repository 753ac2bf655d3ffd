"""`{{ secrets.NAME }}`: a secret named in a template, resolved only when the request is sent.

Rendering a template never sees a secret's value. `secrets.NAME` renders to a placeholder,
`[[secret:<nonce>:NAME]]`, whose nonce is drawn anew for each step execution, so text that
comes from inputs or outputs cannot forge one. The value replaces the placeholder in the URL,
headers and body only when the webhook is sent (and again when the DLQ worker retries it, from
the stored placeholder form), escaped for where it lands, and every error text about that
request is scrubbed of it and of its usual transformations, so the value is never in a run's
events, outputs, DLQ rows or logs (docs/steps.md, "Secrets").

Where a value may land:
- a URL's path, query or fragment, percent-encoded (never its scheme, user info, host or port:
  a secret must not choose where the request goes);
- a header value, as it is, unless it holds a line break, NUL or another control character;
- the JSON body, as the content of the JSON string the placeholder sits in.
A secret stored with `allowed_hosts` goes only to those hosts: the deliverer checks every hop,
redirects included, before it connects (`host_refusal`).
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets as random_tokens
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, quote_plus

from workflows.domain.hosts import HostPattern, host_matches
from workflows.errors import ValidationFailed

SECRET_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,127}$"  # noqa: S105 - a pattern, not a secret
_NAME = re.compile(SECRET_NAME_PATTERN)
_PLACEHOLDER = re.compile(r"\[\[secret:([0-9a-f]{16}):([A-Za-z][A-Za-z0-9_]{0,127})\]\]")
REDACTED = "***"
# A secret's value, at most (SSM Parameter Store's standard tier).
MAX_SECRET_BYTES = 4096
# A secret's allowed hosts are stored beside its value in a field of at most 1024 characters.
MAX_ALLOWED_HOSTS = 20
MAX_ALLOWED_HOSTS_CHARS = 900

SECRET_NOT_ALLOWED_HERE = "secret_not_allowed_here"  # noqa: S105 - an error code
SECRET_HOST_NOT_ALLOWED = "secret_host_not_allowed"  # noqa: S105 - an error code

# Everything before the end of a URL's authority: a placeholder there would pick the scheme,
# user info, host or port (the same split httpx makes: the authority ends at / ? or #).
_URL_HEAD = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
# What a header value may not hold: CR, LF, NUL and the other controls but TAB (RFC 9110 5.5).
_HEADER_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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


class SecretRefused(Exception):
    """A secret's value may not go where the request would put it; retrying cannot change that.

    `code` is SECRET_NOT_ALLOWED_HERE (a URL's scheme, host or port, a header value it would
    break) or SECRET_HOST_NOT_ALLOWED (a host outside the secret's allowed hosts)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Secret:
    value: str
    # None: any host the egress policy allows; else only these (host patterns, domain.hosts).
    allowed_hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown of a secret: never its value."""

    name: str
    allowed_hosts: tuple[str, ...] | None = None


def check_allowed_hosts(hosts: Sequence[str], *, field: str = "allowed_hosts") -> tuple[str, ...]:
    """The hosts a secret may be sent to, in their canonical spelling; ValidationFailed naming
    each entry that is not a host pattern (an exact host, `*.example.com`, an IP address)."""
    details: list[dict[str, str]] = []
    patterns: list[str] = []
    if not hosts:
        details.append({"field": field, "message": "name at least one host, or leave the field out"})
    if len(hosts) > MAX_ALLOWED_HOSTS:
        details.append({"field": field, "message": f"{len(hosts)} hosts, limit {MAX_ALLOWED_HOSTS}"})
    for index, raw in enumerate(hosts):
        try:
            pattern = HostPattern.parse(raw)
        except ValueError:
            details.append(
                {"field": f"{field}[{index}]", "message": "not a host, *.domain wildcard or IP address"}
            )
            continue
        if pattern.text not in patterns:
            patterns.append(pattern.text)
    if not details and len(",".join(patterns)) > MAX_ALLOWED_HOSTS_CHARS:
        message = f"longer than {MAX_ALLOWED_HOSTS_CHARS} characters in all"
        details.append({"field": field, "message": message})
    if details:
        raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details)
    return tuple(patterns)


# A secret limited to some hosts is stored as this marker, the limits as JSON, a line break and
# the value as it is (so a value is never escaped and grows by the header only); one without
# limits is stored as its bare value, as every value was before limits existed.
_STORED_MARKER = "#workflows-secret:v1 "


def pack(secret: Secret) -> str:
    """The text stored for `secret` (SecretStore adapters)."""
    if secret.allowed_hosts is None and not secret.value.startswith(_STORED_MARKER):
        return secret.value
    header = json.dumps({"allowed_hosts": secret.allowed_hosts}, separators=(",", ":"))
    return f"{_STORED_MARKER}{header}\n{secret.value}"


def unpack(stored: str) -> Secret:
    """The secret `pack` stored; a bare value has no host limits."""
    if not stored.startswith(_STORED_MARKER):
        return Secret(stored)
    header, _, value = stored[len(_STORED_MARKER) :].partition("\n")
    try:
        hosts = json.loads(header)["allowed_hosts"]
        return Secret(value, None if hosts is None else tuple(str(host) for host in hosts))
    except (ValueError, TypeError, KeyError):
        return Secret(value, ())  # limits that cannot be read allow no host


def check_stored_size(secret: Secret, *, field: str = "value") -> None:
    """ValidationFailed unless the stored form fits the store (MAX_SECRET_BYTES)."""
    size = len(pack(secret).encode())
    if size > MAX_SECRET_BYTES:
        message = f"{size} bytes with its allowed_hosts, limit {MAX_SECRET_BYTES}"
        raise ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def host_refusal(limits: Mapping[str, Sequence[str]], host: str) -> str | None:
    """Why a request carrying secrets limited to `limits` (name -> allowed hosts) may not go to
    `host`, or None when every one of them allows it."""
    for name in sorted(limits):
        allowed = limits[name]
        if not host_matches(_patterns(tuple(allowed)), host):
            return f"secret '{name}' may not be sent to {host} (allowed: {', '.join(allowed)})"
    return None


@lru_cache(maxsize=256)
def _patterns(hosts: tuple[str, ...]) -> tuple[HostPattern, ...]:
    parsed = []
    for host in hosts:
        try:
            parsed.append(HostPattern.parse(host))
        except ValueError:
            continue  # a stored entry that no longer parses allows nothing
    return tuple(parsed)


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


@dataclass(frozen=True)
class ResolvedRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    # The values put in: every error text about this request is scrubbed of them.
    values: list[str] = field(default_factory=list)
    # name -> hosts, for each secret put in that may go only to those hosts.
    allowed_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)


def resolve_request(
    lookup: Callable[[str, str], Secret] | None,
    tenant_id: str,
    nonce: str | None,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
) -> ResolvedRequest:
    """The request as it is sent. Without a nonce (nothing referenced a secret) it is unchanged.

    `body` is JSON text whose placeholders all sit inside JSON strings (json.dumps of the
    rendered body puts them nowhere else). SecretUnavailable when a secret cannot be read;
    SecretRefused when a value may not go where its placeholder is."""
    text = body.decode()
    if nonce is None or lookup is None:
        return ResolvedRequest(url, dict(headers), body)
    used = names_in(url, nonce) | names_in(text, nonce)
    for value in headers.values():
        used |= names_in(value, nonce)
    if not used:
        return ResolvedRequest(url, dict(headers), body)
    secrets = {name: lookup(tenant_id, name) for name in sorted(used)}
    values = {name: secret.value for name, secret in secrets.items()}

    def in_header(header: str) -> Callable[[str], str]:
        def value(name: str) -> str:
            if _HEADER_FORBIDDEN.search(values[name]):
                raise SecretRefused(
                    SECRET_NOT_ALLOWED_HERE,
                    f"secret '{name}' holds a line break or control character and cannot be sent"
                    f" in header '{header}'",
                )
            return values[name]

        return value

    def in_json_string(name: str) -> str:
        return json.dumps(values[name])[1:-1]

    return ResolvedRequest(
        url=_put_in_url(url, nonce, values),
        headers={name: substitute(value, nonce, in_header(name)) for name, value in headers.items()},
        body=substitute(text, nonce, in_json_string).encode(),
        values=list(values.values()),
        allowed_hosts={
            name: secret.allowed_hosts for name, secret in secrets.items() if secret.allowed_hosts is not None
        },
    )


def _put_in_url(url: str, nonce: str, values: Mapping[str, str]) -> str:
    """The URL with each value percent-encoded where its placeholder is: in the path, query or
    fragment; one in the scheme, user info, host or port is refused."""
    # Placeholders masked with letters, so their brackets and colons split nothing.
    masked = _PLACEHOLDER.sub(lambda m: "x" * len(m.group(0)), url)
    head = _URL_HEAD.match(masked)
    head_end = head.end() if head is not None else len(url)

    def value(match: re.Match[str]) -> str:
        if match.group(1) != nonce:
            return match.group(0)
        name = match.group(2)
        if match.start() < head_end:
            raise SecretRefused(
                SECRET_NOT_ALLOWED_HERE,
                f"secret '{name}' may be used in a URL's path or query only, not in its scheme,"
                " user info, host or port",
            )
        return quote(values[name], safe="")

    return _PLACEHOLDER.sub(value, url)


# ---- scrubbing echoes of a value ---------------------------------------------------------

# A run of at least this many characters of a value (after the normalisation below) is
# redacted wherever it appears: a receiver's echo may be cut short or cut up.
MIN_ECHO_CHARS = 8


def scrub(text: str | None, values: Iterable[str]) -> str | None:
    """`text` with every secret value in it, and every echo of one, replaced by ***.

    An echo is the value as a receiver or library may have altered it: JSON-escaped (once or
    twice), percent-encoded (quote, quote_plus), HTML-escaped, base64-encoded, upper- or
    lower-cased, with its whitespace collapsed or removed, or cut short. Text and values are
    compared after case folding and dropping whitespace, and any run of MIN_ECHO_CHARS
    characters of a value's form found in the text is redacted (a shorter value: all of it).
    Values are at most MAX_SECRET_BYTES, so the work is linear in the text's length.
    """
    if text is None:
        return None
    wanted = [value for value in values if value and _fold(value)]
    if not wanted:
        return text
    folded, index = _fold_indexed(text)
    alnum, alnum_index = _alnum_indexed(folded, index)
    marks = bytearray(len(text))
    for value in wanted:
        grams, alnum_grams = _grams(value)
        _mark(folded, index, grams, marks)
        _mark(alnum, alnum_index, alnum_grams, marks)
    if not any(marks):
        return text
    out: list[str] = []
    position = 0
    while position < len(text):
        if marks[position]:
            end = position
            while end < len(text) and marks[end]:
                end += 1
            out.append(REDACTED)
            position = end
        else:
            out.append(text[position])
            position += 1
    return "".join(out)


def _fold(text: str) -> str:
    return "".join(ch.casefold() for ch in text if not ch.isspace())


def _fold_indexed(text: str) -> tuple[str, list[int]]:
    """The folded text, and for each of its characters the index it came from in `text`."""
    out: list[str] = []
    index: list[int] = []
    for position, ch in enumerate(text):
        if ch.isspace():
            continue
        folded = ch.casefold()
        out.append(folded)
        index.extend([position] * len(folded))
    return "".join(out), index


def _alnum_indexed(folded: str, index: list[int]) -> tuple[str, list[int]]:
    keep = [i for i, ch in enumerate(folded) if ch.isalnum()]
    return "".join(folded[i] for i in keep), [index[i] for i in keep]


def _forms(value: str) -> set[str]:
    """The value as it may come back: as sent, escaped, encoded."""
    json_once = json.dumps(value)[1:-1]
    forms = {
        value,
        json_once,
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(json_once)[1:-1],
        repr(value)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        html.escape(value),
        html.escape(value, quote=False),
    }
    raw = value.encode()
    for offset in range(3):
        # base64 of the value wherever it starts in the encoded text: skip the characters
        # that also depend on the bytes before it and the padding after it.
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        inner = encoded[4 if offset else 0 :]
        inner = inner[:-3]
        if len(inner) >= MIN_ECHO_CHARS:  # a shorter one would match too much unrelated text
            forms.add(inner)
            forms.add(inner.replace("+", "-").replace("/", "_"))
    return {form for form in forms if form}


@lru_cache(maxsize=64)
def _grams(value: str) -> tuple[dict[int, frozenset[str]], dict[int, frozenset[str]]]:
    """The runs to look for: of each folded form, and of the value's letters and digits alone
    (an echo escaping its punctuation some other way)."""
    grams: dict[int, set[str]] = {}
    for form in _forms(value):
        folded = _fold(form)
        if not folded:
            continue
        size = min(MIN_ECHO_CHARS, len(folded))
        grams.setdefault(size, set()).update(folded[i : i + size] for i in range(len(folded) - size + 1))
    alnum = "".join(ch for ch in _fold(value) if ch.isalnum())
    alnum_grams: dict[int, set[str]] = {}
    if len(alnum) >= MIN_ECHO_CHARS:
        alnum_grams[MIN_ECHO_CHARS] = {
            alnum[i : i + MIN_ECHO_CHARS] for i in range(len(alnum) - MIN_ECHO_CHARS + 1)
        }
    return (
        {size: frozenset(bag) for size, bag in grams.items()},
        {size: frozenset(bag) for size, bag in alnum_grams.items()},
    )


def _mark(folded: str, index: list[int], grams: Mapping[int, frozenset[str]], marks: bytearray) -> None:
    for size, bag in grams.items():
        for start in range(len(folded) - size + 1):
            if folded[start : start + size] in bag:
                first, last = index[start], index[start + size - 1]
                marks[first : last + 1] = b"\x01" * (last - first + 1)
