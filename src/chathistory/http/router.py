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

import json
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, PlainValidator

from chathistory.http.auth import Principal
from chathistory.http.problems import (
    DEFAULT_RETRY_AFTER_SECONDS,
    PROBLEM_JSON,
    HTTPProblem,
    Problem,
    problem_from_exception,
    problem_openapi,
    problem_response,
    status_phrase,
)
from chathistory.schemas import (
    ContextWindow,
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    MessageCreate,
    MessagePage,
    MessageRead,
    Page,
)
from chathistory.store import MAX_PAGE, ChatHistory

# -- request bodies ---------------------------------------------------------------------------


def _as_sent(value: Any) -> Any:
    if isinstance(value, _MalformedJSON):  # only if a route forgot require_json
        raise ValueError("the body is not valid JSON")
    return value


# Any JSON at all, passed on untouched, documented in OpenAPI as the store's input model: the
# store validates it, so a bad field is reported once, by the rules that own it.
ConversationCreateBody = Annotated[
    Any, PlainValidator(_as_sent, json_schema_input_type=ConversationCreate)
]
ConversationUpdateBody = Annotated[
    Any, PlainValidator(_as_sent, json_schema_input_type=ConversationUpdate)
]
MessagesBody = Annotated[
    Any, PlainValidator(_as_sent, json_schema_input_type=MessageCreate | list[MessageCreate])
]


MAX_JSON_DEPTH: Final = 64


