"""Conversations: create (idempotent with a client id), find, list by keyset, update, delete,
clear, and erase a user. Every statement names its owner; another user's row is not found."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    delete,
    exists,
    false,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory import pagination
from chathistory.errors import ConflictError, ConversationNotFoundError, ValidationError
from chathistory.models import conversation_paths, conversations, messages, utcnow, uuid7
from chathistory.schemas import ConversationCreate, ConversationRead, ConversationUpdate, Page
from chathistory.store import branches, rows, tool_pairing, tool_sites
from chathistory.store.database import Database
from chathistory.store.rows import CONVERSATION_COLUMNS, C, M

# What a change of these columns is not: a change of the conversation's content, so it does
# not move updated_at (SPEC 9: archiving or pinning a conversation keeps its place).
LIFECYCLE: Final = frozenset({"archived", "pinned", "expires_at", "current_message_id"})


def live(now: datetime) -> ColumnElement[bool]:
    """Not expired at ``now`` (SPEC 9): from ``expires_at`` on, a conversation is gone for
    every call. Every statement that finds a conversation for a caller carries this."""
    return or_(C.expires_at.is_(None), C.expires_at > now)


def expired(now: datetime) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = C.expires_at <= now
    return condition


async def free_expired(
    conn: AsyncConnection, user_id: str, conversation_ids: Iterable[uuid.UUID], now: datetime
) -> set[uuid.UUID]:
    """Delete those of these conversations of the user that have expired at ``now``, and say
    which. An expired conversation is gone for every call (SPEC 9) but its row stays until the
    purge: a call that would reuse its id, or the id of one of its messages, deletes it first
    (with its messages, by the foreign keys' cascade), so the id is free again. A live
    conversation is never touched."""
    ids = set(conversation_ids)
    if not ids:
        return set()
    deleted = await conn.execute(
        delete(conversations)
        .where(C.user_id == user_id, C.id.in_(ids), expired(now))
        .returning(C.id)
    )
    return {row.id for row in deleted}


def exists_live(
    user_id: str, conversation_id: uuid.UUID, now: datetime | None = None, *, linear: bool = False
) -> ColumnElement[bool]:
    """A condition for a read of messages: their conversation exists and has not expired, so
    an expired conversation's messages never come back (PostgreSQL's hot read checks the same
    in its statement);
    with ``linear``, and never branched (SPEC 11: its active branch is every message)."""
    query = exists().where(
        C.user_id == user_id, C.id == conversation_id, live(utcnow() if now is None else now)
    )
    return query.where(C.branched == false()) if linear else query


async def create(
    conn: AsyncConnection, user_id: str, spec: ConversationCreate
) -> tuple[ConversationRead, bool]:
    """The new conversation and ``True``; with a stored client id, the stored one and
    ``False`` (a :class:`ConflictError` if the title, metadata or lifecycle sent differ)."""
    now = utcnow()
    if spec.id is not None:
        existing = await find(conn, user_id, spec.id)
        if existing is not None:
            given = spec.model_fields_set & LIFECYCLE
            if (
                (spec.title is not None and spec.title != existing.title)
                or (spec.metadata and spec.metadata != existing.metadata)
                or any(getattr(spec, name) != getattr(existing, name) for name in given)
            ):
                raise ConflictError(
                    f"conversation {spec.id} already exists with other title, metadata,"
                    " archived, pinned or expires_at"
                )
            return existing, False
        await free_expired(conn, user_id, [spec.id], now)
    values = {
        "id": spec.id or uuid7(),
        "user_id": user_id,
        "title": spec.title,
        "metadata": spec.metadata,
        "created_at": now,
        "updated_at": now,
        "message_count": 0,
        "archived": spec.archived,
        "pinned": spec.pinned,
        "expires_at": spec.expires_at,
        "current_message_id": None,
    }
    await conn.execute(insert(conversations).values(values))
    return rows.conversation(values), True


async def newest(conn: AsyncConnection, user_id: str) -> ConversationRead | None:
    """The user's most recently updated conversation that is not archived (nor expired)."""
    row = (
        await conn.execute(
            select(*CONVERSATION_COLUMNS)
            .where(C.user_id == user_id, C.archived == false(), live(utcnow()))
            .order_by(C.updated_at.desc(), C.id.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else rows.conversation(row._mapping)


async def find(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID
) -> ConversationRead | None:
    row = (
        await conn.execute(
            select(*CONVERSATION_COLUMNS).where(
                C.user_id == user_id, C.id == conversation_id, live(utcnow())
            )
        )
    ).first()
    return None if row is None else rows.conversation(row._mapping)


async def require(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> None:
    """Raise :class:`ConversationNotFoundError` unless the user has this conversation (and it
    has not expired)."""
    found = (
        await conn.execute(
            select(C.id).where(C.user_id == user_id, C.id == conversation_id, live(utcnow()))
        )
    ).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)


_PAGE = Page[ConversationRead]  # the parametrised class, looked up once


async def page(
    db: Database,
    user_id: str,
    limit: int,
    cursor: str | None,
    *,
    archived: bool | None = False,
    pinned: bool | None = None,
) -> Page[ConversationRead]:
    """Most recently updated first, keyset-paged on ``(updated_at, id)``, filtered by
    ``archived`` / ``pinned`` (``None``: either), never an expired one: one statement of the
    dialect (on PostgreSQL straight on the pooled asyncpg connection), on an index for each
    filter."""
    position = None if cursor is None else pagination.decode_conversation_cursor(cursor)
    items, has_more = await db.dialect.list_conversations(
        user_id, utcnow(), limit, position, archived=archived, pinned=pinned
    )
    next_cursor = (
        pagination.encode_conversation_cursor(items[-1].updated_at, items[-1].id)
        if items
        else cursor
    )
    return _PAGE.model_construct(data=items, has_more=has_more, next_cursor=next_cursor)


def changes(data: dict[str, Any]) -> dict[str, Any]:
    """The columns an update sets: the fields given, validated."""
    spec: ConversationUpdate = rows.parse(ConversationUpdate, data)
    values = spec.model_dump(include=spec.model_fields_set)
    if "metadata" in values and values["metadata"] is None:
        raise ValidationError("must be an object", loc=("metadata",))
    for flag in ("archived", "pinned"):
        if flag in values and values[flag] is None:
            raise ValidationError("must be true or false", loc=(flag,))
    if "current_message_id" in values and values["current_message_id"] is None:
        raise ValidationError("must be a message of this conversation", loc=("current_message_id",))
    return values


async def update_columns(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, values: dict[str, Any]
) -> ConversationRead:
    """Set ``values``; a change of the title or metadata moves ``updated_at`` forward, one of
    the lifecycle only (archive, pin, expiry) does not."""
    now = utcnow()
    if "current_message_id" in values:
        values = {**values, **await _switch(conn, user_id, conversation_id, values, now)}
    if set(values) - LIFECYCLE - {"branched"}:
        values = {**values, "updated_at": rows.forward(now)}
    row = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id, live(now))
            .values(values)
            .returning(*CONVERSATION_COLUMNS)
        )
    ).first()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    return rows.conversation(row._mapping)


