"""SQLite (aiosqlite): :class:`Sqlite`, each operation a SQLAlchemy Core statement in a
transaction of the engine (the database's one write lock serializes writers)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Select,
    delete,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.models import ITEM_ROLE, conversations, messages
from chathistory.pagination import ConversationCursor
from chathistory.schemas import ConversationRead, MessageCreate, MessageRead
from chathistory.store import limits, rows
from chathistory.store.conversations import exists_live, live
from chathistory.store.dialects.sqlite_search import SqliteSearch
from chathistory.store.rows import CONVERSATION_COLUMNS, C, M

if TYPE_CHECKING:
    from chathistory.store.appending import Rules
    from chathistory.store.database import Database

# Readiness, in one statement: the schema's revision (a SQLite file is never read-only here).
PING: Final = (
    "SELECT 'off', (SELECT group_concat(version_num, ',') FROM chathistory_alembic_version)"
)


class Sqlite:
    """The SQLite form of each operation of :class:`~chathistory.store.dialects.Dialect`."""

    name: Final = "sqlite"
    size: ColumnElement[int] = limits.stored_size(func.length, LargeBinary)
    insert: Final = staticmethod(sqlite.insert)
    ping: Final = PING
    search: Final = SqliteSearch()

    def __init__(self, db: Database) -> None:
        self._db = db

    async def read_range(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        ascending: bool,
        limit: int | None,
        now: datetime,
        past: int | None = None,
        until: int | None = None,
        max_bytes: int | None = None,
        every: bool = False,
    ) -> Sequence[Mapping[str, Any]]:
        """One Core statement (:func:`~chathistory.store.limits.bounded_range`) over a
        conversation that never branched (a branched one reads nothing here)."""
        query = limits.bounded_range(
            list(messages.c),
            (
                M.conversation_id == conversation_id,
                M.user_id == user_id,
                M.role != ITEM_ROLE,  # items with no chat form are in no chat view
                exists_live(user_id, conversation_id, now, linear=True),
            ),
            self.size,
            ascending=ascending,
            limit=limit,
            past=past,
            until=until,
            max_bytes=max_bytes,
        )
        async with self._db.transaction() as conn:
            return [row._mapping for row in await conn.execute(query)]

    def messages(
        self, found: Sequence[Mapping[str, Any]], upto: int, stale_before: datetime
    ) -> list[MessageRead]:
        return [rows.message(row, stale_before) for row in found[:upto]]

    async def read_items(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        ascending: bool,
        limit: int,
        now: datetime,
    ) -> Sequence[Mapping[str, Any]]:
        query = limits.bounded_range(
            list(messages.c),
            (
                M.conversation_id == conversation_id,
                M.user_id == user_id,
                exists_live(user_id, conversation_id, now, linear=True),
            ),
            self.size,
            ascending=ascending,
            limit=limit,
        )
        async with self._db.transaction() as conn:
            return [row._mapping for row in await conn.execute(query)]

    async def list_conversations(
        self,
        user_id: str,
        now: datetime,
        limit: int,
        position: ConversationCursor | None,
        *,
        archived: bool | None,
        pinned: bool | None,
    ) -> tuple[list[ConversationRead], bool]:
        query = select(*CONVERSATION_COLUMNS).where(C.user_id == user_id, live(now))
        if archived is not None:
            query = query.where(C.archived == archived)
        if pinned is not None:
            query = query.where(C.pinned == pinned)
        if position is not None:
            query = query.where(
                tuple_(C.updated_at, C.id)
                < tuple_(
                    literal(position.updated_at, C.updated_at.type),
                    literal(position.id, C.id.type),
                )
            )
        query = query.order_by(C.updated_at.desc(), C.id.desc()).limit(limit + 1)
        async with self._db.transaction() as conn:
            found = [row._mapping for row in await conn.execute(query)]
        return [rows.conversation(row) for row in found[:limit]], len(found) > limit

    async def append_at_once(
        self,
        rules: Rules,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
    ) -> list[MessageRead] | None:
        """No one-statement append: every batch takes the general path."""
        return None

    async def purge_batch(
        self, conn: AsyncConnection, user_id: str, pick: Select[Any], due: ColumnElement[bool]
    ) -> list[int]:
        """One ``DELETE ... WHERE id IN (SELECT ... LIMIT n) AND <still due> RETURNING``."""
        chosen = C.id.in_(pick.correlate(None).scalar_subquery())
        removed = await conn.execute(
            delete(conversations)
            .where(C.user_id == user_id, chosen, due)
            .returning(C.message_count)
        )
        return [int(count) for count in removed.scalars()]

    async def snapshot_isolation(self, conn: AsyncConnection) -> None:
        """Nothing: a read transaction is a snapshot in WAL mode (writers carry on)."""

    async def snapshot_begun(self, conn: AsyncConnection) -> None:
        raw = (await conn.get_raw_connection()).driver_connection
        if not getattr(raw, "in_transaction", False):
            # pysqlite starts no transaction for a SELECT (unless the engine has a
            # "begin" hook): each statement would see the database as it is.
            await conn.exec_driver_sql("BEGIN")


__all__ = ["PING", "Sqlite"]
