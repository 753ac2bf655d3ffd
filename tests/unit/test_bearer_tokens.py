"""Bearer JWTs in multi_user mode with an issuer configured: verified by the API against the
issuer's keys, served by a real OpenID issuer on 127.0.0.1 (discovery document and JWKS), while
X-API-KEY keys keep working."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from mangum import Mangum

from devstack.functions import LambdaContext
from tests.conftest import FakeClock, make_fake
from workflows.api import deps
from workflows.api.app import create_app
from workflows.errors import Unauthenticated
from workflows.roots.parts import Parts

P = "/api/v1/workflows"
AUDIENCE = "workflows-api"


class Issuer:
    """An OpenID issuer on loopback: /.well-known/openid-configuration and /jwks.json."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "key-1"
        self.fetches: list[str] = []
        self.down = False  # answers 503 to everything, as an identity provider in an outage
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches.append(self.path)
                if issuer.down:
                    self.send_error(503)
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks.json"}
                elif self.path == "/jwks.json":
                    body = {"keys": [issuer.public_jwk()]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def claims(self, changes: dict[str, Any] | None = None) -> dict[str, Any]:
        """A valid token's claims with `changes` (a None value removes the claim)."""
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "sub": "jill",
            "tenant_id": "t1",
        }
        body.update(changes or {})
        return {name: value for name, value in body.items() if value is not None}

    def token(self, changes: dict[str, Any] | None = None, *, key: Any = None, **header: Any) -> str:
        signed: str = jwt.encode(
            self.claims(changes),
            key or self.private_key,
            algorithm="RS256",
            headers={"kid": self.kid, **header},
        )
        return signed

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.close()


