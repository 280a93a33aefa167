"""JWT bearer authentication, in one place.

A token is ``Authorization: Bearer <JWT>``; its ``sub`` is the user. It is verified either with
a shared secret (HS256 only) or with keys from a JWKS URL (EdDSA, ES256 and RS256 only, each key
used only with the algorithm its type implies), with ``exp`` and ``sub`` required, ``nbf`` and
``iat`` enforced, a small leeway, and ``iss`` / ``aud`` when configured. ``alg: none`` and
algorithm confusion (an HMAC token "signed" with a public key) are refused because no list of
accepted algorithms ever mixes the two families for one key.

Keys of a JWKS URL are cached for ``jwks_cache_seconds``; a ``kid`` not in the cached set is
looked for at once with a refetch (key rotation: the first token signed with a new key verifies),
unless a fetch made for that very kid just did not find it. One fetch runs at a time and every
request that needs it waits for it; a failed fetch is retried after a growing backoff, and a
failed refresh keeps the cached keys. A request gets a 503 (with ``Retry-After``) only when the
key it needs cannot be had: no key set fetched yet, or a new kid while the provider is failing.

Any other failure is a 401 with ``WWW-Authenticate: Bearer``; an ``iss`` or ``aud`` that is not
the expected one says which claim and what was expected (and is logged, never the token). The
result is a frozen :class:`Principal`.

A token that verified with the shared secret is remembered (a bounded LRU keyed by the token
itself) until its ``exp`` passes, so a client sending the same token again costs a dictionary
look-up instead of a signature check; the secret never changes while the verifier lives, so the
answer is the same. Keys of a JWKS URL rotate: their tokens are checked every time.
"""

import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from fastapi import Request
from fastapi.security import HTTPBearer
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWKClientError, PyJWKError, PyJWKSetError
from starlette.concurrency import run_in_threadpool

from chathistory.config import Settings
from chathistory.errors import ConfigurationError
from chathistory.http.problems import HTTPProblem

log = logging.getLogger("chathistory.http")

SECRET_ALGORITHMS: Final = ("HS256",)
JWKS_ALGORITHMS: Final = ("EdDSA", "ES256", "RS256")
MIN_SECRET_BYTES: Final = 32  # RFC 7518 3.2: an HS256 key is at least 256 bits
JWKS_KID_COOLDOWN_SECONDS: Final = 10.0  # a kid a fetch did not find is not looked for sooner
JWKS_UNKNOWN_KID_FETCHES: Final = 5  # fetches for unknown kids per cooldown, at most (no storms)
JWKS_RETRY_SECONDS: Final = 1.0  # wait after a failed fetch; doubles with each failure in a row
JWKS_RETRY_MAX_SECONDS: Final = 30.0
JWKS_TIMEOUT_SECONDS: Final = 5.0
JWKS_REMEMBERED_MISSING_KIDS: Final = 1024
CLAIM_SHOWN_CHARS: Final = 100  # a claim value quoted in a 401 or a log line is cut there
VERIFIED_TOKENS: Final = 4096  # HS256 tokens remembered as verified, at most (least recent out)
VERIFIED_TOKEN_MAX_CHARS: Final = 4096  # a longer token is verified every time
NO_MATCHING_KEY: Final = "no signing key matches the token's kid"
REALM: Final = "chathistory"

