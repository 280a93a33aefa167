"""The answers of the two hot routes, each built by one function: the store call, then the
status, headers and body bytes of the HTTP answer.

:func:`list_messages_answer` (``GET .../messages``) and :func:`add_messages_answer`
(``POST .../messages``) are what the routes of :mod:`chathistory.http.routes.messages` return
(as an :class:`AnswerResponse`) and what :class:`~chathistory.http.middleware.FastLane` sends
as it is, so both paths answer with the same bytes by construction. What the store raises is
left to the caller, which renders it with
:func:`~chathistory.http.problems.problem_from_exception` and
:func:`~chathistory.http.problems.problem_response` (the route class and the lane alike).
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from typing import Any, Final, NamedTuple

from pydantic import TypeAdapter
from starlette.responses import Response

from chathistory.http.routes.common import created_location
from chathistory.schemas import MessagePage
from chathistory.schemas.responses import AppendAnswer, MessageBatch
from chathistory.store import MAX_PAGE, ChatHistory
from chathistory.store.reading import Branch, Order

# The routes' ``response_model``s, serialized by pydantic (``dump_json``, by alias).
_PAGE: Final = TypeAdapter(MessagePage)
_APPEND: Final = TypeAdapter(AppendAnswer)
_JSON: Final = (b"content-type", b"application/json")


class Answer(NamedTuple):
    """An HTTP answer, ready to send: ``headers`` as ASGI sends them (``content-length``,
    ``content-type``, then any others)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class AnswerResponse(Response):
    """An :class:`Answer` as the Starlette response a route returns (FastAPI sends a returned
    response as it is: the route's ``response_model`` only documents it)."""

    def __init__(self, answer: Answer) -> None:
        self.status_code = answer.status
        self.raw_headers = answer.headers
        self.body = answer.body
        self.background = None


def _json_answer(status: int, body: bytes, *extra: tuple[bytes, bytes]) -> Answer:
    length = (b"content-length", str(len(body)).encode("latin-1"))
    return Answer(status, [length, _JSON, *extra], body)


async def list_messages_answer(
    store: ChatHistory,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    limit: int = MAX_PAGE,
    order: Order = "asc",
    cursor: str | None = None,
    after: uuid.UUID | None = None,
    before: uuid.UUID | None = None,
    branch: Branch = "active",
) -> Answer:
    """``listMessages``: a page of the conversation's messages, 200."""
    page = await store.list_messages(
        user_id,
        conversation_id,
        limit=limit,
        order=order,
        cursor=cursor,
        after=after,
        before=before,
        branch=branch,
    )
    return _json_answer(200, _PAGE.dump_json(page, by_alias=True))


async def add_messages_answer(
    store: ChatHistory,
    scope: MutableMapping[str, Any],
    user_id: str,
    conversation_id: uuid.UUID,
    sent: Any,
) -> Answer:
    """``addMessages``: ``sent`` (the JSON body: one message object, or an array stored
    atomically) appended; 201 with the stored message (and its path as ``Location``) or the
    batch, 200 for a replay of messages already stored identically. ``scope`` is the
    request's, for ``Location``."""
    single = isinstance(sent, dict)  # parsed JSON: an object is a dict
    stored, created = await store.add_messages_idempotent(
        user_id, conversation_id, [sent] if single else sent
    )
    body = _APPEND.dump_json(stored[0] if single else MessageBatch(data=stored), by_alias=True)
    if created and single:  # a batch's resource is the list it joined (RFC 9110 15.3.2)
        location = created_location(scope, stored[0].id).encode("latin-1")
        return _json_answer(201, body, (b"location", location))
    return _json_answer(201 if created else 200, body)


__all__ = ["Answer", "AnswerResponse", "add_messages_answer", "list_messages_answer"]
