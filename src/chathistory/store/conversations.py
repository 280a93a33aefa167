"""Conversations: create (idempotent with a client id), find, list by keyset, update, delete,
clear, and erase a user. Every statement names its owner; another user's row is not found."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory import pagination
from chathistory.errors import ConflictError, ConversationNotFoundError, ValidationError
from chathistory.models import conversations, messages, utcnow, uuid7
from chathistory.schemas import ConversationCreate, ConversationRead, ConversationUpdate, Page
from chathistory.store import rows, sql, tool_pairing
from chathistory.store.database import Database
from chathistory.store.rows import CONVERSATION_COLUMNS, C, M


async def create(
    conn: AsyncConnection, user_id: str, spec: ConversationCreate
) -> tuple[ConversationRead, bool]:
    """The new conversation and ``True``; with a stored client id, the stored one and
    ``False`` (a :class:`ConflictError` if the title or metadata sent differ)."""
    if spec.id is not None:
        existing = await find(conn, user_id, spec.id)
        if existing is not None:
            if (spec.title is not None and spec.title != existing.title) or (
                spec.metadata and spec.metadata != existing.metadata
            ):
                raise ConflictError(
                    f"conversation {spec.id} already exists with other title or metadata"
                )
            return existing, False
    now = utcnow()
    values = {
        "id": spec.id or uuid7(),
        "user_id": user_id,
        "title": spec.title,
        "metadata": spec.metadata,
        "created_at": now,
        "updated_at": now,
        "message_count": 0,
    }
    await conn.execute(insert(conversations).values(values))
    return rows.conversation(values), True


async def newest(conn: AsyncConnection, user_id: str) -> ConversationRead | None:
    """The user's most recently updated conversation."""
    row = (
        await conn.execute(
            select(*CONVERSATION_COLUMNS)
            .where(C.user_id == user_id)
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
            select(*CONVERSATION_COLUMNS).where(C.user_id == user_id, C.id == conversation_id)
        )
    ).first()
    return None if row is None else rows.conversation(row._mapping)


async def require(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> None:
    """Raise :class:`ConversationNotFoundError` unless the user has this conversation."""
    found = (
        await conn.execute(select(C.id).where(C.user_id == user_id, C.id == conversation_id))
    ).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)


_PAGE = Page[ConversationRead]  # the parametrised class, looked up once


async def page(
    db: Database, user_id: str, limit: int, cursor: str | None
) -> Page[ConversationRead]:
    """Most recently updated first, keyset-paged on ``(updated_at, id)``: one statement (on
    PostgreSQL straight on the pooled asyncpg connection)."""
    position = None if cursor is None else pagination.decode_conversation_cursor(cursor)
    if db.postgres:
        async with db.driver() as driver:
            if position is None:
                found = await driver.fetch(sql.LIST_FIRST_SQL, user_id, limit + 1)
            else:
                found = await driver.fetch(
                    sql.LIST_AFTER_SQL, user_id, position.updated_at, position.id, limit + 1
                )
    else:
        query = select(*CONVERSATION_COLUMNS).where(C.user_id == user_id)
        if position is not None:
            query = query.where(
                tuple_(C.updated_at, C.id)
                < tuple_(
                    literal(position.updated_at, C.updated_at.type),
                    literal(position.id, C.id.type),
                )
            )
        query = query.order_by(C.updated_at.desc(), C.id.desc()).limit(limit + 1)
        async with db.transaction() as conn:
            found = [row._mapping for row in await conn.execute(query)]
    build = rows.conversation_record if db.postgres else rows.conversation
    items = [build(row) for row in found[:limit]]
    next_cursor = (
        pagination.encode_conversation_cursor(items[-1].updated_at, items[-1].id)
        if items
        else cursor
    )
    return _PAGE.model_construct(data=items, has_more=len(found) > limit, next_cursor=next_cursor)


def changes(data: dict[str, Any]) -> dict[str, Any]:
    """The columns an update sets: the fields given, validated."""
    spec: ConversationUpdate = rows.parse(ConversationUpdate, data)
    values = spec.model_dump(include=spec.model_fields_set)
    if "metadata" in values and values["metadata"] is None:
        raise ValidationError("must be an object", loc=("metadata",))
    return values


async def update_columns(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, values: dict[str, Any]
) -> ConversationRead:
    values = {**values, "updated_at": rows.forward(utcnow())}
    row = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id)
            .values(values)
            .returning(*CONVERSATION_COLUMNS)
        )
    ).first()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    return rows.conversation(row._mapping)


async def remove(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> None:
    """Delete a conversation and (by the foreign keys' cascade) its messages and open calls."""
    result = await conn.execute(
        delete(conversations).where(C.user_id == user_id, C.id == conversation_id)
    )
    if result.rowcount == 0:
        raise ConversationNotFoundError(conversation_id)


async def clear(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> int:
    """Delete every message but keep the conversation; the next message gets seq 1."""
    locked = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id)
            .values(message_count=0, has_user_message=False, updated_at=rows.forward(utcnow()))
            .returning(C.id)
        )
    ).first()
    if locked is None:
        raise ConversationNotFoundError(conversation_id)
    await tool_pairing.forget(conn, user_id, conversation_id)
    result = await conn.execute(
        delete(messages).where(M.conversation_id == conversation_id, M.user_id == user_id)
    )
    return int(result.rowcount)


async def erase_user(conn: AsyncConnection, user_id: str) -> int:
    result = await conn.execute(delete(conversations).where(C.user_id == user_id))
    return int(result.rowcount)