async def _switch(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    values: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The columns that make the branch ending at ``current_message_id`` active (SPEC 11),
    under the conversation's row lock (the no-op write takes it, as an append's does)."""
    locked = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id, live(now))
            .values(message_count=C.message_count)
            .returning(C.message_count, C.branched)
        )
    ).first()
    if locked is None:
        raise ConversationNotFoundError(conversation_id)
    target = values["current_message_id"]
    seq = await branches.message_seq(conn, user_id, conversation_id, target, "current_message_id")
    branched, count = bool(locked.branched), int(locked.message_count)
    if not branched and seq == count:  # the last message of one that never branched
        return {"current_message_id": target}
    await branches.activate(conn, user_id, conversation_id, seq, branched=branched, count=count)
    return {"current_message_id": target, "branched": True}


async def remove(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> None:
    """Delete a conversation and (by the foreign keys' cascade) its messages and open calls."""
    result = await conn.execute(
        delete(conversations).where(C.user_id == user_id, C.id == conversation_id, live(utcnow()))
    )
    if result.rowcount == 0:
        raise ConversationNotFoundError(conversation_id)


async def clear(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> int:
    """Delete every message but keep the conversation; the next message gets seq 1."""
    now = utcnow()
    locked = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id, live(now))
            .values(
                message_count=0,
                has_user_message=False,
                updated_at=rows.forward(now),
                current_message_id=None,
                branched=False,
            )
            .returning(C.id)
        )
    ).first()
    if locked is None:
        raise ConversationNotFoundError(conversation_id)
    await tool_pairing.forget(conn, user_id, conversation_id)
    await tool_sites.forget(conn, user_id, conversation_id)
    await conn.execute(
        delete(conversation_paths).where(
            conversation_paths.c.conversation_id == conversation_id,
            conversation_paths.c.user_id == user_id,
        )
    )
    result = await conn.execute(
        delete(messages).where(M.conversation_id == conversation_id, M.user_id == user_id)
    )
    return int(result.rowcount)


async def erase_user(conn: AsyncConnection, user_id: str) -> int:
    result = await conn.execute(delete(conversations).where(C.user_id == user_id))
    return int(result.rowcount)
