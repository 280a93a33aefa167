"""JWT authentication of the HTTP API: a shared secret, a JWKS served on 127.0.0.1, the
development switch, and configurations the app refuses. Auth does not depend on the backend, so
these run on SQLite only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from chathistory import ChatHistory, ConfigurationError
from chathistory.config import Settings
from chathistory.db import create_engine
from chathistory.http import JWTVerifier, create_app
from chathistory.http.problems import HTTPProblem
from tests.fixtures.http import SECRET, asgi_client

ISSUER = "https://issuer.test"
AUDIENCE = "chathistory-api"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": None,
        "jwt_jwks_url": None,
        "jwt_issuer": None,
        "jwt_audience": None,
        "insecure_no_auth": False,
    }
    return Settings(**(values | overrides))


def claims(sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 300, "iss": ISSUER, "aud": AUDIENCE} | extra


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, for what PyJWT refuses to make (alg none, HS256 with a PEM)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return f"{signing_input}."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
async def sqlite_store(sqlite_store_url: str) -> AsyncIterator[ChatHistory]:
    store = ChatHistory(create_engine(sqlite_store_url), owns_engine=True)
    try:
        yield store
    finally:
        await store.close()


async def call(
    store: ChatHistory, config: Settings, path: str, token: str | None, method: str = "GET"
) -> httpx.Response:
    app = create_app(config, store=store)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with asgi_client(app) as http:
        return await http.request(method, path, headers=headers)


def assert_401(response: httpx.Response, *, invalid_token: bool = True) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is invalid_token
    assert response.json()["code"] == "invalid_token"


# -- shared secret (HS256) -------------------------------------------------------------------

HS_CONFIG = {"jwt_secret": SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}


def hs256(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def _without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


REFUSED_HS_TOKENS: list[tuple[str, Any]] = [
    ("garbage", lambda user: "not.a.jwt"),
    ("two parts", lambda user: "abc.def"),
    ("wrong secret", lambda user: hs256(claims(user), key=SECRET + "-other")),
    ("expired", lambda user: hs256(claims(user, exp=int(time.time()) - 120))),
    ("not valid yet", lambda user: hs256(claims(user, nbf=int(time.time()) + 120))),
    ("issued in the future", lambda user: hs256(claims(user, iat=int(time.time()) + 600))),
    ("no exp", lambda user: hs256(_without(claims(user), "exp"))),
    ("no sub", lambda user: hs256(_without(claims(user), "sub"))),
    ("sub not a string", lambda user: hs256(claims(user) | {"sub": 42})),
    ("wrong issuer", lambda user: hs256(claims(user, iss="https://evil.test"))),
    ("no issuer", lambda user: hs256(_without(claims(user), "iss"))),
    ("wrong audience", lambda user: hs256(claims(user, aud="someone-else"))),
    ("no audience", lambda user: hs256(_without(claims(user), "aud"))),
    ("alg none", lambda user: hand_made({"alg": "none", "typ": "JWT"}, claims(user), None)),
    ("alg None", lambda user: hand_made({"alg": "None", "typ": "JWT"}, claims(user), None)),
    ("HS512", lambda user: hs256(claims(user), key=SECRET + SECRET, algorithm="HS512")),
    ("signature stripped", lambda user: hs256(claims(user)).rsplit(".", 1)[0] + "."),
    ("tampered payload", lambda user: _tamper(hs256(claims(user)), user)),
]


def _tamper(token: str, user: str) -> str:
    header, _payload, signature = token.split(".")
    forged = b64(json.dumps(claims(user, exp=int(time.time()) + 10**6)).encode())
    return f"{header}.{forged}.{signature}"


async def test_valid_hs256_token(sqlite_store: ChatHistory, user: str) -> None:
    response = await call(
        sqlite_store, settings(**HS_CONFIG), f"/api/{user}/conversations", hs256(claims(user))
    )
    assert response.status_code == 200
    assert response.json()["data"] == []


async def test_expired_within_leeway_is_accepted(sqlite_store: ChatHistory, user: str) -> None:
    token = hs256(claims(user, exp=int(time.time()) - 5, nbf=int(time.time()) + 5))
    response = await call(sqlite_store, settings(**HS_CONFIG), f"/api/{user}/conversations", token)
    assert response.status_code == 200


async def test_missing_or_non_bearer_header_is_401(sqlite_store: ChatHistory, user: str) -> None:
    config = settings(**HS_CONFIG)
    assert_401(
        await call(sqlite_store, config, f"/api/{user}/conversations", None), invalid_token=False
    )
    app = create_app(config, store=sqlite_store)
    async with asgi_client(app) as http:
        for value in ("Basic dXNlcjpwdw==", "Bearer", "Bearer ", hs256(claims(user))):
            response = await http.get(
                f"/api/{user}/conversations", headers={"Authorization": value}
            )
            assert_401(response, invalid_token=False)


@pytest.mark.parametrize(
    "make_token", [pytest.param(make, id=name) for name, make in REFUSED_HS_TOKENS]
)
async def test_refused_hs256_tokens(sqlite_store: ChatHistory, user: str, make_token: Any) -> None:
    token = make_token(user)
    app = create_app(settings(**HS_CONFIG), store=sqlite_store)
    async with asgi_client(app) as http:
        for method, path in (
            ("GET", f"/api/{user}/conversations"),
            ("POST", f"/api/{user}/conversations"),
            ("DELETE", f"/api/{user}"),
        ):
            response = await http.request(
                method, path, headers={"Authorization": f"Bearer {token}"}
            )
            assert_401(response)
    assert (await sqlite_store.list_conversations(user)).data == []


async def test_token_of_another_user_is_403(
    sqlite_store: ChatHistory, user: str, other_user: str
) -> None:
    conv = await sqlite_store.create_conversation(other_user, title="theirs")
    token = hs256(claims(user))
    config = settings(**HS_CONFIG)
    for method, path in (
        ("GET", f"/api/{other_user}/conversations"),
        ("GET", f"/api/{other_user}/conversations/{conv.id}"),
        ("GET", f"/api/{other_user}/conversations/{conv.id}/messages"),
        ("POST", f"/api/{other_user}/conversations"),
        ("DELETE", f"/api/{other_user}/conversations/{conv.id}"),
        ("DELETE", f"/api/{other_user}"),
    ):
        response = await call(sqlite_store, config, path, token, method)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"
    assert (await sqlite_store.get_conversation(other_user, conv.id)).title == "theirs"


async def test_issuer_and_audience_are_optional(sqlite_store: ChatHistory, user: str) -> None:
    plain = {"sub": user, "exp": int(time.time()) + 60}
    config = settings(jwt_secret=SECRET)
    response = await call(sqlite_store, config, f"/api/{user}/conversations", hs256(plain))
    assert response.status_code == 200
    # A token naming an audience the server does not expect is still refused.
    assert_401(
        await call(sqlite_store, config, f"/api/{user}/conversations", hs256(plain | {"aud": "x"}))
    )


# -- JWKS (EdDSA, ES256, RS256) on a local server ---------------------------------------------


class Keys:
    def __init__(self) -> None:
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ed_rotated = ed25519.Ed25519PrivateKey.generate()

    def jwks(self, *, rotated: bool = False) -> dict[str, Any]:
        keys = [
            OKPAlgorithm.to_jwk(self.ed.public_key(), as_dict=True) | {"kid": "ed", "alg": "EdDSA"},
            ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True) | {"kid": "ec", "use": "sig"},
            RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True) | {"kid": "rsa"},
            # A symmetric key published in a key set must never verify anything.
            {"kty": "oct", "kid": "oct", "k": b64(SECRET.encode()), "alg": "HS256"},
        ]
        if rotated:
            keys.append(
                OKPAlgorithm.to_jwk(self.ed_rotated.public_key(), as_dict=True) | {"kid": "ed2"}
            )
        return {"keys": keys}

    def rsa_public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 that counts its fetches; its key set can be swapped."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.fetches += 1
                body = json.dumps(served.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def jwks(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer(keys.jwks())
    try:
        yield server
    finally:
        server.close()


def jwks_config(server: JwksServer, **extra: Any) -> Settings:
    return settings(jwt_jwks_url=server.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **extra)


def signed(keys: Keys, algorithm: str, kid: str | None, payload: dict[str, Any]) -> str:
    key: Any = {"EdDSA": keys.ed, "ES256": keys.ec, "RS256": keys.rsa}[algorithm]
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


@pytest.mark.parametrize(("algorithm", "kid"), [("EdDSA", "ed"), ("ES256", "ec"), ("RS256", "rsa")])
async def test_valid_jwks_tokens(
    sqlite_store: ChatHistory, jwks: JwksServer, keys: Keys, user: str, algorithm: str, kid: str
) -> None:
    app = create_app(jwks_config(jwks), store=sqlite_store)
    token = signed(keys, algorithm, kid, claims(user))
    headers = {"Authorization": f"Bearer {token}"}
    async with asgi_client(app) as http:
        created = await http.post(
            f"/api/{user}/conversations", json={"title": "t"}, headers=headers
        )
        assert created.status_code == 201, created.text
        listed = await http.get(f"/api/{user}/conversations", headers=headers)
        assert [c["id"] for c in listed.json()["data"]] == [created.json()["id"]]
        for _ in range(5):
            assert (await http.get(f"/api/{user}/conversations", headers=headers)).is_success
    assert jwks.fetches == 1  # the key set is cached


async def test_refused_jwks_tokens(
    sqlite_store: ChatHistory, jwks: JwksServer, keys: Keys, user: str
) -> None:
    pem = keys.rsa_public_pem()
    refused = {
        # Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
        "HS256 with the RSA public key": hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": "rsa"}, claims(user), pem
        ),
        "HS256 with the published oct key": hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": "oct"}, claims(user), SECRET.encode()
        ),
        "alg none": hand_made({"alg": "none", "kid": "ed"}, claims(user), None),
        "EdDSA key named for RS256": hand_made(
            {"alg": "RS256", "kid": "ed"}, claims(user), b"irrelevant"
        ),
        "ES256 token on the RSA kid": signed(keys, "ES256", "rsa", claims(user)),
        "unknown kid": signed(keys, "EdDSA", "nobody", claims(user)),
        "no kid": signed(keys, "EdDSA", None, claims(user)),
        "expired": signed(keys, "EdDSA", "ed", claims(user, exp=int(time.time()) - 120)),
        "not valid yet": signed(keys, "EdDSA", "ed", claims(user, nbf=int(time.time()) + 120)),
        "wrong issuer": signed(keys, "EdDSA", "ed", claims(user, iss="https://evil.test")),
        "wrong audience": signed(keys, "ES256", "ec", claims(user, aud="other")),
        "signed by another key": jwt.encode(
            claims(user),
            ed25519.Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": "ed"},
        ),
    }
    for name, token in refused.items():
        response = await call(sqlite_store, jwks_config(jwks), f"/api/{user}/conversations", token)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer ")

    # With a secret configured as well, an HS256 token made with the public key still fails.
    both = jwks_config(jwks, jwt_secret=SECRET)
    confused = hand_made({"alg": "HS256", "typ": "JWT"}, claims(user), pem)
    assert_401(await call(sqlite_store, both, f"/api/{user}/conversations", confused))
    good = hs256(claims(user))
    assert (await call(sqlite_store, both, f"/api/{user}/conversations", good)).status_code == 200


async def test_token_for_another_user_via_jwks_is_403(
    sqlite_store: ChatHistory, jwks: JwksServer, keys: Keys, user: str, other_user: str
) -> None:
    token = signed(keys, "EdDSA", "ed", claims(user))
    response = await call(
        sqlite_store, jwks_config(jwks), f"/api/{other_user}/conversations", token
    )
    assert response.status_code == 403


async def test_new_kid_is_fetched_at_once_and_an_unknown_one_once_per_cooldown(
    jwks: JwksServer, keys: Keys, user: str
) -> None:
    current = signed(keys, "EdDSA", "ed", claims(user))
    rotated = jwt.encode(claims(user), keys.ed_rotated, algorithm="EdDSA", headers={"kid": "ed2"})
    unknown = jwt.encode(
        claims(user),
        ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "nobody"},
    )
    verifier = JWTVerifier(
        jwks_url=jwks.url, issuer=ISSUER, audience=AUDIENCE, jwks_cooldown_seconds=3600
    )
    assert (await verifier.verify(current)).subject == user
    assert jwks.fetches == 1
    for _ in range(3):  # an unknown kid is looked for once, then refused without refetching
        with pytest.raises(HTTPProblem) as refused:
            await verifier.verify(unknown)
        assert refused.value.status == 401
    assert jwks.fetches == 2

    jwks.document = keys.jwks(rotated=True)  # the issuer starts signing with a new key
    principal = await verifier.verify(rotated)  # its first token verifies: one refetch
    assert principal.subject == user
    assert principal.claims["aud"] == AUDIENCE
    assert jwks.fetches == 3
    assert (await verifier.verify(rotated)).subject == user
    assert (await verifier.verify(current)).subject == user
    assert jwks.fetches == 3


async def test_unreachable_jwks_is_503(sqlite_store: ChatHistory, keys: Keys, user: str) -> None:
    dead = JwksServer({})
    dead.close()  # nothing listens there any more
    config = settings(jwt_jwks_url=dead.url)
    response = await call(
        sqlite_store,
        config,
        f"/api/{user}/conversations",
        signed(keys, "EdDSA", "ed", claims(user)),
    )
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["code"] == "unavailable"


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "no authentication is configured"),
        ({"jwt_secret": "too-short"}, "at least 32 bytes"),
        ({"jwt_jwks_url": "file:///etc/passwd"}, "http(s)"),
        ({"insecure_no_auth": True, "jwt_secret": SECRET}, "turn one of them off"),
    ],
)
def test_app_refuses_unusable_auth_config(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app(settings(**overrides))


def test_empty_environment_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATHISTORY_JWT_SECRET", "")
    monkeypatch.setenv("CHATHISTORY_JWT_ISSUER", "  ")
    loaded = Settings()
    assert loaded.jwt_secret is None
    assert loaded.jwt_issuer is None
    monkeypatch.setenv("CHATHISTORY_JWT_SECRET", SECRET)
    assert Settings().jwt_secret is not None
    assert SECRET not in repr(Settings())  # the secret stays out of logs


async def test_insecure_switch_serves_without_auth_and_warns(
    sqlite_store: ChatHistory, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings(insecure_no_auth=True), store=sqlite_store)
    with caplog.at_level(logging.WARNING, logger="chathistory"):
        async with (
            app.router.lifespan_context(app),
            asgi_client(app) as http,
        ):
            created = await http.post(f"/api/{user}/conversations")
            assert created.status_code == 201
            listed = await http.get(f"/api/{user}/conversations")
            assert listed.json()["data"][0]["id"] == created.json()["id"]
    assert "AUTHENTICATION IS OFF" in caplog.text
    document = app.openapi()
    assert "security" not in document["paths"]["/api/{user_id}/conversations"]["get"]
    assert uuid.UUID(created.json()["id"])
