"""The conversation routes: create, list, get, change and delete a conversation.

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases built
inside the functions from the signatures at runtime.
"""

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from chathistory.http.docs import (
    COMMON_PROBLEMS,
    EXAMPLE_CONVERSATION_ID,
    problem_responses,
)
from chathistory.http.requests import (
    ConversationCreateBody,
    ConversationUpdateBody,
)
from chathistory.http.routes.common import (
    LOCATION_HEADER,
    ConversationId,
    Cursor,
    Guards,
    Limit,
    created_location,
)
from chathistory.schemas import ConversationRead, Page
from chathistory.schemas.lifecycle import Flag
from chathistory.schemas.responses import ConversationPage
from chathistory.store import ChatHistory

_CREATE_EXAMPLES: Final[dict[str, Any]] = {
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
}


_UPDATE_EXAMPLES: Final[dict[str, Any]] = {
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
}


def add_conversation_list_routes(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` ``/{user_id}/conversations``: create a conversation, list them."""
    _add_create_route(router, guards)
    _add_list_route(router, guards)


def _add_create_route(router: APIRouter, guards: Guards) -> None:
    """``POST /{user_id}/conversations``: create a conversation, idempotent with an ``id``."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    OwnerSendingJSON = Annotated[str, Depends(guards.owner_sending_json)]

    @router.post(
        "/{user_id}/conversations",
        operation_id="createConversation",
        summary="Create a conversation",
        status_code=201,
        response_model=ConversationRead,
        responses={
            201: {
                "description": "The conversation was created",
                "headers": {"Location": LOCATION_HEADER},
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
                openapi_examples=_CREATE_EXAMPLES,
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


def _add_list_route(router: APIRouter, guards: Guards) -> None:
    """``GET /{user_id}/conversations``: a page of the user's conversations."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]

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


def add_conversation_routes(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` ``/{user_id}/conversations/{conversation_id}``: get, change and
    delete one conversation."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]
    OwnerSendingJSON = Annotated[str, Depends(guards.owner_sending_json)]

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
                openapi_examples=_UPDATE_EXAMPLES,
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


__all__ = ["add_conversation_list_routes", "add_conversation_routes"]