def strict_json_loads(body: bytes) -> Any:
    """RFC 8259 JSON: UTF-8, no ``NaN`` / ``Infinity``, nested at most :data:`MAX_JSON_DEPTH`
    arrays and objects deep (a chat message needs a handful); any failure is a
    ``JSONDecodeError``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(exc.msg, "", exc.pos) from None
    except RecursionError:
        value = _TOO_DEEP
    except ValueError as exc:  # NaN / Infinity, or an integer too long to convert
        raise json.JSONDecodeError(str(exc), "", 0) from None
    if value is _TOO_DEEP or _depth(value) > MAX_JSON_DEPTH:
        raise json.JSONDecodeError(
            f"arrays and objects are nested more than {MAX_JSON_DEPTH} deep", "", 0
        )
    return value


_TOO_DEEP: Final = object()


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (without recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > MAX_JSON_DEPTH:
                break
        stack.extend((child, level) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class _MalformedJSON:
    """What a body that is not JSON parses to, so the error is reported after authentication
    (by :func:`require_json`) rather than while FastAPI reads the body."""

    def __init__(self, error: json.JSONDecodeError) -> None:
        self.error = error


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`strict_json_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json: Any = strict_json_loads(await self.body())
            except json.JSONDecodeError as exc:
                self._json = _MalformedJSON(exc)
        return self._json


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def require_json(request: Request) -> None:
    """A body, when there is one, must be sent as ``application/json`` (else 415) and be
    JSON (else 400). Runs after authentication, so a stranger learns nothing from it."""
    if not await request.body():
        return
    if not _is_json(request.headers.get("content-type", "")):
        accepts = "Accept-Patch" if request.method == "PATCH" else "Accept-Post"
        raise HTTPProblem(
            415,
            "the request body must be JSON, sent with Content-Type: application/json",
            headers={accepts: "application/json"},
        )
    parsed = await request.json()
    if isinstance(parsed, _MalformedJSON):
        raise HTTPProblem(
            400, f"the body is not valid JSON: {parsed.error.msg}", code="malformed_json"
        )


# -- problem rendering for the routes ---------------------------------------------------------


def problem_route_class(
    *, retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
) -> type[APIRoute]:
    """A route class that parses JSON strictly and answers errors as problems by itself, so a
    host application that mounts the router gets problem responses without installing
    exception handlers."""

    class ProblemRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(StrictJSONRequest(request.scope, request.receive))
                except Exception as exc:
                    problem = problem_from_exception(exc)
                    if problem is None:
                        raise
                    return problem_response(problem, retry_after_seconds=retry_after_seconds)

            return handle

    return ProblemRoute


# -- response models and examples -------------------------------------------------------------

_USER = "user-1"
_CONVERSATION_ID = "0196a0f4-8a6f-7c2e-9d0b-3f1e2a4b5c6d"
_MESSAGE_IDS = (
    "0196a0f4-9b10-7d3a-8e21-5a6b7c8d9e0f",
    "0196a0f4-9b10-7d3a-8e21-5a6b7c8d9e10",
)
_CURSOR = "eyJ2IjoxLCJrIjoibSIsInMiOjIsIm8iOiJhc2MifQ"

CONVERSATION_EXAMPLE: Final[dict[str, Any]] = {
    "object": "conversation",
    "id": _CONVERSATION_ID,
    "user_id": _USER,
    "title": "Plan a weekend in Lisbon",
    "metadata": {"source": "web"},
    "created_at": "2026-11-23T17:00:00Z",
    "updated_at": "2026-11-23T17:05:12.345678Z",
    "message_count": 2,
}
MESSAGE_EXAMPLES: Final[list[dict[str, Any]]] = [
    {
        "object": "message",
        "id": _MESSAGE_IDS[0],
        "conversation_id": _CONVERSATION_ID,
        "user_id": _USER,
        "seq": 1,
        "role": "user",
        "content": "Plan a weekend in Lisbon",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {},
        "token_count": None,
        "created_at": "2026-11-23T17:05:12.345678Z",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    },
    {
        "object": "message",
        "id": _MESSAGE_IDS[1],
        "conversation_id": _CONVERSATION_ID,
        "user_id": _USER,
        "seq": 2,
        "role": "assistant",
        "content": "Day one: Alfama and the castle...",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {"model": "gpt-4o"},
        "token_count": None,
        "created_at": "2026-11-23T17:05:12.345678Z",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    },
]


class ConversationPage(Page[ConversationRead]):
    """A page of conversations, most recently updated first."""


class MessageBatch(BaseModel):
    """The messages stored by one append of a JSON array, in the order sent."""

    object: Literal["list"] = "list"
    data: list[MessageRead]


class Health(BaseModel):
    status: Literal["ok"] = Field(examples=["ok"])


_PROBLEM_TEXT: Final[Mapping[int, tuple[str, str]]] = {
    400: ("Malformed JSON, or a cursor this list did not issue", "malformed_json"),
    401: ("Missing, malformed, expired or badly signed bearer token", "invalid_token"),
    403: ("The token's subject is not the user of this path", "forbidden"),
    404: ("No such resource for this user (another user's is not found either)", "not_found"),
    409: ("This id is already stored with other content", "conflict"),
    413: ("The request body is larger than the server accepts", "body_too_large"),
    415: ("The request body is not application/json", "unsupported_media_type"),
    422: ("A field breaks a rule of the data model; `errors` names each one", "validation_error"),
    503: ("The database is unavailable; retry after `Retry-After` seconds", "unavailable"),
}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, code = _PROBLEM_TEXT[status]
        example: dict[str, Any] = {
            "type": "about:blank",
            "title": status_phrase(status),
            "status": status,
            "detail": description,
            "code": code,
        }
        if status == 422:
            example["errors"] = [
                {
                    "loc": ["role"],
                    "msg": "Input should be 'system', 'user', 'assistant' or 'tool'",
                    "type": "literal_error",
                }
            ]
        response: dict[str, Any] = {
            "model": Problem,
            "description": description,
            "content": {PROBLEM_JSON: {"example": example}},
        }
        if status == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": "the Bearer challenge",
                    "schema": {"type": "string"},
                }
            }
        responses[status] = response
    return responses


# Every route under /api/{user_id}: auth, the path (an unroutable user id is a 404), the store.
_COMMON: Final = (401, 403, 404, 422, 503)


_MESSAGE_PAGE_EXAMPLE: Final[dict[str, Any]] = {
    "object": "list",
    "data": MESSAGE_EXAMPLES,
    "has_more": False,
    "next_cursor": _CURSOR,
    "first_id": _MESSAGE_IDS[0],
    "last_id": _MESSAGE_IDS[1],
}
_BATCH_EXAMPLE: Final[dict[str, Any]] = {"object": "list", "data": MESSAGE_EXAMPLES}

# Success examples by (operationId, status). They are set into the finished document by
# finish_openapi: FastAPI drops every null while building it, and a message's nulls matter.
RESPONSE_EXAMPLES: Final[Mapping[tuple[str, str], dict[str, Any]]] = {
    ("createConversation", "201"): {"example": CONVERSATION_EXAMPLE},
    ("createConversation", "200"): {"example": CONVERSATION_EXAMPLE},
    ("listConversations", "200"): {
        "example": {
            "object": "list",
            "data": [CONVERSATION_EXAMPLE],
            "has_more": False,
            "next_cursor": "eyJ2IjoxLCJrIjoiYyIsInQiOjAsImlkIjoiMDAifQ",
        }
    },
    ("getConversation", "200"): {"example": CONVERSATION_EXAMPLE},
    ("updateConversation", "200"): {"example": CONVERSATION_EXAMPLE},
    ("addMessages", "201"): {
        "examples": {
            "one": {"summary": "One message", "value": MESSAGE_EXAMPLES[0]},
            "batch": {"summary": "An array of messages", "value": _BATCH_EXAMPLE},
        }
    },
    ("addMessages", "200"): {
        "examples": {
            "one": {"summary": "One message, replayed", "value": MESSAGE_EXAMPLES[0]},
            "batch": {"summary": "An array, replayed", "value": _BATCH_EXAMPLE},
        }
    },
    ("listMessages", "200"): {"example": _MESSAGE_PAGE_EXAMPLE},
    ("getMessage", "200"): {"example": MESSAGE_EXAMPLES[0]},
    ("getContextWindow", "200"): {
        "example": {
            "messages": [
                {"role": "system", "content": "You are a travel planner."},
                {"role": "user", "content": "Plan a weekend in Lisbon"},
            ],
            "token_count": 22,
            "max_tokens": 4000,
            "truncated": False,
            "encoding": "o200k_base",
            "exact": True,
        }
    },
    ("health", "200"): {"example": {"status": "ok"}},
    ("ready", "200"): {"example": {"status": "ok"}},
}


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Complete an OpenAPI document holding these routes, in place: success examples, and
    error responses as ``application/problem+json`` (see :func:`problem_openapi`)."""
    problem_openapi(schema)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                example = RESPONSE_EXAMPLES.get((operation.get("operationId", ""), str(status)))
                media = response.get("content", {}).get("application/json")
                if example is not None and media is not None:
                    media.update(example)
    return schema


