"""``ChatHistory``: the async store every face calls. All rules live here.

Each public method is one transaction and names its owner in every statement (``user_id``), so
another user's rows are simply not found. ``seq`` is assigned under the conversation's row lock
(the ``UPDATE ... RETURNING`` that also bumps ``message_count`` and ``updated_at`` comes first in
the appending transaction), so concurrent appends neither collide nor leave gaps.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final, Literal

import pydantic
from sqlalchemy import case, delete, insert, literal, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement, text

from chathistory import limits, pagination, tokens, tool_pairing
from chathistory.db import create_engine
from chathistory.errors import (
    ChatHistoryError,
    ConflictError,
    ConversationNotFoundError,
    FieldError,
    InvalidCursorError,
    MessageNotFoundError,
    UnavailableError,
    ValidationError,
)
from chathistory.models import conversations, messages, utcnow, uuid7
from chathistory.schemas import (
    ContextWindow,
    ConversationCreate,
    ConversationRead,
    ConversationRecord,
    ConversationUpdate,
    MessageCreate,
    MessagePage,
    MessageRead,
    MessageRecord,
    Page,
    check_user_id,
    from_pydantic,
    openai_message,
    title_from,
)

log = logging.getLogger("chathistory")

Order = Literal["asc", "desc"]
DEFAULT_MAX_CONTENT_CHARS: Final = 100_000
DEFAULT_MAX_BATCH_MESSAGES: Final = 1000
DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
MAX_PAGE: Final = 100


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

_C = conversations.c
_M = messages.c
_WINDOW_COLUMNS = (
    _M.seq,
    _M.role,
    _M.content,
    _M.name,
    _M.tool_calls,
    _M.tool_call_id,
    _M.token_count,
)
_MAX_SEQ: Final = 2**31 - 1
_MESSAGE_COLUMNS: Final = (
    "id, conversation_id, user_id, seq, role, content, name, tool_calls,"
    " tool_call_id, metadata, token_count, created_at"
)
# A page stops at a byte budget ($6) inside the database: rows are numbered by the running
# size of their content and tool calls, and only those starting within the budget come back
# (so at most one row past it), however large the stored messages are.
_SIZE: Final = (
    "coalesce(octet_length(content::text), 0) + coalesce(octet_length(tool_calls::text), 0)"
)
_PAGE_SQL: Final = {
    ascending: (
        f"SELECT {_MESSAGE_COLUMNS}, size FROM (SELECT {_MESSAGE_COLUMNS}, {_SIZE} AS size,"  # noqa: S608
        f" sum({_SIZE}) OVER (ORDER BY seq {direction}) AS running FROM messages"
        " WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4"
        f" ORDER BY seq {direction} LIMIT $5) AS page WHERE running - size <= $6"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
# The same range without a budget (``get_chat_history``: the caller asked for that many).
_RANGE_SQL: Final = {
    ascending: (
        f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608
        " WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4"
        f" ORDER BY seq {direction} LIMIT $5"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
_CONTEXT_FIRST_CHUNK: Final = 32
_SYSTEM_CHUNK: Final = 8
_CONTEXT_MAX_CHUNK: Final = 1024
_IMPORT_CHUNK: Final = 1000
_CONVERSATION_COLUMNS = (
    _C.id,
    _C.user_id,
    _C.title,
    _C.metadata,
    _C.created_at,
    _C.updated_at,
    _C.message_count,
)


class ChatHistory:
    """Durable chat history on PostgreSQL or SQLite.

    Build it with :meth:`open` (from a URL, owning its engine) or directly from an
    ``AsyncEngine`` the host application already has::

        async with ChatHistory.open("postgresql://...") as store:
            conv = await store.get_or_create_conversation("user-1")
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
        max_batch_messages: int = DEFAULT_MAX_BATCH_MESSAGES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        encoding: str = tokens.DEFAULT_ENCODING,
        owns_engine: bool = False,
    ) -> None:
        self.engine = engine
        self.max_content_chars = max_content_chars
        self.max_batch_messages = max_batch_messages
        self.max_response_bytes = max_response_bytes
        self.tokens = tokens.counter(encoding)
        self._owns_engine = owns_engine
        self._is_postgres = engine.dialect.name == "postgresql"
        self._size = limits.size_of(self._is_postgres)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        database: str | AsyncEngine,
        *,
        migrate: bool = True,
        max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
        max_batch_messages: int = DEFAULT_MAX_BATCH_MESSAGES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        encoding: str = tokens.DEFAULT_ENCODING,
        **engine_options: Any,
    ) -> _Opening:
        """Open a store on a database URL (or an existing engine, which stays the caller's).

        With ``migrate=True`` (the default) the schema is brought up to date first, which is a
        single version check when it already is. ``engine_options`` go to
        :func:`chathistory.db.create_engine` (pool sizes, timeouts, ...).

        Use as ``async with ChatHistory.open(url) as store`` or ``store = await ...open(url)``
        (then ``await store.close()``).
        """
        options = {
            "max_content_chars": max_content_chars,
            "max_batch_messages": max_batch_messages,
            "max_response_bytes": max_response_bytes,
            "encoding": encoding,
        }
        return _Opening(cls, database, migrate, options, engine_options)

    async def close(self) -> None:
        """Release the connection pool if this store created it."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> ChatHistory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raise :class:`UnavailableError` unless the database answers and takes writes (a
        read-only PostgreSQL server, such as a standby, is not ready)."""
        async with self._transaction() as conn:
            if not self._is_postgres:
                await conn.execute(select(literal(1)))
                return
            read_only = (
                await conn.execute(text("SELECT current_setting('transaction_read_only')"))
            ).scalar()
        if read_only == "on":
            raise UnavailableError("the database is read-only (a standby, or set read-only)")

    # -- conversations ---------------------------------------------------------------------

    async def create_conversation(
        self,
        user_id: str,
        *,
        id: uuid.UUID | None = None,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ConversationRead:
        """Create a conversation. With a client-given ``id`` the call is idempotent: the same
        ``id`` again returns the stored conversation (``ConflictError`` if the title or metadata
        sent differ from what is stored)."""
        conversation, _created = await self.create_conversation_idempotent(
            user_id, {"id": id, "title": title, "metadata": dict(metadata or {})}
        )
        return conversation

    async def create_conversation_idempotent(
        self, user_id: str, data: ConversationCreate | Mapping[str, Any]
    ) -> tuple[ConversationRead, bool]:
        """Like :meth:`create_conversation`, from a create model; also says whether it created."""
        check_user_id(user_id)
        spec = _parse(ConversationCreate, data)
        for _attempt in range(2):
            try:
                async with self._transaction() as conn:
                    return await self._create_conversation(conn, user_id, spec)
            except IntegrityError:
                continue  # a concurrent create of the same id won: read what it stored
        raise ConflictError(f"conversation {spec.id} could not be created")  # pragma: no cover

    async def _create_conversation(
        self, conn: AsyncConnection, user_id: str, spec: ConversationCreate
    ) -> tuple[ConversationRead, bool]:
        if spec.id is not None:
            existing = await self._find_conversation(conn, user_id, spec.id)
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
        return _conversation(values), True

    async def get_or_create_conversation(
        self, user_id: str, conversation_id: uuid.UUID | None = None
    ) -> ConversationRead:
        """The given conversation (created with that id if it does not exist yet), or, without
        an id, the user's most recently updated conversation, or a new one."""
        check_user_id(user_id)
        if conversation_id is None:
            async with self._transaction() as conn:
                row = (
                    await conn.execute(
                        select(*_CONVERSATION_COLUMNS)
                        .where(_C.user_id == user_id)
                        .order_by(_C.updated_at.desc(), _C.id.desc())
                        .limit(1)
                    )
                ).first()
            if row is not None:
                return _conversation(row._mapping)
        conversation, _ = await self.create_conversation_idempotent(
            user_id, ConversationCreate(id=conversation_id)
        )
        return conversation

    async def get_conversation(self, user_id: str, conversation_id: uuid.UUID) -> ConversationRead:
        check_user_id(user_id)
        async with self._transaction() as conn:
            found = await self._find_conversation(conn, user_id, conversation_id)
        if found is None:
            raise ConversationNotFoundError(conversation_id)
        return found

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, cursor: str | None = None
    ) -> Page[ConversationRead]:
        """The user's conversations, most recently updated first, one keyset page at a time.

        A conversation that gets a new message while a client walks the list moves to the
        front; the walk never returns an item twice."""
        check_user_id(user_id)
        _check_limit(limit)
        query = select(*_CONVERSATION_COLUMNS).where(_C.user_id == user_id)
        if cursor is not None:
            position = pagination.decode_conversation_cursor(cursor)
            query = query.where(
                tuple_(_C.updated_at, _C.id)
                < tuple_(
                    literal(position.updated_at, _C.updated_at.type),
                    literal(position.id, _C.id.type),
                )
            )
        query = query.order_by(_C.updated_at.desc(), _C.id.desc()).limit(limit + 1)
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        items = [_conversation(row._mapping) for row in rows[:limit]]
        next_cursor = (
            pagination.encode_conversation_cursor(items[-1].updated_at, items[-1].id)
            if items
            else cursor
        )
        return Page[ConversationRead](
            data=items, has_more=len(rows) > limit, next_cursor=next_cursor
        )

    async def update_conversation(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        changes: ConversationUpdate | Mapping[str, Any] | None = None,
        *,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, str] | _Unset = UNSET,
    ) -> ConversationRead:
        """Change the title and/or replace the metadata; fields not given stay as they are."""
        check_user_id(user_id)
        data: dict[str, Any] = {}
        if isinstance(changes, ConversationUpdate):
            data = changes.model_dump(exclude_unset=True)
        elif isinstance(changes, Mapping):
            data = dict(changes)
        elif changes is not None:
            raise ValidationError("must be an object", loc=("body",))
        if not isinstance(title, _Unset):
            data["title"] = title
        if not isinstance(metadata, _Unset):
            data["metadata"] = metadata
        spec = _parse(ConversationUpdate, data)
        values = spec.model_dump(include=spec.model_fields_set)
        if "metadata" in values and values["metadata"] is None:
            raise ValidationError("must be an object", loc=("metadata",))
        if not values:
            return await self.get_conversation(user_id, conversation_id)
        values["updated_at"] = _forward(utcnow())
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    update(conversations)
                    .where(_C.user_id == user_id, _C.id == conversation_id)
                    .values(values)
                    .returning(*_CONVERSATION_COLUMNS)
                )
            ).first()
        if row is None:
            raise ConversationNotFoundError(conversation_id)
        return _conversation(row._mapping)

    async def delete_conversation(self, user_id: str, conversation_id: uuid.UUID) -> None:
        """Delete a conversation and (by the foreign key's cascade) all of its messages."""
        check_user_id(user_id)
        async with self._transaction() as conn:
            result = await conn.execute(
                delete(conversations).where(_C.user_id == user_id, _C.id == conversation_id)
            )
        if result.rowcount == 0:
            raise ConversationNotFoundError(conversation_id)

    async def clear_conversation(self, user_id: str, conversation_id: uuid.UUID) -> int:
        """Delete every message of a conversation but keep the conversation (its title and
        metadata); the next message gets seq 1. Returns how many messages went."""
        check_user_id(user_id)
        async with self._transaction() as conn:
            locked = (
                await conn.execute(
                    update(conversations)
                    .where(_C.user_id == user_id, _C.id == conversation_id)
                    .values(message_count=0, has_user_message=False, updated_at=_forward(utcnow()))
                    .returning(_C.id)
                )
            ).first()
            if locked is None:
                raise ConversationNotFoundError(conversation_id)
            await tool_pairing.forget(conn, user_id, conversation_id)
            result = await conn.execute(
                delete(messages).where(_M.conversation_id == conversation_id, _M.user_id == user_id)
            )
        return int(result.rowcount)

    async def delete_user_data(self, user_id: str) -> int:
        """Erase every conversation and message of the user; returns how many conversations."""
        check_user_id(user_id)
        async with self._transaction() as conn:
            result = await conn.execute(delete(conversations).where(_C.user_id == user_id))
        return int(result.rowcount)

    # -- messages --------------------------------------------------------------------------

    async def add_message(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        role: str,
        content: str | list[dict[str, Any]] | None = None,
        *,
        name: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        id: uuid.UUID | None = None,
    ) -> MessageRead:
        """Append one message; the store assigns its ``seq``. With ``id`` it is idempotent."""
        message = {
            "id": id,
            "role": role,
            "content": content,
            "name": name,
            "tool_calls": tool_calls,
            "tool_call_id": tool_call_id,
            "metadata": dict(metadata or {}),
        }
        stored = await self.add_messages(user_id, conversation_id, [message])
        return stored[0]

    async def add_messages(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        messages: Sequence[MessageCreate | Mapping[str, Any]],
    ) -> list[MessageRead]:
        """Append messages atomically, in the order given: all are stored, or none."""
        stored, _created = await self.add_messages_idempotent(user_id, conversation_id, messages)
        return stored

    async def add_messages_idempotent(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        messages: Sequence[MessageCreate | Mapping[str, Any]],
    ) -> tuple[list[MessageRead], bool]:
        """:meth:`add_messages`, also saying whether it stored anything (``False`` for a replay
        of messages whose ids are already stored identically)."""
        check_user_id(user_id)
        batch = self._parse_messages(messages)
        for _attempt in range(2):
            try:
                async with self._transaction() as conn:
                    return await self._append(conn, user_id, conversation_id, batch)
            except IntegrityError:
                # Only a concurrent insert of one of these ids (into another conversation)
                # gets here: the retry sees it and replays or reports the conflict.
                continue
        raise ConflictError("message ids collide with messages stored concurrently")

    def _parse_messages(
        self, messages: Sequence[MessageCreate | Mapping[str, Any]]
    ) -> list[MessageCreate]:
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise ValidationError("must be a list of messages", loc=("messages",))
        if not messages:
            raise ValidationError("must hold at least one message", loc=("messages",))
        if len(messages) > self.max_batch_messages:
            too_many = f"holds {len(messages)} messages; a batch holds at most "
            raise ValidationError(
                [FieldError(("messages",), f"{too_many}{self.max_batch_messages}", "too_long")]
            )
        batch: list[MessageCreate] = []
        errors: list[FieldError] = []
        for index, item in enumerate(messages):
            try:
                message = item if isinstance(item, MessageCreate) else _parse(MessageCreate, item)
            except ValidationError as exc:
                prefix: tuple[str | int, ...] = (index,) if len(messages) > 1 else ()
                errors += [FieldError((*prefix, *e.loc), e.msg, e.type) for e in exc.errors]
                continue
            batch.append(message)
        if errors:
            raise ValidationError(errors)
        self._check_sizes(batch)
        given = [m.id for m in batch if m.id is not None]
        if len(set(given)) != len(given):
            raise ValidationError("the same id appears twice in one batch", loc=("id",))
        return batch

    def _check_sizes(self, batch: Sequence[MessageCreate]) -> None:
        errors = [
            FieldError(
                (index, "content") if len(batch) > 1 else ("content",),
                f"is {message.text_size()} characters; the limit is {self.max_content_chars}",
                "too_long",
            )
            for index, message in enumerate(batch)
            if message.text_size() > self.max_content_chars
        ]
        if errors:
            raise ValidationError(errors)

    async def _append(
        self,
        conn: AsyncConnection,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
    ) -> tuple[list[MessageRead], bool]:
        now = utcnow()
        # 1. Lock the conversation row and reserve seq numbers: the first statement writes, so
        #    concurrent appenders queue here (PostgreSQL row lock, SQLite write lock).
        locked = (
            await conn.execute(
                update(conversations)
                .where(_C.user_id == user_id, _C.id == conversation_id)
                .values(message_count=_C.message_count + len(batch), updated_at=_forward(now))
                .returning(_C.message_count, _C.title, _C.has_user_message)
            )
        ).first()
        if locked is None:
            raise ConversationNotFoundError(conversation_id)
        first_seq = locked.message_count - len(batch) + 1

        # 2. Idempotency: ids already stored make this a replay (identical) or a conflict.
        given = [m.id for m in batch if m.id is not None]
        if given:
            replay = await self._replay(conn, user_id, conversation_id, batch, given)
            if replay is not None:
                await conn.rollback()
                return replay, False

        # 3. Tool results must answer an open tool call of an earlier assistant message.
        seqs = range(first_seq, first_seq + len(batch))
        await tool_pairing.apply(conn, user_id, conversation_id, batch, seqs)

        # 4. The first user message ever titles a conversation nobody titled.
        if not locked.has_user_message:
            await self._first_user_message(conn, user_id, conversation_id, batch, locked.title)

        rows = [
            self._row(user_id, conversation_id, message, first_seq + offset, now)
            for offset, message in enumerate(batch)
        ]
        await conn.execute(insert(messages), rows)
        return [_message(row) for row in rows], True

    async def _replay(
        self,
        conn: AsyncConnection,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
        given: list[uuid.UUID],
    ) -> list[MessageRead] | None:
        found = {
            row.id: _message(row._mapping)
            for row in await conn.execute(
                select(messages).where(_M.user_id == user_id, _M.id.in_(given))
            )
        }
        if not found:
            return None
        if len(found) != len(batch):
            raise ConflictError(
                "some of these message ids are already stored and others are not: "
                "a batch is replayed whole or not at all"
            )
        stored = [found[message.id] for message in batch if message.id is not None]
        for message, existing in zip(batch, stored, strict=True):
            if not _same_message(message, existing, conversation_id):
                raise ConflictError(
                    f"message {existing.id} is already stored with different content"
                )
        return stored

    async def _first_user_message(
        self,
        conn: AsyncConnection,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
        title: str | None,
    ) -> None:
        first_user = next((m for m in batch if m.role == "user"), None)
        if first_user is None:
            return
        values: dict[str, Any] = {"has_user_message": True}
        if title is None and (text_title := title_from(first_user.text())) is not None:
            values["title"] = text_title
        await conn.execute(
            update(conversations)
            .where(_C.user_id == user_id, _C.id == conversation_id)
            .values(values)
        )

    async def get_message(
        self, user_id: str, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> MessageRead:
        check_user_id(user_id)
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    select(messages).where(
                        _M.user_id == user_id,
                        _M.conversation_id == conversation_id,
                        _M.id == message_id,
                    )
                )
            ).first()
        if row is None:
            raise MessageNotFoundError(message_id)
        return _message(row._mapping)

    async def list_messages(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        limit: int = 100,
        order: Order = "asc",
        cursor: str | None = None,
        after: uuid.UUID | None = None,
        before: uuid.UUID | None = None,
    ) -> MessagePage:
        """A page of the conversation's messages by ``seq``.

        Continue with ``cursor`` (the previous page's ``next_cursor``), or OpenAI-style with
        ``after`` / ``before`` message ids: ``after`` gives the items that follow that message
        in the list's order, ``before`` the ones just preceding it (still in list order).
        """
        check_user_id(user_id)
        _check_limit(limit)
        if order not in ("asc", "desc"):
            raise ValidationError("must be 'asc' or 'desc'", loc=("order",))
        if cursor is not None and (after is not None or before is not None):
            raise InvalidCursorError("give either a cursor or after/before ids, not both")
        # Bounds in seq, both exclusive: forward in list order is "past", backward "until".
        past: int | None = None
        until: int | None = None
        if cursor is not None:
            past = pagination.decode_message_cursor(cursor, order).seq
        if after is not None or before is not None:
            async with self._transaction() as conn:
                if after is not None:
                    past = await self._seq_of(conn, user_id, conversation_id, after, "after")
                if before is not None:
                    until = await self._seq_of(conn, user_id, conversation_id, before, "before")
        ascending = order == "asc"
        low, high = (past, until) if ascending else (until, past)
        # Only "before" given: take the items nearest to it, scanning away from it.
        scan_ascending = ascending != (until is not None and past is None)
        rows = await self._read_messages(
            user_id,
            conversation_id,
            ascending=scan_ascending,
            limit=limit + 1,
            past=low,
            until=high,
            max_bytes=self.max_response_bytes,
        )
        if not rows:
            async with self._transaction() as conn:
                await self._require_conversation(conn, user_id, conversation_id)
        fitting = limits.within_bytes(rows[:limit], self.max_response_bytes)
        # More: a row past the limit came back, or the byte budget cut the read (the database
        # returned the row that crossed it; whether any follow it, only the next page knows).
        has_more = len(rows) > fitting or sum(row["size"] for row in rows) > self.max_response_bytes
        items = [_message(row) for row in rows[:fitting]]
        if scan_ascending != ascending:
            items.reverse()
        # After the last item; on an empty page, the position asked from (to poll again).
        position = items[-1].seq if items else past
        next_cursor = (
            None if position is None else pagination.encode_message_cursor(position, order)
        )
        return MessagePage(
            data=items,
            has_more=has_more,
            next_cursor=next_cursor,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
        )

    async def get_chat_history(
        self, user_id: str, conversation_id: uuid.UUID, limit: int | None = None
    ) -> list[MessageRead]:
        """The newest ``limit`` messages (all when ``None``), oldest first."""
        check_user_id(user_id)
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise ValidationError("must be a positive integer or None", loc=("limit",))
        rows = await self._read_messages(
            user_id, conversation_id, ascending=limit is None, limit=limit
        )
        if not rows:
            async with self._transaction() as conn:
                await self._require_conversation(conn, user_id, conversation_id)
        items = [_message(row) for row in rows]
        if limit is not None:
            items.reverse()
        return items

    async def _read_messages(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        ascending: bool,
        limit: int | None,
        past: int | None = None,
        until: int | None = None,
        max_bytes: int | None = None,
    ) -> list[Mapping[Any, Any]]:
        """Messages of a conversation with ``past < seq < until``, by seq, at most ``limit``,
        and (with ``max_bytes``) only those that start within that many bytes of content and
        tool calls (each row carries its ``size``; the caller cuts the one that crosses).

        The hot read path. On PostgreSQL it is one statement on the pooled asyncpg connection,
        in asyncpg's own implicit transaction (safe behind PgBouncer: nothing outlives it),
        without SQLAlchemy's statement machinery."""
        if self._is_postgres:
            arguments = [
                conversation_id,
                user_id,
                0 if past is None else past,
                _MAX_SEQ if until is None else until,
                limit,
            ]
            sql = _RANGE_SQL[ascending] if max_bytes is None else _PAGE_SQL[ascending]
            if max_bytes is not None:
                arguments.append(max_bytes)
            async with self._driver() as driver:
                rows: list[Mapping[Any, Any]] = await driver.fetch(sql, *arguments)
                return rows
        owned = (_M.conversation_id == conversation_id, _M.user_id == user_id)
        query = limits.bounded_range(
            list(messages.c),
            owned,
            self._size,
            ascending=ascending,
            limit=limit,
            past=past,
            until=until,
            max_bytes=max_bytes,
        )
        async with self._transaction() as conn:
            return [row._mapping for row in await conn.execute(query)]

    async def get_context_window(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        max_tokens: int,
        model: str | None = None,
    ) -> ContextWindow:
        """The messages to send to an LLM within ``max_tokens`` (SPEC section 4).

        The leading system messages, then the newest contiguous run that fits, oldest first.
        Tool calls and their results stay together: an assistant message with tool calls is
        kept only with all its results right after it (one whose calls were never all answered
        is left out, with the results it did get), and a tool result only with its call.

        Reads from the newest message backwards in bounded chunks through the
        ``(conversation_id, seq)`` index, so the cost follows what fits, not the history's length.
        """
        check_user_id(user_id)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValidationError("must be a positive integer", loc=("max_tokens",))
        counter = tokens.counter(tokens.encoding_for_model(model)) if model else self.tokens
        stored_counts = counter.encoding == self.tokens.encoding

        def cost(row: Any) -> int:
            if stored_counts and row.token_count is not None:
                return int(row.token_count)
            return counter.count_message(row._mapping)

        owned = (_M.conversation_id == conversation_id, _M.user_id == user_id)
        budget = _Budget(max_tokens, self.max_response_bytes, cost)
        async with self._transaction() as conn:
            system = await self._system_prefix(conn, owned, budget)
            if not system:
                await self._require_conversation(conn, user_id, conversation_id)
                if budget.tokens > max_tokens:  # the reply's priming alone
                    raise ValidationError(f"must be at least {budget.tokens}", loc=("max_tokens",))
            run, truncated = await self._newest_run(
                conn, owned, system[-1].seq if system else 0, budget
            )
        return ContextWindow(
            messages=[openai_message(row) for row in [*system, *run]],
            token_count=budget.tokens,
            max_tokens=max_tokens,
            truncated=truncated,
            encoding=counter.encoding,
            exact=counter.exact,
        )

    async def _system_prefix(
        self, conn: AsyncConnection, owned: tuple[ColumnElement[bool], ...], budget: _Budget
    ) -> list[Any]:
        """The conversation's leading system messages, read forwards in small LIMITed pages
        (a LIMIT keeps the planner on the index, whatever the conversation's length); an error
        as soon as they pass the token or byte budget."""
        prefix: list[Any] = []
        after = 0
        while True:
            query = limits.bounded_range(
                _WINDOW_COLUMNS,
                owned,
                self._size,
                ascending=True,
                limit=_SYSTEM_CHUNK,
                past=after,
                max_bytes=budget.bytes_left,
            )
            rows = (await conn.execute(query)).all()
            for row in rows:
                if row.role != "system":
                    return prefix
                if not budget.take([row]):
                    raise ValidationError(
                        "the leading system messages alone need more than "
                        f"{budget.max_tokens} tokens or {budget.max_bytes} bytes",
                        loc=("max_tokens",),
                    )
                prefix.append(row)
            if len(rows) < _SYSTEM_CHUNK:
                return prefix
            after = rows[-1].seq

    async def _newest_run(
        self,
        conn: AsyncConnection,
        owned: tuple[ColumnElement[bool], ...],
        after_seq: int,
        budget: _Budget,
    ) -> tuple[list[Any], bool]:
        """Walk back from the newest message, taking whole groups (a message, or an assistant
        message with all of its tool results) while they fit."""
        # Start small and grow fourfold: few statements, and rows read stay within four times
        # what fits (plus the first chunk). Every message costs at least TOKENS_PER_MESSAGE,
        # which bounds how many can fit at all; the byte budget bounds what one read returns.
        most = (budget.max_tokens - budget.tokens) // tokens.TOKENS_PER_MESSAGE + 1
        chunk = min(_CONTEXT_FIRST_CHUNK, most)
        taken: list[Any] = []  # newest first
        pending: list[Any] = []  # tool results seen since the last non-tool message
        below: int | None = None
        while True:
            room = budget.bytes_left
            query = limits.bounded_range(
                _WINDOW_COLUMNS,
                owned,
                self._size,
                ascending=False,
                limit=chunk,
                past=after_seq,
                until=below,
                max_bytes=room,
            )
            rows = (await conn.execute(query)).all()
            for row in rows:
                if row.role == "tool":
                    pending.append(row)
                    continue
                group = [row]
                if row.tool_calls:
                    wanted = {call["id"] for call in row.tool_calls}
                    results = [t for t in pending if t.tool_call_id in wanted]
                    if {t.tool_call_id for t in results} != wanted:
                        pending = []  # never all answered: leave it out, with its results
                        continue
                    group = [*results, row]  # newest first, like `taken`
                pending = []  # results not right after their call cannot be replayed
                if not budget.take(group):
                    return taken[::-1], True
                taken += group
            if len(rows) < chunk:
                # Fewer rows than asked: the history ended, or the byte budget cut the read
                # (the row that crossed it came back; it did not fit, or was left out).
                return taken[::-1], sum(row.size for row in rows) > room
            below = rows[-1].seq
            chunk = min(_CONTEXT_MAX_CHUNK, chunk * 4, most)

    # -- export and import -------------------------------------------------------------------

    _IMPORT_BATCH_CHARS: Final = 4_000_000  # text per batch of an import, whatever ``chunk``

    async def iter_user_ids(self, *, chunk: int = 1000) -> AsyncIterator[str]:
        """Every user that has a conversation, in order (for exports of the whole database)."""
        after: str | None = None
        while True:
            async with self._transaction() as conn:
                users = await self._user_id_page(conn, after, chunk)
            for user_id in users:
                yield user_id
            if len(users) < chunk:
                return
            after = users[-1]

    async def _user_id_page(
        self, conn: AsyncConnection, after: str | None, chunk: int
    ) -> list[str]:
        query = select(_C.user_id).distinct().order_by(_C.user_id).limit(chunk)
        if after is not None:
            query = query.where(_C.user_id > after)
        return list((await conn.execute(query)).scalars())

    async def iter_messages(
        self, user_id: str, conversation_id: uuid.UUID, *, chunk: int = 1000
    ) -> AsyncIterator[MessageRead]:
        """Every message of a conversation in seq order, read ``chunk`` rows at a time."""
        check_user_id(user_id)
        after = 0
        while True:
            async with self._transaction() as conn:
                rows = (
                    await conn.execute(
                        select(messages)
                        .where(
                            _M.conversation_id == conversation_id,
                            _M.user_id == user_id,
                            _M.seq > after,
                        )
                        .order_by(_M.seq.asc())
                        .limit(chunk)
                    )
                ).all()
                if not rows and after == 0:
                    await self._require_conversation(conn, user_id, conversation_id)
            for row in rows:
                yield _message(row._mapping)
            if len(rows) < chunk:
                return
            after = rows[-1].seq

    async def iter_export(
        self, user_ids: Iterable[str] | None = None, *, chunk: int = 200
    ) -> AsyncGenerator[ConversationRead | MessageRead, None]:
        """Every conversation of ``user_ids`` (of every user when ``None``), each followed by
        its messages in seq order; users in the order given (else by id), a user's
        conversations most recently updated first.

        All of it is read in ONE snapshot, as ``pg_dump`` does: exactly the conversations and
        messages committed when the export began, each once, whatever is written meanwhile.
        PostgreSQL: one ``REPEATABLE READ, READ ONLY`` transaction (one transaction, so fine
        behind PgBouncer in transaction mode); SQLite: one read transaction, a snapshot in WAL
        mode (writers carry on). Per user two statements, both naming ``user_id``, stream side
        by side through server-side cursors, ``chunk`` rows at a time: the conversations and
        their messages in the same order. Memory holds a chunk, never a user or a conversation.

        Stopping early? Close the iterator (``contextlib.aclosing``): that ends the snapshot."""
        given = None if user_ids is None else list(dict.fromkeys(map(check_user_id, user_ids)))
        async with self._errors(), self.engine.connect() as conn:
            if self._is_postgres:
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            async with conn.begin():
                if not self._is_postgres:
                    raw = (await conn.get_raw_connection()).driver_connection
                    if not getattr(raw, "in_transaction", False):
                        # pysqlite starts no transaction for a SELECT (unless the engine has a
                        # "begin" hook): each statement would see the database as it is.
                        await conn.exec_driver_sql("BEGIN")
                async for user_id in self._export_users(conn, given):
                    async for item in self._export_user(conn, user_id, chunk):
                        yield item

    async def _export_users(
        self, conn: AsyncConnection, given: list[str] | None
    ) -> AsyncIterator[str]:
        if given is not None:
            for user_id in given:
                yield user_id
            return
        after: str | None = None
        while True:
            users = await self._user_id_page(conn, after, 1000)
            for user_id in users:
                yield user_id
            if len(users) < 1000:
                return
            after = users[-1]

    async def _export_user(
        self, conn: AsyncConnection, user_id: str, chunk: int
    ) -> AsyncIterator[ConversationRead | MessageRead]:
        order = (_C.updated_at.desc(), _C.id.desc())
        heads = select(*_CONVERSATION_COLUMNS).where(_C.user_id == user_id).order_by(*order)
        bodies = (
            select(messages)
            .join(conversations, (_C.id == _M.conversation_id) & (_C.user_id == _M.user_id))
            .where(_C.user_id == user_id, _M.user_id == user_id)
            .order_by(*order, _M.seq.asc())
        )
        streaming = {"yield_per": chunk}
        async with (
            conn.stream(heads, execution_options=streaming) as head_rows,
            conn.stream(bodies, execution_options=streaming) as message_rows,
        ):
            pending: MessageRead | None = None
            bodies_left = aiter(message_rows)
            async for head in head_rows:
                conversation = _conversation(head._mapping)
                yield conversation
                while True:
                    if pending is None:
                        row = await anext(bodies_left, None)
                        if row is None:
                            break
                        pending = _message(row._mapping)
                    if pending.conversation_id != conversation.id:
                        break  # the next conversation's (this one has no more)
                    yield pending
                    pending = None
            if pending is not None:  # both statements read one snapshot: cannot happen
                raise RuntimeError(f"export: message {pending.id} out of step")

    async def import_conversation(
        self,
        record: ConversationRecord | Mapping[str, Any],
        items: Iterable[MessageRecord | Mapping[str, Any]] | None = None,
        *,
        chunk: int = _IMPORT_CHUNK,
    ) -> bool:
        """Store an exported conversation whole, keeping its ids, seq and timestamps.

        Atomic: all of it or nothing. Returns ``False`` (and writes nothing) when the
        conversation is already stored with the same messages; ``ConflictError`` when its id is
        stored with other messages or a message id is taken.

        With ``items``, ``record`` is the conversation without its messages and the messages
        come from ``items`` (a generator, say): validated and inserted at most ``chunk`` (or
        about 4 million characters) at a time inside the one transaction, so memory holds one
        chunk, never the conversation. An exception from ``items`` rolls it all back."""
        if items is None:
            record, items = self._split_record(record)
        elif (isinstance(record, Mapping) and "messages" in record) or (
            isinstance(record, ConversationRecord) and record.messages
        ):
            raise ValidationError("given both in the record and as items", loc=("messages",))
        spec: ConversationRecord = _parse(ConversationRecord, record)
        check_user_id(spec.user_id)
        try:
            async with self._transaction() as conn:
                return await self._import(conn, spec, items, chunk)
        except IntegrityError as exc:
            raise ConflictError(
                f"conversation {spec.id}: an id is already stored elsewhere"
            ) from exc

    async def _import(
        self,
        conn: AsyncConnection,
        spec: ConversationRecord,
        items: Iterable[MessageRecord | Mapping[str, Any]],
        chunk: int,
    ) -> bool:
        existing = await self._find_conversation(conn, spec.user_id, spec.id)
        if existing is None:
            await conn.execute(
                insert(conversations).values(
                    id=spec.id,
                    user_id=spec.user_id,
                    title=spec.title,
                    metadata=spec.metadata,
                    created_at=spec.created_at,
                    updated_at=spec.updated_at,
                    message_count=0,  # counted as the messages go in
                )
            )
        count, last, had_user = 0, None, False
        for batch in self._import_batches(items, chunk):
            if existing is None:
                await self._import_batch(conn, spec, count, batch)
            count += len(batch)
            last = batch[-1].id
            had_user = had_user or any(m.role == "user" for m in batch)
        if existing is not None:
            stored_last = (
                await conn.execute(
                    select(_M.id)
                    .where(_M.conversation_id == spec.id, _M.user_id == spec.user_id)
                    .order_by(_M.seq.desc())
                    .limit(1)
                )
            ).scalar()
            if existing.message_count == count and stored_last == last:
                return False
            raise ConflictError(f"conversation {spec.id} is already stored with other messages")
        if count:
            await conn.execute(
                update(conversations)
                .where(_C.user_id == spec.user_id, _C.id == spec.id)
                .values(message_count=count, has_user_message=had_user)
            )
        return True

    def _import_batches(
        self, items: Iterable[MessageRecord | Mapping[str, Any]], chunk: int
    ) -> Iterator[list[MessageRecord]]:
        """The messages validated, in batches of at most ``chunk`` messages or about
        ``_IMPORT_BATCH_CHARS`` characters of text."""
        if isinstance(items, str | bytes | Mapping):
            raise ValidationError("must be a list of messages", loc=("messages",))
        batch: list[MessageRecord] = []
        chars = 0
        for index, item in enumerate(items):
            try:
                message: MessageRecord = _parse(MessageRecord, item)
            except ValidationError as exc:
                raise ValidationError(
                    [FieldError(("messages", index, *e.loc), e.msg, e.type) for e in exc.errors]
                ) from None
            if message.seq != index + 1:
                raise ValidationError(
                    f"seq must run 1, 2, 3, ...; item {index} has {message.seq}",
                    loc=("messages",),
                )
            size = message.text_size()
            if size > self.max_content_chars:
                raise ValidationError(
                    f"is {size} characters; the limit is {self.max_content_chars}",
                    loc=("messages", index, "content"),
                )
            batch.append(message)
            chars += size
            if len(batch) >= chunk or chars >= self._IMPORT_BATCH_CHARS:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch

    async def _import_batch(
        self,
        conn: AsyncConnection,
        spec: ConversationRecord,
        start: int,
        batch: list[MessageRecord],
    ) -> None:
        try:
            await tool_pairing.apply(conn, spec.user_id, spec.id, batch, [m.seq for m in batch])
        except ValidationError as exc:  # its locations count from the batch's first message
            raise ValidationError([self._shift(e, start) for e in exc.errors]) from None
        rows = [self._row(spec.user_id, spec.id, m, m.seq, m.created_at) for m in batch]
        await conn.execute(insert(messages), rows)

    @staticmethod
    def _shift(error: FieldError, start: int) -> FieldError:
        first = error.loc[0] if error.loc else None
        if isinstance(first, int):
            return FieldError(("messages", start + first, *error.loc[1:]), error.msg, error.type)
        return FieldError(("messages", start, *error.loc), error.msg, error.type)

    @staticmethod
    def _split_record(
        record: ConversationRecord | Mapping[str, Any],
    ) -> tuple[ConversationRecord | Mapping[str, Any], Iterable[Any]]:
        """A whole record as its head and its messages (left in the head unless a list, so
        that validation names what is wrong with them)."""
        if isinstance(record, ConversationRecord):
            return record, record.messages
        if isinstance(record, Mapping) and isinstance(record.get("messages"), list):
            return {k: v for k, v in record.items() if k != "messages"}, record["messages"]
        return record, ()

    # -- helpers ---------------------------------------------------------------------------

    def _row(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        message: MessageCreate,
        seq: int,
        created_at: datetime,
    ) -> dict[str, Any]:
        row = {
            "id": message.id or uuid7(),
            "user_id": user_id,
            "conversation_id": conversation_id,
            "seq": seq,
            "role": message.role,
            "content": message.content,
            "name": message.name,
            "tool_calls": message.stored_tool_calls(),
            "tool_call_id": message.tool_call_id,
            "metadata": message.metadata,
            "created_at": created_at,
        }
        row["token_count"] = self.tokens.count_message(row)
        return row

    async def _find_conversation(
        self, conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID
    ) -> ConversationRead | None:
        row = (
            await conn.execute(
                select(*_CONVERSATION_COLUMNS).where(
                    _C.user_id == user_id, _C.id == conversation_id
                )
            )
        ).first()
        return None if row is None else _conversation(row._mapping)

    async def _require_conversation(
        self, conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID
    ) -> None:
        found = (
            await conn.execute(select(_C.id).where(_C.user_id == user_id, _C.id == conversation_id))
        ).first()
        if found is None:
            raise ConversationNotFoundError(conversation_id)

    async def _seq_of(
        self,
        conn: AsyncConnection,
        user_id: str,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        field: str,
    ) -> int:
        seq = (
            await conn.execute(
                select(_M.seq).where(
                    _M.user_id == user_id,
                    _M.conversation_id == conversation_id,
                    _M.id == message_id,
                )
            )
        ).scalar()
        if seq is None:
            await self._require_conversation(conn, user_id, conversation_id)
            raise InvalidCursorError("is not a message of this conversation", loc=(field,))
        return int(seq)

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """A pooled asyncpg connection used directly, with failures as for a transaction."""
        import asyncpg

        async with self._errors(), self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            try:
                yield raw.driver_connection
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                OSError,
                TimeoutError,
            ) as exc:
                if not isinstance(exc, asyncpg.PostgresError) or _sqlstate_unavailable(
                    exc.sqlstate
                ):
                    await conn.invalidate()  # a broken connection must not go back
                    raise UnavailableError(f"the database is unavailable: {exc}") from exc
                raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, with database failures turned into :class:`UnavailableError`."""
        async with self._errors(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Database failures turned into :class:`UnavailableError`."""
        try:
            yield
        except (ChatHistoryError, IntegrityError):
            raise
        except PoolTimeoutError as exc:
            raise UnavailableError("no database connection came free in time") from exc
        except (OperationalError, InterfaceError) as exc:
            raise UnavailableError(f"the database is unavailable: {_brief(exc)}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or _is_unavailable(exc):
                raise UnavailableError(f"the database is unavailable: {_brief(exc)}") from exc
            raise
        except (TimeoutError, OSError) as exc:
            raise UnavailableError(f"the database is unavailable: {exc}") from exc


class _Budget:
    """What a context window may still take: tokens (the caller's ``max_tokens``) and bytes
    of content and tool calls (the store's ``max_response_bytes``)."""

    def __init__(self, max_tokens: int, max_bytes: int, cost: Callable[[Any], int]) -> None:
        self.max_tokens = max_tokens
        self.max_bytes = max_bytes
        self.tokens = tokens.REPLY_PRIMING
        self.bytes = 0
        self._cost = cost

    @property
    def bytes_left(self) -> int:
        return self.max_bytes - self.bytes

    def take(self, group: Sequence[Any]) -> bool:
        """Count the group in if it fits in both budgets; ``False`` (and nothing taken) if not."""
        more_tokens = sum(self._cost(row) for row in group)
        more_bytes = sum(row.size for row in group)
        if self.tokens + more_tokens > self.max_tokens or self.bytes + more_bytes > self.max_bytes:
            return False
        self.tokens += more_tokens
        self.bytes += more_bytes
        return True


class _Opening:
    """What :meth:`ChatHistory.open` returns: an async context manager, or an awaitable."""

    def __init__(
        self,
        cls: type[ChatHistory],
        database: str | AsyncEngine,
        migrate: bool,
        store_options: dict[str, Any],
        engine_options: dict[str, Any],
    ) -> None:
        self._args = (cls, database, migrate, store_options, engine_options)
        self._store: ChatHistory | None = None

    async def _open(self) -> ChatHistory:
        cls, database, migrate, store_options, engine_options = self._args
        owns = not isinstance(database, AsyncEngine)
        engine = (
            database
            if isinstance(database, AsyncEngine)
            else create_engine(database, **engine_options)
        )
        store = cls(engine, **store_options, owns_engine=owns)
        if migrate:
            from chathistory import migrations

            try:
                await migrations.upgrade(engine)
            except BaseException:
                await store.close()
                raise
        return store

    def __await__(self) -> Generator[Any, None, ChatHistory]:
        return self._open().__await__()

    async def __aenter__(self) -> ChatHistory:
        self._store = await self._open()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()


def _parse(model: type[pydantic.BaseModel], data: Any) -> Any:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc) from None


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"must be an integer from 1 to {MAX_PAGE}", loc=("limit",))


