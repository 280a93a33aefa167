"""The routes over all of a user's data: erase it, search it.

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases built
inside the functions from the signatures at runtime.
"""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from chathistory.http.docs import (
    COMMON_PROBLEMS,
    problem_responses,
)
from chathistory.http.routes.common import (
    Cursor,
    Guards,
    Limit,
)
from chathistory.schemas.search import SearchPage
from chathistory.store import ChatHistory


def add_user_routes(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` ``DELETE /{user_id}`` (erase everything) and
    ``/{user_id}/search``, in this order."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]

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


__all__ = ["add_user_routes"]
