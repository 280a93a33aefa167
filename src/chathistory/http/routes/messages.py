"""The message routes: append, list, get and update messages, and the context window.

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases built
inside the functions from the signatures at runtime.
"""

import uuid
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from chathistory.http.answers import AnswerResponse, add_messages_answer, list_messages_answer
from chathistory.http.docs import (
    COMMON_PROBLEMS,
    EXAMPLE_MESSAGE_IDS,
    problem_responses,
)
from chathistory.http.requests import (
    MessagesBody,
    MessageUpdateBody,
)
from chathistory.http.routes.common import (
    LOCATION_HEADER,
    ConversationId,
    Cursor,
    Guards,
    Limit,
    MessageId,
)
from chathistory.schemas import ContextWindow, MessagePage, MessageRead
from chathistory.schemas.responses import AppendAnswer
from chathistory.store import MAX_PAGE, ChatHistory

_APPEND_EXAMPLES: Final[dict[str, Any]] = {
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
}


_UPDATE_EXAMPLES: Final[dict[str, Any]] = {
    "append": {"summary": "Stream more text", "value": {"append_text": " Day"}},
    "finish": {"summary": "Finish it", "value": {"status": "completed"}},
    "abort": {
        "summary": "The stream was cut off",
        "value": {"append_text": "...", "status": "incomplete"},
    },
}


def add_message_list_routes(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` ``.../{conversation_id}/messages``: append messages, list them."""
    _add_append_route(router, guards)
    _add_list_route(router, guards)


def _add_append_route(router: APIRouter, guards: Guards) -> None:
    """``POST .../{conversation_id}/messages``: append one message or an array atomically."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    OwnerSendingJSON = Annotated[str, Depends(guards.owner_sending_json)]

    @router.post(
        "/{user_id}/conversations/{conversation_id}/messages",
        operation_id="addMessages",
        summary="Append one message, or a JSON array of messages atomically",
        status_code=201,
        response_model=AppendAnswer,
        responses={
            201: {
                "description": "Stored: the message, or for an array the list of messages",
                "headers": {"Location": LOCATION_HEADER},
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
        body: Annotated[
            MessagesBody,
            Body(
                description="One message object, or an array stored atomically (all or none). "
                "Messages with an `id` already stored identically are a replay (200).",
                openapi_examples=_APPEND_EXAMPLES,
            ),
        ],
    ) -> Response:
        return AnswerResponse(
            await add_messages_answer(store, request.scope, user_id, conversation_id, body)
        )


def _add_list_route(router: APIRouter, guards: Guards) -> None:
    """``GET .../{conversation_id}/messages``: a page of the conversation's messages."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]

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
    ) -> Response:
        """Continue with `cursor` (the previous page's `next_cursor`, also present on an empty
        page so a client can poll for new messages) or OpenAI-style with `after` / `before`."""
        answer = await list_messages_answer(
            store,
            user_id,
            conversation_id,
            limit=limit,
            order=order,
            cursor=cursor,
            after=after,
            before=before,
            branch=branch,
        )
        return AnswerResponse(answer)


def add_message_routes(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` ``.../messages/{message_id}``: get one message, update it as it
    streams."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]
    OwnerSendingJSON = Annotated[str, Depends(guards.owner_sending_json)]

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
                openapi_examples=_UPDATE_EXAMPLES,
            ),
        ],
    ) -> MessageRead:
        return await store.update_message(user_id, conversation_id, message_id, body)


def add_context_route(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` the route of a conversation's context window for an LLM."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]

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


__all__ = ["add_context_route", "add_message_list_routes", "add_message_routes"]
