"""JWKS against a real identity provider's shapes: Better Auth's JWT plugin (Ed25519 keys with a
random kid, tokens whose ``iss`` and ``aud`` are both the app's origin, 15 minutes long) served at
``/api/auth/jwks`` on 127.0.0.1. Key rotation, an identity provider that is still starting or
down, and what a 401 for a wrong ``iss`` / ``aud`` says.

Time in the JWKS cache is a fake clock (``chathistory.http.auth.time`` swapped); the tests wait
for the server's hits with a condition, never with a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
import secrets
import string
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import chathistory.http.auth as auth_module
from chathistory import ChatHistory
from chathistory.config import Settings
from chathistory.db import create_engine
from chathistory.http import JWTVerifier, create_app
from chathistory.http.problems import HTTPProblem
from tests.fixtures.http import asgi_client

ORIGIN: Final = "http://localhost:3000"
CACHE_SECONDS: Final = 300.0
DROP: Final = object()  # a claim value meaning: leave the claim out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def random_kid() -> str:  # Better Auth's ids: 32 random letters and digits
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def ed25519_token(key: ed25519.Ed25519PrivateKey, kid: str, payload: dict[str, Any]) -> str:
    """A compact JWS as jose's ``SignJWT`` makes it for Better Auth: header ``{alg, kid}``."""
    header = json.dumps({"alg": "EdDSA", "kid": kid}, separators=(",", ":")).encode()
    body = json.dumps(payload, separators=(",", ":")).encode()
    signing_input = f"{b64(header)}.{b64(body)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


