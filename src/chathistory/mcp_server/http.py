"""MCP's streamable HTTP transport at ``/mcp`` of the HTTP service.

:class:`McpEndpoint` is a plain ASGI app in front of the SDK's session manager:

- it verifies the request's bearer token with the service's own authenticator (a missing or bad
  token is the API's 401 problem with ``WWW-Authenticate: Bearer``, a JWKS outage its 503), and
  puts the principal in the request's scope, where each tool call finds its user (the token's
  ``sub``) and the store (the app's). No tool argument names a user.
- the session manager runs stateless with JSON responses: every POST is a whole exchange that
  any worker process can answer, with no session to keep in one process's memory and no
  server-sent-events stream to hold open (the tools never call back into the client). So POST
  is the only method: ``GET`` (a stream for server-initiated messages) and ``DELETE`` (ending a
  session) are answered ``405`` with ``Allow: POST``, as the transport's specification lets a
  server without them answer.
- before anything else it checks ``Host`` and ``Origin`` (DNS rebinding protection, so a web
  page on another site cannot reach a local server through its browser): each is parsed into
  host and port and compared exactly with ``CHATHISTORY_MCP_ALLOWED_HOSTS`` (``host:*`` for any
  port), and an origin with a scheme of ``http`` or ``https`` and one of those hosts, or one of
  ``CHATHISTORY_CORS_ORIGINS``: a bad ``Host`` is a ``421``, a bad ``Origin`` a ``403``.

The manager must run while the endpoint serves: :meth:`McpEndpoint.running` belongs in the
app's lifespan (each run gets a fresh manager, as the SDK wants one per run).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final, NamedTuple, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from chathistory.config import Settings
from chathistory.http.auth import BearerAuthenticator, Principal
from chathistory.http.problems import HTTPProblem, problem_response
from chathistory.mcp_server.tools import Caller, build_server
from chathistory.store import ChatHistory

PATH: Final = "/mcp"
PRINCIPAL_SCOPE_KEY: Final = "chathistory.mcp_principal"
# Request headers an MCP client sends and response headers it reads (CORS, SPEC 13).
REQUEST_HEADERS: Final = ("Mcp-Session-Id", "Mcp-Protocol-Version", "Mcp-Method", "Mcp-Name")
RESPONSE_HEADERS: Final = ("Mcp-Session-Id", "WWW-Authenticate")


def caller_from_request(ctx: Context) -> Caller:
    """The caller of a tool call over HTTP: the principal :class:`McpEndpoint` put in the
    request's scope, on the app's store."""
    request = ctx.request_context.request
    if not isinstance(request, Request):  # the server of McpEndpoint answers HTTP only
        raise ToolError("the request is not authenticated")
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(principal, Principal):  # only reachable through McpEndpoint: a bug
        raise ToolError("the request is not authenticated")
    return Caller(store=cast(ChatHistory, request.app.state.store), user_id=principal.subject)


_HOST_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_IPV6: Final = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_ANY_PORT: Final = "*"


class Authority(NamedTuple):
    """A host (lower case; an IPv6 address in brackets) and a port (``None``: none given;
    ``"*"`` in an allowed host: any port)."""

    host: str
    port: str | None


def parse_authority(value: str, *, pattern: bool = False) -> Authority | None:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` exactly, else ``None``: no user
    information, path or stray character (``localhost:8101@evil.example`` is not localhost).
    With ``pattern``, the port may be ``*``."""
    if value.startswith("["):
        end = value.find("]") + 1
        host, rest = value[:end], value[end:]
        if not end or not _IPV6.fullmatch(host):
            return None
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
        if not _HOST_NAME.fullmatch(host):
            return None
    if not rest:
        return Authority(host.lower(), None)
    port = rest[1:]
    if rest[0] != ":" or not (
        (_PORT.fullmatch(port) and int(port) <= 65535) or (pattern and port == _ANY_PORT)
    ):
        return None
    return Authority(host.lower(), port)


class Origin(NamedTuple):
    scheme: str
    authority: Authority


