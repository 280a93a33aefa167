"""What the OpenAPI document shows beyond the models (``chathistory.schemas``): examples, the
problem responses of each route, and the finishing touches on the generated document."""

from collections.abc import Mapping
from typing import Any, Final

from chathistory.http.problems import (
    PROBLEM_JSON,
    Problem,
    problem_openapi,
    status_phrase,
)

# -- examples -------------------------------------------------------------------------------

EXAMPLE_USER = "user-1"
EXAMPLE_CONVERSATION_ID = "0196a0f4-8a6f-7c2e-9d0b-3f1e2a4b5c6d"
EXAMPLE_MESSAGE_IDS = (
    "0196a0f4-9b10-7d3a-8e21-5a6b7c8d9e0f",
    "0196a0f4-9b10-7d3a-8e21-5a6b7c8d9e10",
)
EXAMPLE_CURSOR = "eyJ2IjoxLCJrIjoibSIsInMiOjIsIm8iOiJhc2MifQ"

CONVERSATION_EXAMPLE: Final[dict[str, Any]] = {
    "object": "conversation",
    "id": EXAMPLE_CONVERSATION_ID,
    "user_id": EXAMPLE_USER,
    "title": "Plan a weekend in Lisbon",
    "metadata": {"source": "web"},
    "created_at": "2026-11-23T17:00:00Z",
    "updated_at": "2026-11-23T17:05:12.345678Z",
    "message_count": 2,
    "archived": False,
    "pinned": False,
    "expires_at": None,
    "current_message_id": EXAMPLE_MESSAGE_IDS[1],
}
MESSAGE_EXAMPLES: Final[list[dict[str, Any]]] = [
    {
        "object": "message",
        "id": EXAMPLE_MESSAGE_IDS[0],
        "conversation_id": EXAMPLE_CONVERSATION_ID,
        "user_id": EXAMPLE_USER,
        "seq": 1,
        "role": "user",
        "content": "Plan a weekend in Lisbon",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {},
        "token_count": None,
        "created_at": "2026-11-23T17:05:12.345678Z",
        "status": "completed",
        "updated_at": "2026-11-23T17:05:12.345678Z",
        "parent_id": None,
        "sibling_count": 1,
        "sibling_index": 1,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    },
    {
        "object": "message",
        "id": EXAMPLE_MESSAGE_IDS[1],
        "conversation_id": EXAMPLE_CONVERSATION_ID,
        "user_id": EXAMPLE_USER,
        "seq": 2,
        "role": "assistant",
        "content": "Day one: Alfama and the castle...",
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {"model": "gpt-4o"},
        "token_count": None,
        "created_at": "2026-11-23T17:05:12.345678Z",
        "status": "completed",
        "updated_at": "2026-11-23T17:05:12.345678Z",
        "parent_id": EXAMPLE_MESSAGE_IDS[0],
        "sibling_count": 1,
        "sibling_index": 1,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    },
]


_PROBLEM_TEXT: Final[Mapping[int, tuple[str, str]]] = {
    400: ("Malformed JSON, or a cursor this list did not issue", "malformed_json"),
    401: ("Missing, malformed, expired or badly signed bearer token", "invalid_token"),
    403: ("The token's subject is not the user of this path", "forbidden"),
    404: ("No such resource for this user (another user's is not found either)", "not_found"),
    409: ("This id is already stored with other content", "conflict"),
    413: ("The request body is larger than the server accepts", "body_too_large"),
    415: ("The request body is not application/json", "unsupported_media_type"),
    422: ("A field breaks a rule of the data model; `errors` names each one", "validation_error"),
    500: ("A bug: the error was logged with the request's `X-Request-ID`", "internal_error"),
    503: ("The database is unavailable; retry after `Retry-After` seconds", "unavailable"),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
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


# Every route under /api/{user_id}: auth, the path (an unroutable user id is a 404), the store,
# and (as on every route) a bug.
COMMON_PROBLEMS: Final = (401, 403, 404, 422, 500, 503)


_MESSAGE_PAGE_EXAMPLE: Final[dict[str, Any]] = {
    "object": "list",
    "data": MESSAGE_EXAMPLES,
    "has_more": False,
    "next_cursor": EXAMPLE_CURSOR,
    "first_id": EXAMPLE_MESSAGE_IDS[0],
    "last_id": EXAMPLE_MESSAGE_IDS[1],
}
_BATCH_EXAMPLE: Final[dict[str, Any]] = {"object": "list", "data": MESSAGE_EXAMPLES}

_ITEM_EXAMPLES: Final[list[dict[str, Any]]] = [
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city": "Lisbon"}',
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "22 °C", "id": "item_0a1b"},
]
_ITEM_PAGE_EXAMPLE: Final[dict[str, Any]] = {
    "object": "list",
    "data": _ITEM_EXAMPLES,
    "has_more": False,
    "first_id": "fc_1",
    "last_id": "item_0a1b",
}

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
    ("updateMessage", "200"): {"example": {**MESSAGE_EXAMPLES[1], "status": "in_progress"}},
    ("getContextWindow", "200"): {
        "example": {
            "object": "context_window",
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
    ("searchMessages", "200"): {
        "example": {
            "object": "list",
            "data": [
                {
                    "object": "search.hit",
                    "message": MESSAGE_EXAMPLES[0],
                    "conversation": {
                        "id": EXAMPLE_CONVERSATION_ID,
                        "title": "Plan a weekend in Lisbon",
                    },
                    "snippet": "Plan a weekend in <mark>Lisbon</mark>",
                }
            ],
            "has_more": False,
            "next_cursor": "eyJ2IjoxLCJrIjoicyIsInQiOjAsImlkIjoiMDAifQ",
        }
    },
    ("addItems", "201"): {"example": _ITEM_PAGE_EXAMPLE},
    ("listItems", "200"): {"example": _ITEM_PAGE_EXAMPLE},
    ("getItem", "200"): {"example": _ITEM_EXAMPLES[0]},
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
