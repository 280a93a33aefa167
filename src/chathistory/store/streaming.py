"""Streaming turns (SPEC 10): an ``in_progress`` assistant message updated as it streams.

An update runs in one transaction: it takes the conversation's row lock (the lock appends take,
so an update and an append to one conversation queue, and a tool result sees calls set by an
update before it), reads the message, refuses a finished one (409), applies the change and
checks the message it makes by the rules of an append (422, nothing changed), re-pairs its tool
calls, recounts its tokens, re-indexes its words for search, and stores it in place: same
``id``, ``seq`` and ``created_at``, ``updated_at`` moved to now.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ConflictError, ConversationNotFoundError, MessageNotFoundError
from chathistory.models import conversations, messages
from chathistory.schemas import MessageCreate, MessageRead
from chathistory.schemas.streaming import MessageUpdate
from chathistory.store import appending, rows, search, tool_pairing, tool_sites
from chathistory.store.conversations import live
from chathistory.store.dialects import Dialect
from chathistory.store.rows import C, M


async def update_message(
    conn: AsyncConnection,
    dialect: Dialect,
    rules: appending.Rules,
    user_id: str,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    change: MessageUpdate,
    now: datetime,
    stale_before: datetime,
) -> MessageRead:
    locked = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id, live(now))
            .values(updated_at=rows.forward(now))
            .returning(C.branched)
        )
    ).first()
    if locked is None:
        raise ConversationNotFoundError(conversation_id)
    found = (
        await conn.execute(
            select(messages).where(
                M.user_id == user_id, M.conversation_id == conversation_id, M.id == message_id
            )
        )
    ).first()
    if found is None:
        raise MessageNotFoundError(message_id)
    current = rows.message(found._mapping, stale_before)
    if current.status != "in_progress":
        raise ConflictError(
            f"message {message_id} is {current.status}: a finished message never changes"
        )
    message: MessageCreate = rows.parse(MessageCreate, change.applied_to(_fields(current)))
    appending.check_sizes(rules, [message])
    old = [call["id"] for call in current.tool_calls or ()]
    new = [c.id for c in message.tool_calls or ()]
    await tool_pairing.replace_calls(
        conn, dialect, user_id, conversation_id, current.seq, (old, new), linear=not locked.branched
    )
    dropped, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
    await tool_sites.replace(conn, dialect, user_id, conversation_id, current.seq, dropped, added)
    stored = appending.row(
        rules, user_id, conversation_id, message, current.seq, current.created_at
    )
    stored["updated_at"] = max(now, current.updated_at)
    stored["parent_id"] = current.parent_id
    await conn.execute(
        update(messages)
        .where(M.user_id == user_id, M.conversation_id == conversation_id, M.id == message_id)
        .values(
            {
                name: stored[name]
                for name in ("content", "tool_calls", "token_count", "status", "updated_at")
            }
        )
    )
    await search.reindex(conn, dialect.search, stored)
    updated = rows.message(stored, None)
    rows.numbered(updated, current.sibling_count, current.sibling_index)
    return updated


def _fields(current: MessageRead) -> dict[str, Any]:
    """A stored message as the append that would store it: OpenAI's format, whole."""
    return {
        **current.to_openai(),
        "id": current.id,
        "metadata": current.metadata,
        "status": current.status,
    }