Authenticate = Callable[..., Awaitable["Principal"]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``subject`` is the user id the token was issued for."""

    subject: str
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def owns(self, user_id: str) -> bool:
        """Whether this caller may act on ``user_id``'s data: only its own."""
        return self.subject == user_id


def unauthorized(detail: str, *, invalid_token: bool = True) -> HTTPProblem:
    challenge = f'Bearer realm="{REALM}"'
    if invalid_token:
        # RFC 6750 3: the description is printable ASCII without '"' and '\\'.
        description = "".join(
            ("'" if c == '"' else "?") if c in '"\\' or not " " <= c <= "~" else c for c in detail
        )
        challenge += f', error="invalid_token", error_description="{description}"'
    return HTTPProblem(401, detail, code="invalid_token", headers={"WWW-Authenticate": challenge})


def _unavailable(seconds: float, detail: str | None = None) -> HTTPProblem:
    return HTTPProblem(
        503,
        detail or "the token signing keys cannot be fetched right now",
        headers={"Retry-After": str(max(1, math.ceil(seconds)))},
    )


def _rate_limited(seconds: float, cooldown: float) -> HTTPProblem:
    return _unavailable(
        seconds,
        "rate limited: too many tokens with signing key ids the key set did not have; it is "
        f"refetched for unknown key ids at most {JWKS_UNKNOWN_KID_FETCHES} times per "
        f"{cooldown:g} seconds",
    )


_FETCH_ERRORS: Final = (PyJWKClientError, PyJWKError, ValueError, OSError)


class _JwksKeys:
    """The signing keys of a JWKS URL, by kid. ``get`` blocks on the network: call it from a
    worker thread.

    - The set is used for ``lifetime`` seconds. The request that finds it stale refreshes it;
      requests meanwhile keep using it, and a failed refresh keeps it.
    - One fetch at a time (single flight): a request that needs keys while a fetch is under way
      waits for it, and a fetch begun before a request arrived is not trusted to have seen its kid.
    - An unknown kid is fetched for at once (key rotation), unless a fetch did not find that kid
      less than ``kid_cooldown`` seconds ago (401); at most ``JWKS_UNKNOWN_KID_FETCHES`` such
      fetches run per ``kid_cooldown``, so made-up kids cannot hammer the identity provider (503).
    - After a failed fetch the next one waits ``retry_initial`` seconds, doubled per failure in a
      row up to ``retry_max``; meanwhile a request without its key gets a 503 whose
      ``Retry-After`` is the time left.
    """

    def __init__(
        self,
        url: str,
        *,
        lifetime: float,
        kid_cooldown: float,
        timeout: float,
        retry_initial: float,
        retry_max: float,
    ) -> None:
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout)  # fetching only
        self._url = url
        self._lifetime = lifetime
        self._kid_cooldown = kid_cooldown
        self._timeout = timeout
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._cond = threading.Condition()
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # of the last successful fetch
        self._fetching = False
        self._started = 0  # fetches begun; they end in the same order (one at a time)
        self._finished = 0
        self._last_ok = False  # whether the last fetch to end succeeded
        self._failures = 0  # failed fetches in a row
        self._retry_at: float | None = None  # no fetch before this, after a failure
        self._missing: OrderedDict[str, float] = OrderedDict()  # kid -> when it was not found
        self._kid_fetches: deque[float] = deque()  # when fetches for unknown kids began

    def get(self, kid: str) -> PyJWK:
        with self._cond:
            arrived = self._started
            while True:
                now = time.monotonic()
                key = self._keys.get(kid)
                stale = self._fetched_at is None or now - self._fetched_at >= self._lifetime
                settled = self._finished > arrived  # a fetch begun after this lookup has ended
                if key is not None and (not stale or settled or self._fetching):
                    return key
                if settled:
                    raise self._not_found(kid, now)
                if self._fetching:
                    self._wait_for_fetch()
                    continue
                refusal = self._hold_off(kid, now, stale=stale)
                if refusal is not None:
                    if key is not None:
                        return key  # a stale key while the identity provider gets some rest
                    raise refusal
                self._fetch(for_unknown_kid=not stale)

    def _hold_off(self, kid: str, now: float, *, stale: bool) -> HTTPProblem | None:
        """Why this lookup may not fetch now; ``None`` when it may."""
        if not stale:
            seen = self._missing.get(kid)
            if seen is not None and now - seen < self._kid_cooldown:
                return unauthorized(NO_MATCHING_KEY)
        if self._retry_at is not None and now < self._retry_at:
            return _unavailable(self._retry_at - now)
        if not stale:
            while self._kid_fetches and now - self._kid_fetches[0] >= self._kid_cooldown:
                self._kid_fetches.popleft()
            if len(self._kid_fetches) >= JWKS_UNKNOWN_KID_FETCHES:
                return _rate_limited(
                    self._kid_fetches[0] + self._kid_cooldown - now, self._kid_cooldown
                )
        return None

    def _not_found(self, kid: str, now: float) -> HTTPProblem:
        """The answer for a kid that a fetch begun after its lookup did not bring."""
        if not self._last_ok:
            return _unavailable((self._retry_at or now) - now)
        self._missing[kid] = now
        self._missing.move_to_end(kid)
        while len(self._missing) > JWKS_REMEMBERED_MISSING_KIDS:
            self._missing.popitem(last=False)
        return unauthorized(NO_MATCHING_KEY)

    def _wait_for_fetch(self) -> None:
        in_flight = self._started
        if not self._cond.wait_for(
            lambda: self._finished >= in_flight, timeout=2 * self._timeout + 1
        ):
            raise _unavailable(self._retry_initial)

    def _fetch(self, *, for_unknown_kid: bool) -> None:
        """Fetch the set; called holding the lock, released while on the network."""
        if for_unknown_kid:
            self._kid_fetches.append(time.monotonic())
        self._fetching = True
        self._started += 1
        keys: dict[str, PyJWK] | None = None
        error: Exception | None = None
        self._cond.release()
        try:
            keys = self._download()
        except _FETCH_ERRORS as exc:
            error = exc
        finally:
            self._cond.acquire()
            self._fetched(keys, error)

    def _fetched(self, keys: dict[str, PyJWK] | None, error: Exception | None) -> None:
        now = time.monotonic()
        self._fetching = False
        self._finished += 1
        self._last_ok = keys is not None
        if keys is not None:
            if self._failures or self._fetched_at is None:
                log.info("fetched %d signing keys from %s", len(keys), self._url)
            self._keys = keys
            self._fetched_at = now
            self._failures = 0
            self._retry_at = None
            for kid in keys:
                self._missing.pop(kid, None)
        else:
            self._failures += 1
            delay = min(self._retry_initial * 2.0 ** min(self._failures - 1, 32), self._retry_max)
            self._retry_at = now + delay
            log.warning(
                "cannot fetch the JWKS from %s: %s; %s, next attempt in %.1f s",
                self._url,
                error if error is not None else "unexpected error",
                "keeping the cached keys" if self._keys else "no signing keys yet",
                delay,
            )
        self._cond.notify_all()

    def _download(self) -> dict[str, PyJWK]:
        data = self._client.fetch_data()
        if not isinstance(data, dict):
            raise PyJWKSetError("the JWKS is not a JSON object")
        keys = PyJWKSet.from_dict(data).keys
        return {
            key.key_id: key for key in keys if key.key_id and key.public_key_use in ("sig", None)
        }


