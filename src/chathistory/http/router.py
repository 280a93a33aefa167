"""The HTTP routes: a thin layer over :class:`chathistory.ChatHistory`.

Every rule (validation, ownership, idempotency, order) lives in the store; a route only reads
the request, calls one store method and shapes the answer. Bodies reach the store as the JSON
the client sent, so a bad field is reported by the store's own validation.

:func:`build_router` takes the dependencies it needs, so a host application can mount the API
on its own store and its own authentication::

    app.include_router(build_router(get_store=my_store, authenticate=my_auth))

``authenticate`` is any FastAPI dependency returning a :class:`~chathistory.http.auth.Principal`
(raise :class:`~chathistory.http.problems.HTTPProblem` with status 401 to refuse a caller). The
routes answer every error with ``application/problem+json`` on their own.

The routes live by family in :mod:`chathistory.http.routes` (``conversations``, ``messages``,
``user``; the owner check and shared parameters in ``common``); :func:`build_router` adds them
to one router in the order of the OpenAPI document.

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases built
inside :func:`build_health_router` from the signatures at runtime.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from chathistory.errors import UnavailableError
from chathistory.http.docs import finish_openapi, problem_responses
from chathistory.http.problems import DEFAULT_RETRY_AFTER_SECONDS, HTTPProblem, log
from chathistory.http.requests import (
    StrictJSONRequest,
    problem_route_class,
    require_json,
    strict_json_loads,
)
from chathistory.http.routes.common import created_location, make_guards
from chathistory.http.routes.conversations import (
    add_conversation_list_routes,
    add_conversation_routes,
)
from chathistory.http.routes.items import add_item_routes
from chathistory.http.routes.messages import (
    add_context_route,
    add_message_list_routes,
    add_message_routes,
)
from chathistory.http.routes.user import add_user_routes
from chathistory.schemas.responses import ConversationPage, Health, MessageBatch
from chathistory.store import ChatHistory


def build_router(
    *,
    get_store: Callable[..., Any],
    authenticate: Callable[..., Any],
    prefix: str = "/api",
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS,
) -> APIRouter:
    """The chat history API under ``{prefix}/{user_id}``.

    ``get_store`` is a dependency returning the :class:`ChatHistory` to use; ``authenticate``
    a dependency returning the caller's :class:`Principal`. A principal whose ``subject`` is
    not the ``{user_id}`` of the path is refused with 403.
    """
    router = APIRouter(
        prefix=prefix,
        tags=["chat history"],
        route_class=problem_route_class(retry_after_seconds=retry_after_seconds),
    )
    guards = make_guards(get_store=get_store, authenticate=authenticate)
    # In the order of the OpenAPI document: a family's collection, then one of its items.
    add_conversation_list_routes(router, guards)
    add_conversation_routes(router, guards)
    add_message_list_routes(router, guards)
    add_message_routes(router, guards)
    add_context_route(router, guards)
    add_item_routes(router, guards)
    add_user_routes(router, guards)
    return router


def build_health_router(
    *, get_store: Callable[..., Any], retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
) -> APIRouter:
    """``/healthz`` (the process answers) and ``/readyz`` (the database answers); no auth."""
    router = APIRouter(
        tags=["health"], route_class=problem_route_class(retry_after_seconds=retry_after_seconds)
    )
    Store = Annotated[ChatHistory, Depends(get_store)]

    @router.get(
        "/healthz",
        operation_id="health",
        summary="Liveness: the process answers",
        response_model=Health,
        responses={**problem_responses(500)},
    )
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        operation_id="ready",
        summary="Readiness: the database answers, takes writes, and has this release's schema",
        response_model=Health,
        responses={**problem_responses(500, 503)},
    )
    async def readyz(store: Store) -> Health:
        """503 when the database is unreachable, read-only, or not migrated to this release
        (`chathistory db upgrade`); the detail never quotes the driver (the log does)."""
        try:
            await store.ping()
        except UnavailableError as exc:
            log.warning("not ready: %s", exc)
            raise HTTPProblem(503, exc.summary, code="unavailable") from None
        return Health(status="ok")

    return router


__all__ = [
    "ConversationPage",
    "Health",
    "MessageBatch",
    "StrictJSONRequest",
    "build_health_router",
    "build_router",
    "created_location",
    "finish_openapi",
    "problem_route_class",
    "require_json",
    "strict_json_loads",
]
