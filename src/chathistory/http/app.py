"""The HTTP service: :func:`create_app` builds it from :class:`~chathistory.config.Settings`.

    uvicorn --factory chathistory.http.app:create_app      # or: chathistory serve

The app opens its store in its lifespan (migrating the schema, so a first start on the default
SQLite file creates it), refuses to start without authentication unless the explicit
development switch is on, tags every request with a request id (``X-Request-ID``, echoed when
the client sends a sane one) and logs one line per request, and refuses bodies over
``max_body_bytes`` with 413 before reading them. With bearer-token authentication, the hot reads
and appends of messages are answered by :class:`~chathistory.http.middleware.FastLane` with the
routes' own answers (:mod:`chathistory.http.answers`) but without FastAPI's per-request
machinery, unless ``fast_lane`` is off, and MCP's streamable HTTP transport is served at
``/mcp`` (:mod:`chathistory.mcp_server.http`, run in the lifespan).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from typing import Any, Final, cast

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from chathistory import __version__
from chathistory.config import Settings
from chathistory.http.auth import Authenticate, BearerAuthenticator, authenticator_from_settings
from chathistory.http.docs_page import build_docs_router
from chathistory.http.middleware import (
    REQUEST_ID_HEADER,
    BodyLimitMiddleware,
    FastLane,
    RequestContextMiddleware,
)
from chathistory.http.problems import install_problem_handlers
from chathistory.http.router import build_health_router, build_router, finish_openapi
from chathistory.mcp_server import http as mcp_http
from chathistory.store import ChatHistory

log = logging.getLogger("chathistory.http")

CORS_METHODS: Final = ("GET", "POST", "PATCH", "DELETE")

INSECURE_WARNING: Final = (
    "\n" + "!" * 78 + "\n"
    "!!  AUTHENTICATION IS OFF (CHATHISTORY_INSECURE_NO_AUTH / --insecure-no-auth).\n"
    "!!  Anyone who can reach this server can read, change and erase the chat history\n"
    "!!  of every user. Use this only for local development.\n" + "!" * 78
)


@contextmanager
def _startup_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist once the service has started (modules, models, the
    tokenizer, the pool) out of the garbage collector's full collections while it serves:
    under load a full collection otherwise walks them all every few hundred requests, 100 ms
    and more with the event loop stopped. They go back to the collector on shutdown."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _get_store(request: Request) -> ChatHistory:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
    return cast(ChatHistory, request.app.state.store)


def _add_middleware(app: FastAPI, settings: Settings, authenticate: Authenticate) -> None:
    """Stack the middleware of :mod:`chathistory.http.middleware` (and CORS) on ``app``: each
    added goes outside the ones before, so a request meets CORS, the request id, the body
    limit, then the fast lane."""
    if settings.fast_lane and isinstance(authenticate, BearerAuthenticator):
        # the hot reads and appends, answered before FastAPI's routing
        retry_after = settings.retry_after_seconds
        app.add_middleware(
            FastLane, verifier=authenticate.verifier, retry_after_seconds=retry_after
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)  # 413s carry a request id too
    if settings.cors_origin_list:  # outermost: preflights answered, every answer labelled
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=list(CORS_METHODS),
            allow_headers=[
                "Authorization",
                "Content-Type",
                REQUEST_ID_HEADER,
                *mcp_http.REQUEST_HEADERS,
            ],
            expose_headers=[
                REQUEST_ID_HEADER,
                "Retry-After",
                "Location",
                *mcp_http.RESPONSE_HEADERS,
            ],
            max_age=600,
        )


def _lifespan(
    settings: Settings, store: ChatHistory | None, mcp: mcp_http.McpEndpoint | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: warn when authentication is off, put the store on ``app.state``
    (``store`` as it is, else one opened on ``settings.database_url`` and closed on shutdown)
    and run MCP's transport while the app serves."""

    def mcp_running() -> AbstractAsyncContextManager[None]:
        return mcp.running() if mcp is not None else nullcontext()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.insecure_no_auth:
            log.warning(INSECURE_WARNING)
        if store is not None:
            app.state.store = store
            async with mcp_running():
                yield
            return
        async with ChatHistory.open(
            settings.database_url,
            migrate=settings.migrate_on_start,
            **settings.open_options(),  # the limits the command line applies too
        ) as opened:
            app.state.store = opened
            async with mcp_running():
                with _startup_objects_frozen():
                    yield

    return lifespan


def _include_routes(
    app: FastAPI,
    authenticate: Authenticate,
    mcp: mcp_http.McpEndpoint | None,
    *,
    retry_after_seconds: int,
) -> None:
    """Mount on ``app``, in this order: the API under ``/api``, ``/healthz`` and ``/readyz``,
    the docs pages, and MCP at ``/mcp`` when it is served."""
    app.include_router(
        build_router(
            get_store=_get_store,
            authenticate=authenticate,
            retry_after_seconds=retry_after_seconds,
        )
    )
    app.include_router(
        build_health_router(get_store=_get_store, retry_after_seconds=retry_after_seconds)
    )
    app.include_router(build_docs_router(title=app.title, openapi_url=app.openapi_url or ""))
    if mcp is not None:
        app.router.routes.append(mcp.route())


def _install_openapi(app: FastAPI) -> None:
    """Serve ``app``'s OpenAPI document as :func:`finish_openapi` completes it, built once on
    first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, store: ChatHistory | None = None) -> FastAPI:
    """The chat history service.

    With ``store`` given, the app uses it as it is (and leaves closing it to the caller);
    otherwise its lifespan opens one on ``settings.database_url``, migrating the schema.
    Raises :class:`~chathistory.errors.ConfigurationError` when no authentication is
    configured and ``insecure_no_auth`` is off.
    """
    settings = settings or Settings()
    authenticate = authenticator_from_settings(settings)  # refuses to build without auth
    # MCP at /mcp (SPEC 12) needs a token's `sub`: not served with authentication off.
    mcp = (
        mcp_http.McpEndpoint(settings, authenticate)
        if isinstance(authenticate, BearerAuthenticator)
        else None
    )
    app = FastAPI(
        title="chathistory",
        version=__version__,
        summary="Durable, multi-tenant chat history for AI assistants.",
        description=(
            "Conversations and their messages under `/api/{user_id}`. Authenticate with "
            "`Authorization: Bearer <JWT>` whose `sub` is the `{user_id}` of the path. Errors "
            "are RFC 9457 `application/problem+json`."
        ),
        lifespan=_lifespan(settings, store, mcp),
        # Starlette would answer `/path/` with a 307 to an absolute URL built from the client's
        # Host header (an open redirect): a path with a stray slash is a 404 instead.
        redirect_slashes=False,
        # /docs is served from the installed package (docs_page), not FastAPI's CDN page.
        docs_url=None,
        redoc_url=None,
    )
    if store is not None:
        app.state.store = store  # usable at once, also by clients that run no lifespan
    retry_after = settings.retry_after_seconds
    _include_routes(app, authenticate, mcp, retry_after_seconds=retry_after)
    install_problem_handlers(app, retry_after_seconds=retry_after)
    _add_middleware(app, settings, authenticate)
    _install_openapi(app)
    return app


__all__ = ["create_app"]