def _shown(value: object) -> str:
    """A claim value as JSON, ASCII-escaped and cut short: safe in a log line and a header."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= CLAIM_SHOWN_CHARS else text[: CLAIM_SHOWN_CHARS - 3] + "..."


class JWTVerifier:
    """Checks bearer tokens against a shared secret, a JWKS URL, or both."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        jwks_cooldown_seconds: float = JWKS_KID_COOLDOWN_SECONDS,
        jwks_timeout_seconds: float = JWKS_TIMEOUT_SECONDS,
        jwks_retry_seconds: float = JWKS_RETRY_SECONDS,
        jwks_retry_max_seconds: float = JWKS_RETRY_MAX_SECONDS,
    ) -> None:
        if secret is None and jwks_url is None:
            raise ConfigurationError("a JWT verifier needs a secret or a JWKS URL")
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"CHATHISTORY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256"
            )
        self._secret = secret.encode() if secret is not None else None
        self._jwks: _JwksKeys | None = None
        if jwks_url is not None:
            if urlsplit(jwks_url).scheme not in ("http", "https"):
                raise ConfigurationError("CHATHISTORY_JWT_JWKS_URL must be an http(s) URL")
            try:
                self._jwks = _JwksKeys(
                    jwks_url,
                    lifetime=jwks_cache_seconds,
                    kid_cooldown=jwks_cooldown_seconds,
                    timeout=jwks_timeout_seconds,
                    retry_initial=jwks_retry_seconds,
                    retry_max=jwks_retry_max_seconds,
                )
            except PyJWKClientError as exc:
                raise ConfigurationError(f"CHATHISTORY_JWT_JWKS_URL: {exc}") from None
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        # token -> (the instant it stops verifying, its principal); HS256 tokens only.
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> "JWTVerifier":
        return cls(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
            jwks_cache_seconds=settings.jwt_jwks_cache_seconds,
        )

    async def verify(self, token: str) -> Principal:
        """The token's principal; :class:`HTTPProblem` (401, or 503) when it does not verify."""
        known = self.remembered(token)
        if known is not None:
            return known
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("the token is malformed") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm in SECRET_ALGORITHMS and self._secret is not None:
            key = self._secret
        elif algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise unauthorized("the token names no signing key (kid)")
            jwk = await run_in_threadpool(self._jwks.get, kid)
            if jwk.algorithm_name != algorithm:
                raise unauthorized("the token's algorithm does not match its signing key")
            key = jwk.key
        else:
            raise unauthorized("the token's signing algorithm is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise self._claim_refused("iss", token) from None
        except jwt.InvalidAudienceError:
            raise self._claim_refused("aud", token) from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim in ("iss", "aud"):
                raise self._claim_refused(exc.claim, token) from None
            raise unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise unauthorized("the token is invalid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise unauthorized("the token's 'sub' claim is not a user id")
        principal = Principal(subject=subject, claims=MappingProxyType(claims))
        if key is self._secret and len(token) <= VERIFIED_TOKEN_MAX_CHARS:
            self._remember(token, int(claims["exp"]) + self._leeway, principal)
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token that verified with the shared secret and verifies still
        (its ``exp`` not passed), without checking it again; else ``None``."""
        remembered = self._verified.get(token)
        if remembered is None:
            return None
        # PyJWT's clock and rule: a token verifies while exp > now - leeway.
        if datetime.now(tz=UTC).timestamp() < remembered[0]:
            self._verified.move_to_end(token)
            return remembered[1]
        del self._verified[token]
        return None

    def _remember(self, token: str, until: float, principal: Principal) -> None:
        self._verified[token] = (until, principal)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)

    def _claim_refused(self, claim: str, token: str) -> HTTPProblem:
        """The 401 of a token whose ``iss`` or ``aud`` is not the expected one: which claim, what
        was expected and what the token says, logged too (the token itself never is)."""
        what, expected = (
            ("issuer", self._issuer) if claim == "iss" else ("audience", self._audience)
        )
        try:  # PyJWT checks the signature before the claims: these are the signer's words
            actual = jwt.decode(token, options={"verify_signature": False}).get(claim)
        except jwt.PyJWTError:
            actual = None
        if not actual:
            detail = f'token has no "{claim}" claim; the expected {what} is {_shown(expected)}'
        elif expected is None:
            detail = f'token "{claim}" is {_shown(actual)} but no {what} is expected'
        else:
            detail = (
                f'token "{claim}" is not the expected {what} {_shown(expected)} '
                f"(it is {_shown(actual)})"
            )
        log.warning(
            "refused a token: %s (CHATHISTORY_JWT_%s is %s)",
            detail,
            what.upper(),
            _shown(expected) if expected is not None else "not set",
        )
        return unauthorized(detail)


class BearerAuthenticator(HTTPBearer):
    """A FastAPI dependency: the verified principal of the request's bearer token.

    It is the ``HTTPBearer`` security scheme itself (so OpenAPI documents it), reading the
    header and verifying the token in one dependency rather than two."""

    def __init__(self, verifier: JWTVerifier) -> None:
        super().__init__(
            auto_error=False,
            bearerFormat="JWT",
            description="A JWT whose `sub` claim is the `{user_id}` of the path.",
            scheme_name="HTTPBearer",
        )
        self.verifier = verifier

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None:
            raise unauthorized("a bearer token is required", invalid_token=False)
        return await self.verifier.verify(credentials.credentials)


def bearer_authenticator(verifier: JWTVerifier) -> Authenticate:
    """A FastAPI dependency: the verified principal of the request's bearer token."""
    return BearerAuthenticator(verifier)


def insecure_authenticator() -> Authenticate:
    """Development only: every caller is whichever user the path names."""

    async def authenticate(request: Request) -> Principal:
        return Principal(subject=str(request.path_params.get("user_id", "")))

    return authenticate


def authenticator_from_settings(settings: Settings) -> Authenticate:
    """The dependency the settings ask for; :class:`ConfigurationError` when they ask for
    nothing (the service refuses to run without authentication unless told so explicitly)."""
    configured = settings.jwt_secret is not None or settings.jwt_jwks_url is not None
    if settings.insecure_no_auth:
        if configured:
            raise ConfigurationError(
                "CHATHISTORY_INSECURE_NO_AUTH is on while JWT authentication is configured; "
                "turn one of them off"
            )
        return insecure_authenticator()
    if not configured:
        raise ConfigurationError(
            "no authentication is configured: set CHATHISTORY_JWT_SECRET (HS256) or "
            "CHATHISTORY_JWT_JWKS_URL; for local development only, "
            "CHATHISTORY_INSECURE_NO_AUTH=true (serve --insecure-no-auth) turns auth off"
        )
    return bearer_authenticator(JWTVerifier.from_settings(settings))


__all__ = [
    "JWKS_ALGORITHMS",
    "SECRET_ALGORITHMS",
    "Authenticate",
    "JWTVerifier",
    "Principal",
    "authenticator_from_settings",
    "bearer_authenticator",
    "insecure_authenticator",
    "unauthorized",
]
