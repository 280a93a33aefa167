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

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases built
inside :func:`build_router` from the signatures at runtime.
"""

import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response

from chathistory.errors import UnavailableError
from chathistory.http.auth import Principal
from chathistory.http.docs import (
    COMMON_PROBLEMS,
    EXAMPLE_CONVERSATION_ID,
    EXAMPLE_CURSOR,
    EXAMPLE_MESSAGE_IDS,
    EXAMPLE_USER,
    finish_openapi,
    problem_responses,
)
from chathistory.http.problems import DEFAULT_RETRY_AFTER_SECONDS, HTTPProblem, log
from chathistory.http.requests import (
    ConversationCreateBody,
    ConversationUpdateBody,
    MessagesBody,
    MessageUpdateBody,
    StrictJSONRequest,
    problem_route_class,
    require_json,
    strict_json_loads,
)
from chathistory.schemas import (
    ContextWindow,
    ConversationRead,
    MessagePage,
    MessageRead,
    Page,
)
from chathistory.schemas.lifecycle import Flag
from chathistory.schemas.responses import AppendAnswer, ConversationPage, Health, MessageBatch
from chathistory.schemas.search import SearchPage
from chathistory.store import MAX_PAGE, ChatHistory

# -- the router --------------------------------------------------------------------------------


_LOCATION_HEADER: Final = {"description": "the new resource's path", "schema": {"type": "string"}}


def created_location(scope: Mapping[str, Any], created_id: uuid.UUID) -> str:
    """``Location`` of what a POST created: the request's path as sent (with any mount's or
    proxy's prefix), then the id; a path, never a host taken from the request's ``Host``."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(scope["path"], safe="/")
    return f"{path.partition('?')[0]}/{created_id}"


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
    Store = Annotated[ChatHistory, Depends(get_store)]

    async def owner(
        user_id: Annotated[
            str,
            Path(
                description="The user who owns the data; must equal the token's `sub` claim.",
                examples=[EXAMPLE_USER],
                json_schema_extra={"minLength": 1, "maxLength": 255},
            ),
        ],
        principal: Annotated[Principal, Depends(authenticate)],
    ) -> str:
        if not principal.owns(user_id):
            raise HTTPProblem(403, "the token's subject is not the user of this path")
        return user_id

    Owner = Annotated[str, Depends(owner)]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")]
    Cursor = Annotated[
        str | None,
        Query(description="The `next_cursor` of the previous page.", examples=[EXAMPLE_CURSOR]),
    ]
    ConversationId = Annotated[
        uuid.UUID, Path(description="A conversation's id.", examples=[EXAMPLE_CONVERSATION_ID])
    ]
    MessageId = Annotated[
        uuid.UUID, Path(description="A message's id.", examples=[EXAMPLE_MESSAGE_IDS[0]])
    ]

    async def owner_sending_json(user_id: Owner, request: Request) -> str:
        # The owner first: a stranger learns nothing from the body's media type or syntax.
        await require_json(request)
        return user_id

    # One dependency for both (route-level ``dependencies`` plus the ``user_id`` parameter
    # would solve the owner's chain twice on every write).
    OwnerSendingJSON = Annotated[str, Depends(owner_sending_json)]

    # -- conversations -------------------------------------------------------------------

    @router.post(
        "/{user_id}/conversations",
        operation_id="createConversation",
        summary="Create a conversation",
        status_code=201,
        response_model=ConversationRead,
        responses={
            201: {
                "description": "The conversation was created",
                "headers": {"Location": _LOCATION_HEADER},
            },
            200: {
                "model": ConversationRead,
                "description": "A conversation with this `id` already existed, identical",
            },
            **problem_responses(400, *COMMON_PROBLEMS, 409, 413, 415),
        },
    )
    async def create_conversation(
        user_id: OwnerSendingJSON,
        store: Store,
        request: Request,
        response: Response,
        body: Annotated[
            ConversationCreateBody,
            Body(
                description="All fields optional; an `id` makes the create idempotent.",
                openapi_examples={
                    "empty": {"summary": "No title yet", "value": {}},
                    "titled": {
                        "summary": "A title and metadata",
                        "value": {
                            "title": "Plan a weekend in Lisbon",
                            "metadata": {"source": "web"},
                        },
                    },
                    "idempotent": {
                        "summary": "With a client-chosen id",
                        "value": {
                            "id": EXAMPLE_CONVERSATION_ID,
                            "title": "Plan a weekend in Lisbon",
                        },
                    },
                },
            ),
        ] = None,
    ) -> ConversationRead:
        """A retried create with the same `id` answers 200 with the stored conversation;
        the same `id` with another title or metadata is a 409."""
        conversation, created = await store.create_conversation_idempotent(
            user_id, {} if body is None else body
        )
        if created:
            response.headers["Location"] = created_location(request.scope, conversation.id)
        response.status_code = 201 if created else 200
        return conversation

    @router.get(
        "/{user_id}/conversations",
        operation_id="listConversations",
        summary="List conversations, most recently updated first",
        response_model=ConversationPage,
        responses={**problem_responses(400, *COMMON_PROBLEMS)},
    )
    async def list_conversations(
        user_id: Owner,
        store: Store,
        limit: Limit = 20,
        cursor: Cursor = None,
        archived: Annotated[
            Flag,
            Query(description="Archived ones only (`true`), the others (`false`), or both."),
        ] = "false",
        pinned: Annotated[
            Flag,
            Query(description="Pinned ones only (`true`), the others (`false`), or both."),
        ] = "any",
    ) -> Page[ConversationRead]:
        """Expired conversations are never listed. A UI shows its pinned section with
        `pinned=true` and the rest with `pinned=false`, each keyset-paged by `cursor`."""
        return await store.list_conversations(
            user_id, limit=limit, cursor=cursor, archived=archived, pinned=pinned
        )

    @router.get(
        "/{user_id}/conversations/{conversation_id}",
        operation_id="getConversation",
        summary="Get a conversation",
        response_model=ConversationRead,
        responses={200: {"description": "The conversation"}, **problem_responses(*COMMON_PROBLEMS)},
    )
    async def get_conversation(
        user_id: Owner, conversation_id: ConversationId, store: Store
    ) -> ConversationRead:
        return await store.get_conversation(user_id, conversation_id)

    @router.patch(
        "/{user_id}/conversations/{conversation_id}",
        operation_id="updateConversation",
        summary="Change a conversation's title or metadata, archive, pin or expire it",
        response_model=ConversationRead,
        responses={
            200: {"description": "The updated conversation"},
            **problem_responses(400, *COMMON_PROBLEMS, 413, 415),
        },
    )
    async def update_conversation(
        user_id: OwnerSendingJSON,
        conversation_id: ConversationId,
        store: Store,
        body: Annotated[
            ConversationUpdateBody,
            Body(
                description="Fields left out stay as they are; `metadata` replaces the whole "
                "object; `title: null` clears the title; `expires_at` must be in the future, "
                "`expires_at: null` clears it. Archiving, pinning and the expiry do not move "
                "`updated_at`.",
                openapi_examples={
                    "title": {"summary": "Rename", "value": {"title": "Lisbon, May"}},
                    "metadata": {
                        "summary": "Replace the metadata",
                        "value": {"metadata": {"source": "web"}},
                    },
                    "pin": {"summary": "Pin it", "value": {"pinned": True}},
                    "archive": {"summary": "Archive it", "value": {"archived": True}},
                    "expire": {
                        "summary": "Make it temporary",
                        "value": {"expires_at": "2030-01-01T00:00:00Z"},
                    },
                },
            ),
        ] = None,
    ) -> ConversationRead:
        changes = {} if body is None else body
        return await store.update_conversation(user_id, conversation_id, changes)

    @router.delete(
        "/{user_id}/conversations/{conversation_id}",
        operation_id="deleteConversation",
        summary="Delete a conversation and its messages",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "Deleted"}, **problem_responses(*COMMON_PROBLEMS)},
    )
    async def delete_conversation(
        user_id: Owner, conversation_id: ConversationId, store: Store
    ) -> Response:
        await store.delete_conversation(user_id, conversation_id)
        return Response(status_code=204)

    # -- messages ------------------------------------------------------------------------

    @router.post(
        "/{user_id}/conversations/{conversation_id}/messages",
        operation_id="addMessages",
        summary="Append one message, or a JSON array of messages atomically",
        status_code=201,
        response_model=AppendAnswer,
        responses={
            201: {
                "description": "Stored: the message, or for an array the list of messages",
                "headers": {"Location": _LOCATION_HEADER},
            },
            200: {
                "model": AppendAnswer,
                "description": "A replay: every message id was already stored identically",
            },
            **problem_responses(400, *COMMON_PROBLEMS, 409, 413, 415),
        },
    )
    async def add_messages(
        user_id: OwnerSendingJSON,
        conversation_id: ConversationId,
        store: Store,
        request: Request,
        response: Response,
        body: Annotated[
            MessagesBody,
            Body(
                description="One message object, or an array stored atomically (all or none). "
                "Messages with an `id` already stored identically are a replay (200).",
                openapi_examples={
                    "user": {
                        "summary": "A user message",
                        "value": {"role": "user", "content": "Plan a weekend in Lisbon"},
                    },
                    "tool_round": {
                        "summary": "A tool call and its result, atomically",
                        "value": [
                            {
                                "role": "assistant",
                                "content": None,
                                "tool_calls": [
                                    {
                                        "id": "call_1",
                                        "type": "function",
                                        "function": {
                                            "name": "weather",
                                            "arguments": '{"city": "Lisbon"}',
                                        },
                                    }
                                ],
                            },
                            {"role": "tool", "tool_call_id": "call_1", "content": "22 °C, sunny"},
                        ],
                    },
                    "idempotent": {
                        "summary": "With a client-chosen id (safe to retry)",
                        "value": {"id": EXAMPLE_MESSAGE_IDS[0], "role": "user", "content": "Hello"},
                    },
                },
            ),
        ],
    ) -> MessageRead | MessageBatch:
        single = isinstance(body, Mapping)
        stored, created = await store.add_messages_idempotent(
            user_id, conversation_id, [body] if single else body
        )
        if created and single:  # a batch's resource is the list it joined (RFC 9110 15.3.2)
            response.headers["Location"] = created_location(request.scope, stored[0].id)
        response.status_code = 201 if created else 200
        return stored[0] if single else MessageBatch(data=stored)

    @router.get(
        "/{user_id}/conversations/{conversation_id}/messages",
        operation_id="listMessages",
        summary="List a conversation's messages by position",
        response_model=MessagePage,
        responses={
            200: {"description": "A page of messages"},
            **problem_responses(400, *COMMON_PROBLEMS),
        },
    )
    async def list_messages(
        user_id: Owner,
        conversation_id: ConversationId,
        store: Store,
        limit: Limit = MAX_PAGE,
        order: Annotated[
            Literal["asc", "desc"], Query(description="By position: oldest or newest first.")
        ] = "asc",
        cursor: Cursor = None,
        after: Annotated[
            uuid.UUID | None,
            Query(description="The messages that follow this message id, in list order."),
        ] = None,
        before: Annotated[
            uuid.UUID | None,
            Query(description="The messages just preceding this message id, in list order."),
        ] = None,
        branch: Annotated[
            Literal["active", "all"],
            Query(
                description="The active branch (root to `current_message_id`), or every "
                "message of every branch, by position."
            ),
        ] = "active",
    ) -> MessagePage:
        """Continue with `cursor` (the previous page's `next_cursor`, also present on an empty
        page so a client can poll for new messages) or OpenAI-style with `after` / `before`."""
        return await store.list_messages(
            user_id,
            conversation_id,
            limit=limit,
            order=order,
            cursor=cursor,
            after=after,
            before=before,
            branch=branch,
        )

    @router.get(
        "/{user_id}/conversations/{conversation_id}/messages/{message_id}",
        operation_id="getMessage",
        summary="Get a message",
        response_model=MessageRead,
        responses={200: {"description": "The message"}, **problem_responses(*COMMON_PROBLEMS)},
    )
    async def get_message(
        user_id: Owner, conversation_id: ConversationId, message_id: MessageId, store: Store
    ) -> MessageRead:
        return await store.get_message(user_id, conversation_id, message_id)

    @router.patch(
        "/{user_id}/conversations/{conversation_id}/messages/{message_id}",
        operation_id="updateMessage",
        summary="Update an in-progress assistant message as it streams",
        response_model=MessageRead,
        responses={
            200: {"description": "The updated message"},
            **problem_responses(400, *COMMON_PROBLEMS, 409, 413, 415),
        },
    )
    async def update_message(
        user_id: OwnerSendingJSON,
        conversation_id: ConversationId,
        message_id: MessageId,
        store: Store,
        body: Annotated[
            MessageUpdateBody,
            Body(
                description="Only while the message is `in_progress` (409 once finished). "
                "`append_text` adds to the end of the text; `content` and `tool_calls` "
                "replace; `status: completed` or `incomplete` finishes the message.",
                openapi_examples={
                    "append": {"summary": "Stream more text", "value": {"append_text": " Day"}},
                    "finish": {"summary": "Finish it", "value": {"status": "completed"}},
                    "abort": {
                        "summary": "The stream was cut off",
                        "value": {"append_text": "...", "status": "incomplete"},
                    },
                },
            ),
        ],
    ) -> MessageRead:
        return await store.update_message(user_id, conversation_id, message_id, body)

    @router.get(
        "/{user_id}/conversations/{conversation_id}/context",
        operation_id="getContextWindow",
        summary="The messages to send to an LLM within a token budget",
        response_model=ContextWindow,
        responses={
            200: {"description": "The context window"},
            **problem_responses(*COMMON_PROBLEMS),
        },
    )
    async def get_context_window(
        user_id: Owner,
        conversation_id: ConversationId,
        store: Store,
        max_tokens: Annotated[
            int, Query(ge=1, le=10_000_000, description="The token budget.", examples=[4000])
        ],
        model: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=128,
                description="Count with this model's encoding (default: the store's).",
                examples=["gpt-4o"],
            ),
        ] = None,
    ) -> ContextWindow:
        """The leading system messages, then the newest messages that fit, oldest first, in
        OpenAI chat format; tool calls and their results are never split."""
        return await store.get_context_window(user_id, conversation_id, max_tokens, model)

    # -- the user --------------------------------------------------------------------------

    @router.delete(
        "/{user_id}",
        operation_id="deleteUserData",
        summary="Erase every conversation and message of the user",
        status_code=204,
        response_class=Response,
        responses={
            204: {"description": "Erased (also when there was nothing)"},
            **problem_responses(*COMMON_PROBLEMS),
        },
    )
    async def delete_user_data(user_id: Owner, store: Store) -> Response:
        await store.delete_user_data(user_id)
        return Response(status_code=204)

    # -- search --------------------------------------------------------------------------

    @router.get(
        "/{user_id}/search",
        operation_id="searchMessages",
        summary="Search the user's messages, newest first",
        response_model=SearchPage,
        responses={
            200: {"description": "A page of hits"},
            **problem_responses(400, *COMMON_PROBLEMS),
        },
    )
    async def search_messages(
        user_id: Owner,
        store: Store,
        q: Annotated[
            str,
            Query(
                description='Words that must all occur (whole words, any case), "a phrase", '
                "-excluded, a OR b.",
                examples=['lisbon "pastel de nata" -hotel'],
            ),
        ],
        conversation_id: Annotated[
            uuid.UUID | None, Query(description="Only this conversation's messages.")
        ] = None,
        role: Annotated[
            Literal["system", "user", "assistant", "tool"] | None,
            Query(description="Only messages of this role."),
        ] = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> SearchPage:
        """Hits carry the message, its conversation's id and title, and an HTML-safe snippet
        with the matched words in `<mark>`."""
        return await store.search_messages(
            user_id, q, conversation_id=conversation_id, role=role, limit=limit, cursor=cursor
        )

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
