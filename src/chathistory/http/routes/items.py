"""The item routes (SPEC 15): add items, list them, get one; the store does the work.

No ``from __future__ import annotations`` here: FastAPI reads the dependency aliases built
inside the functions from the signatures at runtime.
"""

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Path, Query

from chathistory.errors import ValidationError
from chathistory.http.docs import COMMON_PROBLEMS, problem_responses
from chathistory.http.requests import ItemsBody
from chathistory.http.routes.common import ConversationId, Guards, Limit
from chathistory.schemas.items import ItemPage
from chathistory.store import ChatHistory

_ADD_EXAMPLES: Final[dict[str, Any]] = {
    "turn": {
        "summary": "One model response: reasoning, a function call and its output",
        "value": {
            "items": [
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "encrypted_content": "gAAAA...",
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "weather",
                    "arguments": '{"city": "Lisbon"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "22 °C"},
            ]
        },
    },
    "short": {
        "summary": "A user message in the short form",
        "value": {"items": [{"role": "user", "content": "Plan a weekend in Lisbon"}]},
    },
}
ItemId = Annotated[
    str, Path(min_length=1, max_length=255, description="An item's id.", examples=["fc_1"])
]


def add_item_routes(router: APIRouter, guards: Guards) -> None:
    """Add to ``router`` ``.../{conversation_id}/items`` and ``.../items/{item_id}``."""
    Store = Annotated[ChatHistory, Depends(guards.get_store)]
    Owner = Annotated[str, Depends(guards.owner)]
    OwnerSendingJSON = Annotated[str, Depends(guards.owner_sending_json)]

    @router.post(
        "/{user_id}/conversations/{conversation_id}/items",
        operation_id="addItems",
        summary="Add items of OpenAI's item format atomically",
        status_code=201,
        response_model=ItemPage,
        responses={
            201: {"description": "The items as stored (each with its id)"},
            **problem_responses(400, *COMMON_PROBLEMS, 409, 413, 415),
        },
    )
    async def add_items(
        user_id: OwnerSendingJSON,
        conversation_id: ConversationId,
        store: Store,
        body: Annotated[
            ItemsBody,
            Body(
                description="Items stored whole, in order, all or none. Items whose `id` is "
                "already stored with the same item are returned as stored (nothing added); "
                "with a different item, 409.",
                openapi_examples=_ADD_EXAMPLES,
            ),
        ],
    ) -> ItemPage:
        if not isinstance(body, dict) or set(body) != {"items"}:
            raise ValidationError("must be an object with 'items' only", loc=("body",))
        stored = await store.add_items(user_id, conversation_id, body["items"])
        return ItemPage(
            data=stored, has_more=False, first_id=stored[0]["id"], last_id=stored[-1]["id"]
        )

    @router.get(
        "/{user_id}/conversations/{conversation_id}/items",
        operation_id="listItems",
        summary="List a conversation's items (messages appended the chat way as theirs)",
        response_model=ItemPage,
        responses={
            200: {"description": "A page of items"},
            **problem_responses(400, *COMMON_PROBLEMS),
        },
    )
    async def list_items(
        user_id: Owner,
        conversation_id: ConversationId,
        store: Store,
        limit: Limit = 20,
        order: Annotated[
            Literal["asc", "desc"], Query(description="By position: oldest or newest first.")
        ] = "asc",
        after: Annotated[
            str | None,
            Query(max_length=255, description="The items that follow this item id."),
        ] = None,
    ) -> ItemPage:
        return await store.list_items(
            user_id, conversation_id, limit=limit, after=after, order=order
        )

    @router.get(
        "/{user_id}/conversations/{conversation_id}/items/{item_id}",
        operation_id="getItem",
        summary="Get an item",
        response_model=dict[str, Any],
        responses={200: {"description": "The item"}, **problem_responses(*COMMON_PROBLEMS)},
    )
    async def get_item(
        user_id: Owner, conversation_id: ConversationId, item_id: ItemId, store: Store
    ) -> dict[str, Any]:
        return await store.get_item(user_id, conversation_id, item_id)


__all__ = ["add_item_routes"]