# -- the router --------------------------------------------------------------------------------


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
                examples=[_USER],
                json_schema_extra={"minLength": 1, "maxLength": 255},
            ),
        ],
        principal: Annotated[Principal, Depends(authenticate)],
    ) -> str:
        if principal.subject != user_id:
            raise HTTPProblem(403, "the token's subject is not the user of this path")
        return user_id

    Owner = Annotated[str, Depends(owner)]
    ConversationId = Annotated[
        uuid.UUID, Path(description="A conversation's id.", examples=[_CONVERSATION_ID])
    ]
    MessageId = Annotated[
        uuid.UUID, Path(description="A message's id.", examples=[_MESSAGE_IDS[0]])
    ]
    writes_json = [Depends(owner), Depends(require_json)]

    # -- conversations -------------------------------------------------------------------

    @router.post(
        "/{user_id}/conversations",
        operation_id="createConversation",
        summary="Create a conversation",
        status_code=201,
        response_model=ConversationRead,
        dependencies=writes_json,
        responses={
            201: {"description": "The conversation was created"},
            200: {
                "model": ConversationRead,
                "description": "A conversation with this `id` already existed, identical",
            },
            **_problems(400, *_COMMON, 409, 413, 415),
        },
    )
    async def create_conversation(
        user_id: Owner,
        store: Store,
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
                        "value": {"id": _CONVERSATION_ID, "title": "Plan a weekend in Lisbon"},
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
        response.status_code = 201 if created else 200
        return conversation

    @router.get(
        "/{user_id}/conversations",
        operation_id="listConversations",
        summary="List conversations, most recently updated first",
        response_model=ConversationPage,
        responses={**_problems(400, *_COMMON)},
    )
    async def list_conversations(
        user_id: Owner,
        store: Store,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 20,
        cursor: Annotated[
            str | None,
            Query(description="The `next_cursor` of the previous page.", examples=[_CURSOR]),
        ] = None,
    ) -> Page[ConversationRead]:
        return await store.list_conversations(user_id, limit=limit, cursor=cursor)

    @router.get(
        "/{user_id}/conversations/{conversation_id}",
        operation_id="getConversation",
        summary="Get a conversation",
        response_model=ConversationRead,
        responses={200: {"description": "The conversation"}, **_problems(*_COMMON)},
    )
    async def get_conversation(
        user_id: Owner, conversation_id: ConversationId, store: Store
    ) -> ConversationRead:
        return await store.get_conversation(user_id, conversation_id)

    @router.patch(
        "/{user_id}/conversations/{conversation_id}",
        operation_id="updateConversation",
        summary="Change a conversation's title or metadata",
        response_model=ConversationRead,
        dependencies=writes_json,
        responses={
            200: {"description": "The updated conversation"},
            **_problems(400, *_COMMON, 413, 415),
        },
    )
    async def update_conversation(
        user_id: Owner,
        conversation_id: ConversationId,
        store: Store,
        body: Annotated[
            ConversationUpdateBody,
            Body(
                description="Fields left out stay as they are; `metadata` replaces the whole "
                "object; `title: null` clears the title.",
                openapi_examples={
                    "title": {"summary": "Rename", "value": {"title": "Lisbon, May"}},
                    "metadata": {
                        "summary": "Replace the metadata",
                        "value": {"metadata": {"pinned": "true"}},
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
        responses={204: {"description": "Deleted"}, **_problems(*_COMMON)},
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
        response_model=MessageRead | MessageBatch,
        dependencies=writes_json,
        responses={
            201: {"description": "Stored: the message, or for an array the list of messages"},
            200: {
                "model": MessageRead | MessageBatch,
                "description": "A replay: every message id was already stored identically",
            },
            **_problems(400, *_COMMON, 409, 413, 415),
        },
    )
    async def add_messages(
        user_id: Owner,
        conversation_id: ConversationId,
        store: Store,
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
                        "value": {"id": _MESSAGE_IDS[0], "role": "user", "content": "Hello"},
                    },
                },
            ),
        ],
    ) -> MessageRead | MessageBatch:
        single = isinstance(body, Mapping)
        stored, created = await store.add_messages_idempotent(
            user_id, conversation_id, [body] if single else body
        )
        response.status_code = 201 if created else 200
        return stored[0] if single else MessageBatch(data=stored)

    @router.get(
        "/{user_id}/conversations/{conversation_id}/messages",
        operation_id="listMessages",
        summary="List a conversation's messages by position",
        response_model=MessagePage,
        responses={
            200: {"description": "A page of messages"},
            **_problems(400, *_COMMON),
        },
    )
    async def list_messages(
        user_id: Owner,
        conversation_id: ConversationId,
        store: Store,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = MAX_PAGE,
        order: Annotated[
            Literal["asc", "desc"], Query(description="By position: oldest or newest first.")
        ] = "asc",
        cursor: Annotated[
            str | None,
            Query(description="The `next_cursor` of the previous page.", examples=[_CURSOR]),
        ] = None,
        after: Annotated[
            uuid.UUID | None,
            Query(description="The messages that follow this message id, in list order."),
        ] = None,
        before: Annotated[
            uuid.UUID | None,
            Query(description="The messages just preceding this message id, in list order."),
        ] = None,
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
        )

    @router.get(
        "/{user_id}/conversations/{conversation_id}/messages/{message_id}",
        operation_id="getMessage",
        summary="Get a message",
        response_model=MessageRead,
        responses={200: {"description": "The message"}, **_problems(*_COMMON)},
    )
    async def get_message(
        user_id: Owner, conversation_id: ConversationId, message_id: MessageId, store: Store
    ) -> MessageRead:
        return await store.get_message(user_id, conversation_id, message_id)

    @router.get(
        "/{user_id}/conversations/{conversation_id}/context",
        operation_id="getContextWindow",
        summary="The messages to send to an LLM within a token budget",
        response_model=ContextWindow,
        responses={200: {"description": "The context window"}, **_problems(*_COMMON)},
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
            **_problems(*_COMMON),
        },
    )
    async def delete_user_data(user_id: Owner, store: Store) -> Response:
        await store.delete_user_data(user_id)
        return Response(status_code=204)

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
    )
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        operation_id="ready",
        summary="Readiness: the database answers",
        response_model=Health,
        responses={**_problems(503)},
    )
    async def readyz(store: Store) -> Health:
        await store.ping()
        return Health(status="ok")

    return router


__all__ = [
    "ConversationPage",
    "Health",
    "MessageBatch",
    "StrictJSONRequest",
    "build_health_router",
    "build_router",
    "finish_openapi",
    "problem_route_class",
    "require_json",
    "strict_json_loads",
]
