"""JWT bearer authentication, in one place.

A token is ``Authorization: Bearer <JWT>``; its ``sub`` is the user. It is verified either with
a shared secret (HS256 only) or with keys from a JWKS URL (EdDSA, ES256 and RS256 only, each key
used only with the algorithm its type implies), with ``exp`` and ``sub`` required, ``nbf`` and
``iat`` enforced, a small leeway, and ``iss`` / ``aud`` when configured. ``alg: none`` and
algorithm confusion (an HMAC token "signed" with a public key) are refused because no list of
accepted algorithms ever mixes the two families for one key.

Any failure is a 401 with ``WWW-Authenticate: Bearer``; a key set that cannot be fetched is a
503. The result is a frozen :class:`Principal`.
"""

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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
JWKS_REFRESH_COOLDOWN_SECONDS: Final = 10.0  # unknown kids refetch the set at most this often
JWKS_TIMEOUT_SECONDS: Final = 5.0
REALM: Final = "chathistory"

Authenticate = Callable[..., Awaitable["Principal"]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``subject`` is the user id the token was issued for."""

    subject: str
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def unauthorized(detail: str, *, invalid_token: bool = True) -> HTTPProblem:
    challenge = f'Bearer realm="{REALM}"'
    if invalid_token:
        challenge += f', error="invalid_token", error_description="{detail}"'
    return HTTPProblem(401, detail, code="invalid_token", headers={"WWW-Authenticate": challenge})


class _JwksKeys:
    """Signing keys of a JWKS URL: cached for ``lifetime`` seconds, refetched at most every
    ``cooldown`` seconds for a kid not seen yet (key rotation), kept through a failed refetch.

    ``get`` blocks on the network: call it from a worker thread.
    """

    def __init__(self, url: str, *, lifetime: float, cooldown: float, timeout: float) -> None:
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout)  # fetching only
        self._url = url
        self._lifetime = lifetime
        self._cooldown = cooldown
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def get(self, kid: str) -> PyJWK:
        with self._lock:
            now = time.monotonic()
            fresh = self._fetched_at is not None and now - self._fetched_at < self._lifetime
            may_fetch = self._attempted_at is None or now - self._attempted_at >= self._cooldown
            if (not fresh or kid not in self._keys) and may_fetch:
                self._attempted_at = now
                try:
                    self._refresh()
                except (PyJWKClientError, PyJWKError) as exc:
                    log.warning("cannot fetch the JWKS from %s: %s", self._url, exc)
                    if kid not in self._keys:
                        raise HTTPProblem(
                            503, "the token signing keys cannot be fetched right now"
                        ) from exc
            if self._fetched_at is None:
                raise HTTPProblem(503, "the token signing keys cannot be fetched right now")
            key = self._keys.get(kid)
        if key is None:
            raise unauthorized("no signing key matches the token's kid")
        return key

    def _refresh(self) -> None:
        data = self._client.fetch_data()
        if not isinstance(data, dict):
            raise PyJWKSetError("the JWKS is not a JSON object")
        keys = PyJWKSet.from_dict(data).keys
        self._keys = {
            key.key_id: key for key in keys if key.key_id and key.public_key_use in ("sig", None)
        }
        self._fetched_at = time.monotonic()


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
        jwks_cooldown_seconds: float = JWKS_REFRESH_COOLDOWN_SECONDS,
        jwks_timeout_seconds: float = JWKS_TIMEOUT_SECONDS,
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
                    cooldown=jwks_cooldown_seconds,
                    timeout=jwks_timeout_seconds,
                )
            except PyJWKClientError as exc:
                raise ConfigurationError(f"CHATHISTORY_JWT_JWKS_URL: {exc}") from None
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

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
            raise unauthorized("the token's issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("the token's audience is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise unauthorized("the token is invalid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise unauthorized("the token's 'sub' claim is not a user id")
        return Principal(subject=subject, claims=MappingProxyType(claims))


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT whose `sub` claim is the `{user_id}` of the path.",
)


def bearer_authenticator(verifier: JWTVerifier) -> Authenticate:
    """A FastAPI dependency: the verified principal of the request's bearer token."""

    async def authenticate(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise unauthorized("a bearer token is required", invalid_token=False)
        return await verifier.verify(credentials.credentials)

    return authenticate


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