class BetterAuth:
    """Better Auth's JWT plugin as a resource server sees it: ``GET /api/auth/jwks`` and tokens.

    The endpoint counts its hits (``wait_for_hits``). While ``up`` is clear it fails as
    ``failure`` says: ``503``, ``disconnect`` (closes without answering) or ``html`` (a 200 page
    that is not JSON, as a dev server's error overlay). While ``gate`` is clear every request is
    held (``next dev`` compiling the route) until it is set.
    """

    def __init__(self, failure: str = "503") -> None:
        self.keys: dict[str, ed25519.Ed25519PrivateKey] = {}
        self.current = ""
        self.rotate()
        self.failure = failure
        self.up = threading.Event()
        self.up.set()
        self.gate = threading.Event()
        self.gate.set()
        self.hits = 0
        self._hit = threading.Condition()
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider._hit:
                    provider.hits += 1
                    provider._hit.notify_all()
                provider.gate.wait(timeout=30)
                if self.path != "/api/auth/jwks":
                    self._send(404, b"{}", "application/json")
                elif provider.up.is_set():
                    self._send(200, json.dumps(provider.jwks()).encode(), "application/json")
                elif provider.failure == "disconnect":
                    self.close_connection = True
                elif provider.failure == "html":
                    self._send(200, b"<!DOCTYPE html><p>Compiling /api/auth/jwks ...", "text/html")
                else:
                    self._send(503, b"Service Unavailable", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.jwks_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/auth/jwks"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def rotate(self) -> str:
        """A new signing key: published next to the old ones and used from now on."""
        self.current = random_kid()
        self.keys[self.current] = ed25519.Ed25519PrivateKey.generate()
        return self.current

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            x = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            keys.append({"alg": "EdDSA", "crv": "Ed25519", "x": b64(x), "kty": "OKP", "kid": kid})
        return {"keys": keys}

    def token(self, user_id: str, **claims: Any) -> str:
        """What ``authClient.token()`` returns: the user, ``iat``, ``sub``, a 15-minute ``exp``,
        ``iss`` and ``aud`` the origin; ``claims`` override (``DROP`` removes one)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "id": user_id,
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "emailVerified": True,
            "image": None,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-01T00:00:00.000Z",
            "iat": now,
            "sub": user_id,
            "exp": now + 15 * 60,
            "iss": ORIGIN,
            "aud": ORIGIN,
        } | claims
        payload = {name: value for name, value in payload.items() if value is not DROP}
        return ed25519_token(self.keys[self.current], self.current, payload)

    def wait_for_hits(self, count: int, timeout: float = 10.0) -> bool:
        with self._hit:
            return self._hit.wait_for(lambda: self.hits >= count, timeout=timeout)

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Clock:
    """Stands in for the ``time`` module of the JWKS cache: its ``monotonic`` only moves when
    told to."""

    def __init__(self) -> None:
        # A whole number of seconds: advancing by whole seconds is then exact, so a test can
        # step exactly onto a lifetime's end ((t + 300.0) - t can be 299.99999999997 for an
        # arbitrary float t, which made the refresh-at-expiry tests flaky).
        self.now = float(int(time.monotonic()))

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth_module, "time", fake)
    return fake


@pytest.fixture
def provider() -> Iterator[BetterAuth]:
    server = BetterAuth()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def sqlite_store(sqlite_store_url: str) -> AsyncIterator[ChatHistory]:
    store = ChatHistory(create_engine(sqlite_store_url), owns_engine=True)
    try:
        yield store
    finally:
        await store.close()


def better_auth_settings(provider: BetterAuth, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": None,
        "jwt_jwks_url": provider.jwks_url,
        "jwt_issuer": ORIGIN,
        "jwt_audience": ORIGIN,
        "jwt_jwks_cache_seconds": CACHE_SECONDS,
        "insecure_no_auth": False,
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def api(sqlite_store: ChatHistory, provider: BetterAuth) -> AsyncIterator[httpx.AsyncClient]:
    """The service configured for Better Auth, one verifier (and key cache) for the test."""
    app = create_app(better_auth_settings(provider), store=sqlite_store)
    async with asgi_client(app) as client:
        yield client


async def list_as(api: httpx.AsyncClient, user: str, token: str) -> httpx.Response:
    return await api.get(f"/api/{user}/conversations", headers={"Authorization": f"Bearer {token}"})


def assert_503(response: httpx.Response, retry_after: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
    assert response.headers["retry-after"] == retry_after


# -- a Better Auth token ----------------------------------------------------------------------


async def test_better_auth_token_is_accepted(
    api: httpx.AsyncClient, provider: BetterAuth, sqlite_store: ChatHistory, user: str
) -> None:
    token = provider.token(user)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "kid": provider.current}
    headers = {"Authorization": f"Bearer {token}"}
    created = await api.post(f"/api/{user}/conversations", json={"title": "t"}, headers=headers)
    assert created.status_code == 201, created.text
    listed = await list_as(api, user, token)
    assert [c["id"] for c in listed.json()["data"]] == [created.json()["id"]]
    assert provider.hits == 1

    principal = await JWTVerifier.from_settings(better_auth_settings(provider)).verify(token)
    assert principal.subject == user
    assert principal.claims["email"] == "ada@example.com"
    assert principal.claims["exp"] - principal.claims["iat"] == 15 * 60


# -- key rotation -----------------------------------------------------------------------------


async def test_rotated_key_verifies_on_its_first_request_right_after_a_refresh(
    api: httpx.AsyncClient, provider: BetterAuth, clock: Clock, user: str
) -> None:
    old = provider.token(user)
    assert (await list_as(api, user, old)).status_code == 200
    clock.advance(CACHE_SECONDS)
    assert (await list_as(api, user, old)).status_code == 200  # the periodic refresh
    assert provider.hits == 2

    provider.rotate()  # Better Auth starts signing with a new key a moment later
    new = provider.token(user)
    response = await list_as(api, user, new)
    assert response.status_code == 200, response.text  # one refetch finds it at once
    assert provider.hits == 3
    for token in (new, old, new):
        assert (await list_as(api, user, token)).status_code == 200
    assert provider.hits == 3


async def test_unknown_kids_are_looked_for_once_and_cannot_storm_the_provider(
    api: httpx.AsyncClient, provider: BetterAuth, clock: Clock, user: str
) -> None:
    assert (await list_as(api, user, provider.token(user))).status_code == 200
    stranger = ed25519.Ed25519PrivateKey.generate()
    payload = {"sub": user, "exp": int(time.time()) + 900, "iss": ORIGIN, "aud": ORIGIN}
    unknown = [ed25519_token(stranger, f"unknown-{i}", payload) for i in range(6)]

    for _ in range(3):  # one refetch for a kid, then none while it was just looked for
        response = await list_as(api, user, unknown[0])
        assert response.status_code == 401
        assert response.json()["detail"] == "no signing key matches the token's kid"
    assert provider.hits == 2
    for token in unknown[1:5]:  # each new kid is looked for...
        assert (await list_as(api, user, token)).status_code == 401
    assert provider.hits == 6
    # ...but no more than 5 fetches for unknown kids per cooldown: then "retry shortly".
    limited = await list_as(api, user, unknown[5])
    assert_503(limited, "10")
    assert limited.json()["detail"].startswith("rate limited: too many tokens with signing key")
    assert "at most 5 times per 10 seconds" in limited.json()["detail"]
    assert provider.hits == 6

    clock.advance(auth_module.JWKS_KID_COOLDOWN_SECONDS)
    provider.rotate()
    assert (await list_as(api, user, provider.token(user))).status_code == 200
    assert (await list_as(api, user, unknown[0])).status_code == 401  # looked for again
    assert provider.hits == 8


# -- an identity provider that is starting, slow or down --------------------------------------


@pytest.mark.parametrize("failure", ["503", "disconnect", "html"])
async def test_provider_down_at_first_then_up(
    sqlite_store: ChatHistory,
    clock: Clock,
    user: str,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = BetterAuth(failure)
    try:
        provider.up.clear()
        token = provider.token(user)
        app = create_app(better_auth_settings(provider), store=sqlite_store)
        async with asgi_client(app) as api:
            with caplog.at_level(logging.INFO, logger="chathistory.http"):
                burst = await asyncio.gather(*(list_as(api, user, token) for _ in range(8)))
            for response in burst:  # one fetch for the burst, then a short Retry-After
                assert_503(response, "1")
            assert provider.hits == 1
            assert "cannot fetch the JWKS" in caplog.text

            clock.advance(1)  # the client honours Retry-After: one more attempt, still down
            assert_503(await list_as(api, user, token), "2")
            assert provider.hits == 2
            clock.advance(0.5)  # within the backoff: no fetch
            assert_503(await list_as(api, user, token), "2")
            assert provider.hits == 2

            provider.up.set()
            clock.advance(1.5)
            response = await list_as(api, user, token)
            assert response.status_code == 200, response.text  # as soon as the retry is due
            for _ in range(5):
                assert (await list_as(api, user, token)).status_code == 200
            assert provider.hits == 3
        assert token not in caplog.text
    finally:
        provider.close()


async def test_failed_fetches_back_off_growing_and_capped(
    provider: BetterAuth, clock: Clock
) -> None:
    provider.up.clear()
    verifier = JWTVerifier.from_settings(better_auth_settings(provider))
    token = provider.token("user-1")
    waits = []
    for attempt in range(1, 9):
        with pytest.raises(HTTPProblem) as refused:
            await verifier.verify(token)
        assert refused.value.status == 503
        assert provider.hits == attempt
        waits.append(int(refused.value.headers["Retry-After"]))
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]


async def test_cached_keys_outlive_a_failed_refresh(
    api: httpx.AsyncClient, provider: BetterAuth, clock: Clock, user: str
) -> None:
    token = provider.token(user)
    assert (await list_as(api, user, token)).status_code == 200
    provider.up.clear()
    clock.advance(CACHE_SECONDS)
    for _ in range(3):  # the refresh fails once; the cached key keeps serving, no retry storm
        assert (await list_as(api, user, token)).status_code == 200
    assert provider.hits == 2
    # A kid nobody has seen cannot be checked while the provider is down: 503, not 401.
    stranger = ed25519_token(ed25519.Ed25519PrivateKey.generate(), "new", {"sub": user})
    assert_503(await list_as(api, user, stranger), "1")

    clock.advance(1)
    assert (await list_as(api, user, token)).status_code == 200  # retried, still down
    assert provider.hits == 3
    provider.up.set()
    provider.rotate()
    clock.advance(2)
    assert (await list_as(api, user, provider.token(user))).status_code == 200
    assert provider.hits == 4


async def test_slow_fetch_is_shared_and_a_refresh_does_not_hold_up_known_keys(
    api: httpx.AsyncClient, provider: BetterAuth, clock: Clock, user: str
) -> None:
    token = provider.token(user)
    provider.gate.clear()  # `next dev` is compiling the JWKS route
    burst = [asyncio.ensure_future(list_as(api, user, token)) for _ in range(6)]
    assert await asyncio.to_thread(provider.wait_for_hits, 1)
    assert not any(request.done() for request in burst)
    provider.gate.set()
    assert [r.status_code for r in await asyncio.gather(*burst)] == [200] * 6
    assert provider.hits == 1  # single flight

    provider.gate.clear()
    clock.advance(CACHE_SECONDS)
    refreshing = asyncio.ensure_future(list_as(api, user, token))
    try:
        assert await asyncio.to_thread(provider.wait_for_hits, 2)
        # The refresh is under way and slow: a known kid does not wait for it.
        response = await asyncio.wait_for(list_as(api, user, token), timeout=5)
        assert response.status_code == 200
        assert not refreshing.done()
    finally:
        provider.gate.set()
    assert (await refreshing).status_code == 200
    assert provider.hits == 2


# -- iss / aud that are not the expected ones -------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        (
            {"aud": "http://127.0.0.1:3000"},
            'token "aud" is not the expected audience "http://localhost:3000" '
            '(it is "http://127.0.0.1:3000")',
        ),
        (
            {"aud": ["https://app.example", "https://api.example"]},
            'token "aud" is not the expected audience "http://localhost:3000" '
            '(it is ["https://app.example", "https://api.example"])',
        ),
        (
            {"aud": DROP},
            'token has no "aud" claim; the expected audience is "http://localhost:3000"',
        ),
        (
            {"iss": "http://localhost:3001"},
            'token "iss" is not the expected issuer "http://localhost:3000" '
            '(it is "http://localhost:3001")',
        ),
        ({"iss": DROP}, 'token has no "iss" claim; the expected issuer is "http://localhost:3000"'),
    ],
)
async def test_iss_or_aud_mismatch_says_which_and_what_was_expected(
    api: httpx.AsyncClient,
    provider: BetterAuth,
    user: str,
    claims: dict[str, Any],
    detail: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = provider.token(user, **claims)
    with caplog.at_level(logging.INFO, logger="chathistory.http"):
        response = await list_as(api, user, token)
    assert response.status_code == 401
    assert response.json()["detail"] == detail
    challenge = response.headers["www-authenticate"]
    assert f'error_description="{detail.replace(chr(34), chr(39))}"' in challenge
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused a token")]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING
    assert detail in refusals[0].getMessage()
    for text in (response.text, challenge, caplog.text):
        assert token not in text
        assert token.split(".")[2] not in text  # not even its signature


async def test_aud_without_an_expected_audience_says_so(
    sqlite_store: ChatHistory, provider: BetterAuth, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(better_auth_settings(provider, jwt_audience=None), store=sqlite_store)
    token = provider.token(user)
    async with asgi_client(app) as api:
        with caplog.at_level(logging.INFO, logger="chathistory.http"):
            response = await list_as(api, user, token)
    assert response.status_code == 401
    assert response.json()["detail"] == (
        'token "aud" is "http://localhost:3000" but no audience is expected'
    )
    assert "CHATHISTORY_JWT_AUDIENCE is not set" in caplog.text
    assert token not in caplog.text
