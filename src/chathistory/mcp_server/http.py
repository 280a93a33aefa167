"""MCP's streamable HTTP transport at ``/mcp`` of the HTTP service.

:class:`McpEndpoint` is a plain ASGI app in front of the SDK's session manager:

- it verifies the request's bearer token with the service's own authenticator (a missing or bad
  token is the API's 401 problem with ``WWW-Authenticate: Bearer``, a JWKS outage its 503), and
  puts the principal in the request's scope, where each tool call finds its user (the token's
  ``sub``) and the store (the app's). No tool argument names a user.
- the session manager runs stateless with JSON responses: every POST is a whole exchange that
  any worker process can answer, with no session to keep in one process's memory and no
  server-sent-events stream to hold open (the tools never call back into the client).
- the SDK checks ``Host`` and ``Origin`` against the allowed hosts (DNS rebinding protection):
  ``CHATHISTORY_MCP_ALLOWED_HOSTS``, and as origins those hosts and ``CHATHISTORY_CORS_ORIGINS``.

The manager must run while the endpoint serves: :meth:`McpEndpoint.running` belongs in the
app's lifespan (each run gets a fresh manager, as the SDK wants one per run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
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


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """The SDK's DNS rebinding protection for the configured hosts; ``*`` turns it off (for a
    proxy that checks ``Host`` itself)."""
    hosts = settings.mcp_allowed_host_list
    if "*" in hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    same_origin = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[*same_origin, *settings.cors_origin_list],
    )


class McpEndpoint:
    """The ASGI app at ``/mcp``: bearer authentication, then the SDK's transport."""

    def __init__(self, settings: Settings, authenticate: BearerAuthenticator) -> None:
        self._authenticate = authenticate
        self._server: MCPServer = build_server(
            caller_from_request, allow_delete=settings.mcp_allow_delete
        )
        self._security = transport_security(settings)
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
            transport_security=self._security,
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
        """The route at :data:`PATH`, every method (the SDK answers 405 to those it has not)."""
        return Route(PATH, self, include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
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
    "McpEndpoint",
    "caller_from_request",
    "transport_security",
]
