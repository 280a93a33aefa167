"""What the route families share: the owner check, the parameters and ``Location``.

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases from the
signatures at runtime.
"""

import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, NamedTuple
from urllib.parse import quote

from fastapi import Depends, Path, Query, Request

from chathistory.http.auth import Principal
from chathistory.http.docs import (
    EXAMPLE_CONVERSATION_ID,
    EXAMPLE_CURSOR,
    EXAMPLE_MESSAGE_IDS,
    EXAMPLE_USER,
)
from chathistory.http.problems import HTTPProblem
from chathistory.http.requests import require_json
from chathistory.store import MAX_PAGE

LOCATION_HEADER: Final = {"description": "the new resource's path", "schema": {"type": "string"}}

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


def created_location(scope: Mapping[str, Any], created_id: uuid.UUID) -> str:
    """``Location`` of what a POST created: the request's path as sent (with any mount's or
    proxy's prefix), then the id; a path, never a host taken from the request's ``Host``."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(scope["path"], safe="/")
    return f"{path.partition('?')[0]}/{created_id}"


class Guards(NamedTuple):
    """The dependencies every route of one :func:`~chathistory.http.router.build_router` uses:
    each family makes its ``Annotated`` aliases of them (``Depends(guards.owner)`` ...)."""

    get_store: Callable[..., Any]
    """Returns the :class:`~chathistory.store.ChatHistory` to use."""
    owner: Callable[..., Any]
    """Returns the ``{user_id}`` of the path once the caller proved to be that user (else 403)."""
    owner_sending_json: Callable[..., Any]
    """:attr:`owner`, then a JSON body required (415 otherwise): the writes' one dependency."""


def make_guards(*, get_store: Callable[..., Any], authenticate: Callable[..., Any]) -> Guards:
    """The :class:`Guards` of a router: ``authenticate`` returns the caller's
    :class:`~chathistory.http.auth.Principal`, which must own the path's ``{user_id}``."""

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

    async def owner_sending_json(user_id: Owner, request: Request) -> str:
        # The owner first: a stranger learns nothing from the body's media type or syntax.
        await require_json(request)
        return user_id

    # One dependency for both (route-level ``dependencies`` plus the ``user_id`` parameter
    # would solve the owner's chain twice on every write).
    return Guards(get_store=get_store, owner=owner, owner_sending_json=owner_sending_json)


__all__ = [
    "LOCATION_HEADER",
    "ConversationId",
    "Cursor",
    "Guards",
    "Limit",
    "MessageId",
    "created_location",
    "make_guards",
]