def _forward(now: datetime) -> ColumnElement[Any]:
    """``updated_at`` never moves back, whatever the clocks of several app servers say."""
    stamp = literal(now, _C.updated_at.type)
    return case((_C.updated_at < stamp, stamp), else_=_C.updated_at)


def _conversation(row: Mapping[Any, Any]) -> ConversationRead:
    return ConversationRead.model_construct(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
    )


def _message(row: Mapping[Any, Any]) -> MessageRead:
    return MessageRead.model_construct(
        id=row["id"],
        conversation_id=row["conversation_id"],
        user_id=row["user_id"],
        seq=row["seq"],
        role=row["role"],
        content=row["content"],
        name=row["name"],
        tool_calls=row["tool_calls"],
        tool_call_id=row["tool_call_id"],
        metadata=row["metadata"],
        token_count=row["token_count"],
        created_at=row["created_at"],
    )


def _same_message(message: MessageCreate, stored: MessageRead, conversation_id: uuid.UUID) -> bool:
    return (
        stored.conversation_id == conversation_id
        and stored.role == message.role
        and stored.content == message.content
        and stored.name == message.name
        and stored.tool_calls == message.stored_tool_calls()
        and stored.tool_call_id == message.tool_call_id
        and stored.metadata == message.metadata
    )


# "The database can't serve this now": connection failures (08), insufficient resources (53),
# shutdown and restart (57P), refused credentials or a missing role (28), a missing database
# (3D000) and a read-only server, such as a standby or default_transaction_read_only (25006).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "28", "3D000", "25006")


def _is_unavailable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return _sqlstate_unavailable(code)


def _sqlstate_unavailable(code: object) -> bool:
    return isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__


__all__ = ["UNSET", "ChatHistory"]