def _client(parts: Parts) -> TestClient:
    app = create_app()
    app.dependency_overrides[deps.services] = lambda: parts
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def parts(issuer: Issuer, clock: FakeClock) -> Parts:
    return make_fake(clock, auth_mode="multi_user", jwt_issuer=issuer.url, jwt_audience=f"other,{AUDIENCE}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_verified_token_names_the_caller_and_its_roles(issuer: Issuer, parts: Parts) -> None:
    with _client(parts) as client:
        operator = issuer.token({"roles": ["viewer", "operator"]})
        viewer = issuer.token({"roles": "[viewer]"})
        # The DLQ list needs the operator's permission.
        assert client.get(f"{P}/webhooks/dlq", headers=_bearer(operator)).status_code == 200
        assert client.get(f"{P}/webhooks/dlq", headers=_bearer(viewer)).status_code == 403
        # The run is the token's user's, in the token's tenant.
        submitted = client.post(
            f"{P}/runs",
            headers=_bearer(operator),
            json={
                "definition": {"name": "d", "steps": [{"id": "a", "type": "log", "config": {"message": "x"}}]}
            },
        )
        assert submitted.status_code == 202, submitted.text
        run = parts.runs.get("t1", submitted.json()["run_id"])
        assert (run.tenant_id, run.owner_id) == ("t1", "jill")
    # Discovery, then the keys: fetched once for all these requests.
    assert issuer.fetches == ["/.well-known/openid-configuration", "/jwks.json"]


def test_api_keys_keep_working_beside_tokens(issuer: Issuer, parts: Parts) -> None:
    key, _ = parts.api_keys.create("t1", "ada", ["viewer"])
    with _client(parts) as client:
        assert client.get(f"{P}/runs", headers={"X-API-KEY": key}).status_code == 200
        assert (
            client.get(f"{P}/runs", headers=_bearer(issuer.token({"roles": ["viewer"]}))).status_code == 200
        )


def _other_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


REFUSED = {
    "expired": ({"exp": int(time.time()) - 3600}, {}, "expired"),
    "another audience": ({"aud": "someone-else"}, {}, "audience"),
    "another issuer": ({"iss": "https://evil.example"}, {}, "issuer"),
    "no expiry": ({"exp": None}, {}, "exp"),
    "signed by another key": ({}, {"key": "other"}, "signature"),
    "unpublished key id": ({}, {"header": {"kid": "key-9"}}, "does not publish"),
    "tenant outside the pattern": ({"tenant_id": "t1#x"}, {}, "not a valid tenant"),
    "user outside the pattern": ({"sub": "u/1"}, {}, "not a valid user"),
    "no tenant": ({"tenant_id": None}, {}, "lacks"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_token_that_does_not_verify_is_refused(issuer: Issuer, parts: Parts, case: str) -> None:
    changes, options, reason = REFUSED[case]
    token = issuer.token(
        changes, key=_other_key() if options.get("key") else None, **options.get("header", {})
    )
    with _client(parts) as client:
        response = client.get(f"{P}/runs", headers=_bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"]
    assert reason.lower() in response.json()["error"]["message"].lower()


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_symmetric_and_unsigned_tokens_are_refused(issuer: Issuer, parts: Parts, algorithm: str) -> None:
    claims = issuer.claims()
    if algorithm == "HS256":
        # "Signed" with the published key's text as an HMAC secret: the key-confusion forgery
        # (built by hand: PyJWT itself refuses to sign so).
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = ".".join(
            b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "kid": issuer.kid}, claims)
        )
        secret = json.dumps(issuer.public_jwk()).encode()
        token = f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
    else:
        token = jwt.encode(claims, None, algorithm="none")
    with _client(parts) as client:
        response = client.get(f"{P}/runs", headers=_bearer(token))
    assert response.status_code == 401
    assert "not accepted" in response.json()["error"]["message"]


def test_made_up_key_ids_do_not_turn_into_fetches(issuer: Issuer, parts: Parts) -> None:
    with _client(parts) as client:
        assert client.get(f"{P}/runs", headers=_bearer(issuer.token())).status_code == 200
        for _ in range(20):
            forged = issuer.token(kid=uuid.uuid4().hex)
            assert client.get(f"{P}/runs", headers=_bearer(forged)).status_code == 401
    # One discovery and one key set: unknown key ids refresh the set at most once a minute.
    assert len(issuer.fetches) == 2


def test_without_an_issuer_bearer_tokens_are_refused(issuer: Issuer, clock: FakeClock) -> None:
    with _client(make_fake(clock, auth_mode="multi_user")) as client:
        response = client.get(f"{P}/runs", headers=_bearer(issuer.token()))
    assert response.status_code == 401
    assert "JwtIssuer" in response.json()["error"]["message"]
    assert issuer.fetches == []


def test_the_lambda_entry_verifies_a_token(issuer: Issuer, parts: Parts) -> None:
    """Through Mangum with an HTTP API event, as API Gateway invokes the function."""
    from tests.integration.test_api_keys import EVENTS

    app = create_app()
    app.dependency_overrides[deps.services] = lambda: parts
    event = json.loads((EVENTS / "ApiFunction/get_run.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"{P}/runs"
    event["headers"] = {"authorization": f"Bearer {issuer.token({'roles': ['viewer']})}"}
    response = Mangum(app, lifespan="off")(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"]


def test_a_token_whose_algorithm_does_not_suit_its_key_is_refused(issuer: Issuer, parts: Parts) -> None:
    """An ES256 token naming the issuer's RSA key: refused, not a server error."""
    from cryptography.hazmat.primitives.asymmetric import ec

    token = jwt.encode(
        issuer.claims(),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": issuer.kid},
    )
    with _client(parts) as client:
        response = client.get(f"{P}/runs", headers=_bearer(token))
    assert response.status_code == 401, response.text
    assert "does not suit" in response.json()["error"]["message"]


class Ticking:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_issuer_that_is_down_answers_503_and_is_asked_once_a_minute(issuer: Issuer) -> None:
    from workflows.adapters.jwks import JwksTokenVerifier
    from workflows.errors import DependencyUnavailable

    clock = Ticking()
    verifier = JwksTokenVerifier(issuer=issuer.url, audiences=(AUDIENCE,), now=clock)
    issuer.down = True
    for _ in range(5):
        with pytest.raises(DependencyUnavailable):
            verifier.verify(issuer.token())
        clock.now += 5
    # One discovery attempt for all five: the next waits for the minute to pass.
    assert issuer.fetches == ["/.well-known/openid-configuration"]
    issuer.down = False
    clock.now += 60
    assert verifier.verify(issuer.token())["sub"] == "jill"
    assert len(issuer.fetches) == 3  # discovery again, then the keys
    # Down again: the keys in hand keep working; unknown key ids are checked once a minute.
    issuer.down = True
    for _ in range(5):
        assert verifier.verify(issuer.token())["sub"] == "jill"
        with pytest.raises(Unauthenticated):
            verifier.verify(issuer.token(kid=uuid.uuid4().hex))
        clock.now += 5
    assert len(issuer.fetches) == 3
    clock.now += 60
    with pytest.raises(Unauthenticated):
        verifier.verify(issuer.token(kid="rotated"))
    assert len(issuer.fetches) == 4


def test_an_outage_answers_503_through_the_api(issuer: Issuer, parts: Parts) -> None:
    issuer.down = True
    with _client(parts) as client:
        response = client.get(f"{P}/runs", headers=_bearer(issuer.token()))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"]["code"] == "dependency_unavailable"
    assert issuer.url not in response.text  # nothing about the issuer's addresses


@pytest.mark.parametrize(
    "url", ["http://idp.example.com", "ftp://idp.example.com", "https://", "http://10.0.0.1:8080"]
)
def test_keys_are_fetched_over_https_only_beyond_loopback(issuer: Issuer, url: str) -> None:
    from workflows.adapters.jwks import JwksTokenVerifier
    from workflows.errors import DependencyUnavailable

    asked: list[str] = []

    def fetch(address: str) -> dict[str, Any]:
        asked.append(address)
        return {}

    for verifier in (
        JwksTokenVerifier(issuer=url, audiences=(), fetch=fetch),
        JwksTokenVerifier(issuer=issuer.url, audiences=(), jwks_url=url, fetch=fetch),
    ):
        with pytest.raises(DependencyUnavailable):
            verifier.verify(issuer.token())
    assert asked == []  # refused before any request
