"""Reading messages: one message, keyset pages by ``seq`` (cursor or OpenAI-style ``after`` /
``before`` ids), and a conversation's newest messages.

The hot path is one statement of the store's dialect
(:meth:`Dialect.read_range <chathistory.store.dialects.Dialect.read_range>`: on PostgreSQL
straight on the pooled asyncpg connection, on SQLite a Core statement). A read that finds
nothing checks that the conversation exists (404), so the common case costs one round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory import pagination
from chathistory.errors import InvalidCursorError, MessageNotFoundError, ValidationError
from chathistory.models import ITEM_ROLE, messages, utcnow
from chathistory.schemas import MessagePage, MessageRead
from chathistory.store import branches, conversations, limits, rows
from chathistory.store.database import Database
from chathistory.store.rows import M

Order = Literal["asc", "desc"]
Branch = Literal["active", "all"]


async def one(
    db: Database, user_id: str, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead:
    async with db.transaction() as conn:
        return await locate(conn, user_id, conversation_id, message_id, db.stale_before(utcnow()))


async def locate(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    stale_before: datetime | None,
) -> MessageRead:
    """One message of a live conversation, or :class:`MessageNotFoundError` (also for the row
    of an item with no chat form: it is no message)."""
    row = (
        await conn.execute(
            select(messages).where(
                M.user_id == user_id,
                M.conversation_id == conversation_id,
                M.id == message_id,
                M.role != ITEM_ROLE,
                conversations.exists_live(user_id, conversation_id),
            )
        )
    ).first()
    if row is None:
        await conversations.require(conn, user_id, conversation_id)
        raise MessageNotFoundError(message_id)
    [found] = await _numbered(conn, user_id, conversation_id, [row._mapping], stale_before)
    return found


async def _numbered(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    found: Sequence[Mapping[Any, Any]],
    stale_before: datetime | None,
) -> list[MessageRead]:
    """Read models of stored rows of a branched conversation, with their sibling numbers."""
    items = [rows.message(row, stale_before) for row in found]
    placed = [(row["seq"], row["fork"], row["sibling"]) for row in found]
    numbers = await branches.siblings(conn, user_id, conversation_id, placed)
    for item in items:
        rows.numbered(item, *numbers[item.seq])
    return items


async def _along_branch(
    db: Database,
    user_id: str,
    conversation_id: uuid.UUID,
    branch: Branch,
    **bounds: Any,
) -> tuple[list[Mapping[Any, Any]], list[MessageRead]] | None:
    """What the one-statement read found nothing for: ``None`` for a conversation that never
    branched (it has no such messages), else the rows read along its active branch (or every
    message, ``branch="all"``) and their read models with sibling numbers, rows of items with
    no chat form included (:func:`_chat`); 404 if the conversation does not exist."""
    async with db.transaction() as conn:
        branched, count = await branches.active(conn, user_id, conversation_id)
        if not branched:
            db.branched.discard(conversation_id)
            return None
        db.branched.add(conversation_id)
        if branch == "all":
            owned = (M.conversation_id == conversation_id, M.user_id == user_id)
            found = await branches.read(conn, db.size, owned, branches.linear(count), **bounds)
        else:
            found = await branches.read_active(conn, db.size, user_id, conversation_id, **bounds)
        items = await _numbered(conn, user_id, conversation_id, found, db.stale_before(utcnow()))
    return found, items


async def page(
    db: Database,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    order: Order,
    cursor: str | None,
    after: uuid.UUID | None,
    before: uuid.UUID | None,
    max_bytes: int,
    branch: Branch = "active",
) -> MessagePage:
    """A page of at most ``limit`` messages and ``max_bytes`` of content (at least one)."""
    rows.check_limit(limit)
    if order not in ("asc", "desc"):
        raise ValidationError("must be 'asc' or 'desc'", loc=("order",))
    if branch not in ("active", "all"):
        raise ValidationError("must be 'active' or 'all'", loc=("branch",))
    if cursor is not None and (after is not None or before is not None):
        raise InvalidCursorError("give either a cursor or after/before ids, not both")
    # Bounds in seq, both exclusive: forward in list order is "past", backward "until".
    past: int | None = None
    until: int | None = None
    if cursor is not None:
        past = pagination.decode_message_cursor(cursor, order).seq
    if after is not None or before is not None:
        async with db.transaction() as conn:
            if after is not None:
                past = await _seq_of(conn, user_id, conversation_id, after, "after")
            if before is not None:
                until = await _seq_of(conn, user_id, conversation_id, before, "before")
    ascending = order == "asc"
    low, high = (past, until) if ascending else (until, past)
    # Only "before" given: take the items nearest to it, scanning away from it.
    scan_ascending = ascending != (until is not None and past is None)
    bounds = {"limit": limit + 1, "past": low, "until": high, "max_bytes": max_bytes}
    found = await db.dialect.read_range(
        user_id,
        conversation_id,
        ascending=scan_ascending,
        every=branch == "all",
        now=utcnow(),
        **bounds,
    )
    built: list[MessageRead] | None = None
    if not found:
        branched = await _along_branch(
            db, user_id, conversation_id, branch, ascending=scan_ascending, **bounds
        )
        if branched is not None:
            found, built = _chat(*branched)
    sizes = [row["size"] for row in found]
    total = sum(sizes)
    fitting = (
        min(len(found), limit)
        if total <= max_bytes
        else limits.within_bytes(sizes[:limit], max_bytes)
    )
    # More: a row past the limit came back, or the byte budget cut the read (the database
    # returned the row that crossed it; whether any follow it, only the next page knows).
    has_more = len(found) > fitting or total > max_bytes
    if built is None:  # only the page's rows (not the one past it)
        built = _built(db, found, fitting)
    items = built[:fitting]
    if scan_ascending != ascending:
        items.reverse()
    # After the last item; on an empty page, the position asked from (to poll again).
    position = items[-1].seq if items else past
    next_cursor = None if position is None else pagination.encode_message_cursor(position, order)
    return MessagePage.model_construct(
        data=items,
        has_more=has_more,
        next_cursor=next_cursor,
        first_id=items[0].id if items else None,
        last_id=items[-1].id if items else None,
    )


async def newest(
    db: Database, user_id: str, conversation_id: uuid.UUID, limit: int | None
) -> list[MessageRead]:
    """The newest ``limit`` messages (all when ``None``), oldest first."""
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ValidationError("must be a positive integer or None", loc=("limit",))
    found = await db.dialect.read_range(
        user_id, conversation_id, ascending=limit is None, limit=limit, now=utcnow()
    )
    found, items = await _newest(db, user_id, conversation_id, limit, found)
    # Along a branch, rows of items with no chat form are left out after the read: read on
    # (older) until ``limit`` messages, or the branch's start.
    while limit is not None and len(items) < limit and len(found) == limit:
        until = found[-1]["seq"]
        older = await db.dialect.read_range(
            user_id, conversation_id, ascending=False, limit=limit, now=utcnow(), until=until
        )
        found, more = await _newest(db, user_id, conversation_id, limit, older, until=until)
        items += more
    if limit is not None:
        items = items[:limit]
        items.reverse()
    return items


async def _newest(
    db: Database,
    user_id: str,
    conversation_id: uuid.UUID,
    limit: int | None,
    found: Sequence[Mapping[str, Any]],
    **bounds: Any,
) -> tuple[Sequence[Mapping[str, Any]], list[MessageRead]]:
    """The rows a read of the newest messages found (read along the active branch when the
    one-statement read found none) and their chat messages."""
    if found:
        return found, _built(db, found, len(found))
    branched = await _along_branch(
        db, user_id, conversation_id, "active", ascending=limit is None, limit=limit, **bounds
    )
    if branched is None:
        return found, []
    rows, items = branched
    return rows, [item for item in items if item.role != ITEM_ROLE]


def _chat(
    found: Sequence[Mapping[str, Any]], items: list[MessageRead]
) -> tuple[list[Mapping[str, Any]], list[MessageRead]]:
    """Rows read along a branch and their read models, less the rows of items with no chat
    form (in no chat view)."""
    kept = [index for index, row in enumerate(found) if row["role"] != ITEM_ROLE]
    return [found[i] for i in kept], [items[i] for i in kept]


def _built(db: Database, found: Sequence[Mapping[Any, Any]], upto: int) -> list[MessageRead]:
    """Read models of the first ``upto`` rows one statement read (a branched conversation's
    with their sibling numbers)."""
    return db.dialect.messages(found, upto, db.stale_before(utcnow()))


async def _seq_of(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    field: str,
) -> int:
    try:
        return await branches.message_seq(conn, user_id, conversation_id, message_id, field)
    except ValidationError:
        await conversations.require(conn, user_id, conversation_id)
        raise InvalidCursorError("is not a message of this conversation", loc=(field,)) from None
