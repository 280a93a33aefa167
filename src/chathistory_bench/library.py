"""The library's side: the same operations through ``ChatHistory``'s public methods only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from chathistory import ChatHistory
from chathistory.db import create_engine
from chathistory_bench.fixtures import CONTENT, role
from chathistory_bench.rounds import WriterOp

MAX_PAGE = 100  # the largest page list_conversations serves


@asynccontextmanager
async def opened(url: str, *, cached: bool) -> AsyncIterator[ChatHistory]:
    """A store on its own engine: ``create_engine(url)``, or with
    ``prepared_statement_cache=True``."""
    engine = create_engine(url, prepared_statement_cache=True) if cached else create_engine(url)
    try:
        yield ChatHistory(engine)
    finally:
        await engine.dispose()


def append(store: ChatHistory, user_id: str, conversation_ids: Sequence[uuid.UUID]) -> WriterOp:
    """Writer w appends turn n to conversation w."""

    async def op(w: int, n: int) -> None:
        await store.add_message(user_id, conversation_ids[w], role(n), CONTENT)

    return op


def chat_history(
    store: ChatHistory, user_id: str, conversation_id: uuid.UUID, limit: int
) -> WriterOp:
    async def op(_w: int, _n: int) -> object:
        return await store.get_chat_history(user_id, conversation_id, limit=limit)

    return op


def newest_page(
    store: ChatHistory, user_id: str, conversation_id: uuid.UUID, limit: int
) -> WriterOp:
    async def op(_w: int, _n: int) -> object:
        return await store.list_messages(user_id, conversation_id, order="desc", limit=limit)

    return op


def list_page(store: ChatHistory, user_id: str, limit: int, cursor: str | None) -> WriterOp:
    async def op(_w: int, _n: int) -> object:
        return await store.list_conversations(user_id, limit=limit, cursor=cursor)

    return op


async def cursor_after(store: ChatHistory, user_id: str, count: int) -> str:
    """The listing cursor after the user's first ``count`` conversations, walked page by page
    (a cursor is opaque: only the store makes one)."""
    cursor: str | None = None
    left = count
    while left > 0:
        page = await store.list_conversations(user_id, limit=min(MAX_PAGE, left), cursor=cursor)
        if not page.data or page.next_cursor is None:
            raise RuntimeError(f"{user_id} has fewer than {count} conversations")
        cursor = page.next_cursor
        left -= len(page.data)
    if cursor is None:
        raise ValueError("count must be positive")
    return cursor