def parse_origin(value: str, *, pattern: bool = False) -> Origin | None:
    """``scheme://authority`` of ``http`` or ``https`` exactly (an ``Origin`` header carries
    no path), else ``None``."""
    scheme, separator, authority = value.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("http", "https"):
        return None
    parsed = parse_authority(authority, pattern=pattern)
    return None if parsed is None else Origin(scheme, parsed)


def _matches(authority: Authority, allowed: Authority) -> bool:
    if authority.host != allowed.host:
        return False
    if allowed.port == _ANY_PORT:
        return authority.port is not None
    return authority.port == allowed.port


class HostCheck:
    """DNS rebinding protection of ``/mcp``: ``Host`` and ``Origin`` parsed and compared
    exactly with the allowed hosts (``*`` among them turns the check off, for a proxy that
    checks ``Host`` itself) and, for origins, the CORS origins too."""

    def __init__(self, allowed_hosts: Iterable[str], cors_origins: Iterable[str]) -> None:
        hosts = [host.strip() for host in allowed_hosts if host.strip()]
        self.enabled = _ANY_PORT not in hosts
        self._hosts = [a for a in (parse_authority(h, pattern=True) for h in hosts) if a]
        origins = [o for o in (parse_origin(c, pattern=True) for c in cors_origins) if o]
        self._origins = origins + [
            Origin(scheme, host) for host in self._hosts for scheme in ("http", "https")
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> HostCheck:
        return cls(settings.mcp_allowed_host_list, settings.cors_origin_list)

    def host_allowed(self, value: str | None) -> bool:
        authority = parse_authority(value) if value else None
        return authority is not None and any(_matches(authority, a) for a in self._hosts)

    def origin_allowed(self, value: str | None) -> bool:
        """An absent ``Origin`` is allowed (not a browser's cross-site request)."""
        if value is None:
            return True
        origin = parse_origin(value)
        return origin is not None and any(
            origin.scheme == allowed.scheme and _matches(origin.authority, allowed.authority)
            for allowed in self._origins
        )

    def refusal(self, headers: Headers) -> HTTPProblem | None:
        """Why a request with these headers may not reach ``/mcp``; ``None`` when it may."""
        if not self.enabled:
            return None
        if not self.host_allowed(headers.get("host")):
            return HTTPProblem(
                421, "the Host header is not one this MCP endpoint answers", code="invalid_host"
            )
        if not self.origin_allowed(headers.get("origin")):
            return HTTPProblem(
                403, "the Origin header is not one allowed to call MCP", code="invalid_origin"
            )
        return None


class McpEndpoint:
    """The ASGI app at ``/mcp``: bearer authentication, then the SDK's transport."""

    def __init__(self, settings: Settings, authenticate: BearerAuthenticator) -> None:
        self._authenticate = authenticate
        self._server: MCPServer = build_server(
            caller_from_request, allow_delete=settings.mcp_allow_delete
        )
        self._hosts = HostCheck.from_settings(settings)
        self._max_body_bytes = settings.max_body_bytes
        self._retry_after = settings.retry_after_seconds
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve while inside: start a session manager, stop it (and its calls) on the way out."""
        self._server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            # Host and Origin are checked exactly by the endpoint (the SDK would take
            # `localhost:8101@evil.example` for a port of localhost).
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=self._max_body_bytes,
        )
        manager = self._server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    def route(self) -> Route:
        """The route at :data:`PATH`, every method (the endpoint answers 405 to all but POST)."""
        return Route(PATH, self, include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            refusal = self._hosts.refusal(Headers(scope=scope))
            if refusal is not None:
                raise refusal
            if scope["method"] != "POST":
                raise HTTPProblem(
                    405,
                    "the MCP endpoint is stateless: only POST is served (no server-sent "
                    "event stream, no session to delete)",
                    headers={"Allow": "POST"},
                )
            if self._manager is None:
                raise HTTPProblem(503, "the MCP endpoint is not running (the app has not started)")
            principal = await self._authenticate(Request(scope, receive))
        except HTTPProblem as problem:
            response = problem_response(problem, retry_after_seconds=self._retry_after)
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self._manager.handle_request(scope, receive, send)


__all__ = [
    "PATH",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "Authority",
    "HostCheck",
    "McpEndpoint",
    "caller_from_request",
    "parse_authority",
    "parse_origin",
]
