"""``ChatHistory``: the async store every face calls. All rules live here.

Each public method is one transaction and names its owner in every statement (``user_id``), so
another user's rows are simply not found. ``seq`` is assigned under the conversation's row lock
(the ``UPDATE ... RETURNING`` that also bumps ``message_count`` and ``updated_at`` comes first in
the appending transaction), so concurrent appends neither collide nor leave gaps.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final, Literal

import pydantic
from sqlalchemy import case, delete, insert, literal, select, tuple_, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement, TextClause, text

from chathistory import pagination, tokens
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
    Page,
    check_user_id,
    from_pydantic,
    openai_message,
    title_from,
)

log = logging.getLogger("chathistory")

Order = Literal["asc", "desc"]
DEFAULT_MAX_CONTENT_CHARS: Final = 100_000
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
_PAGE_SELECT: Final = (
    "SELECT id, conversation_id, user_id, seq, role, content, name, tool_calls,"
    " tool_call_id, metadata, token_count, created_at FROM messages"
    " WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4"
)
_PAGE_SQL: Final = {
    True: _PAGE_SELECT + " ORDER BY seq ASC LIMIT $5",
    False: _PAGE_SELECT + " ORDER BY seq DESC LIMIT $5",
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
        encoding: str = tokens.DEFAULT_ENCODING,
        owns_engine: bool = False,
    ) -> None:
        self.engine = engine
        self.max_content_chars = max_content_chars
        self.tokens = tokens.counter(encoding)
        self._owns_engine = owns_engine
        self._is_postgres = engine.dialect.name == "postgresql"

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        database: str | AsyncEngine,
        *,
        migrate: bool = True,
        max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
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
        options = {"max_content_chars": max_content_chars, "encoding": encoding}
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
        """Raise :class:`UnavailableError` unless the database answers."""
        async with self._transaction() as conn:
            await conn.execute(select(literal(1)))

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
                    .values(message_count=0, updated_at=_forward(utcnow()))
                    .returning(_C.id)
                )
            ).first()
            if locked is None:
                raise ConversationNotFoundError(conversation_id)
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
                .returning(_C.message_count, _C.title)
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
        await self._check_tool_results(conn, user_id, conversation_id, batch)

        # 4. A conversation nobody titled takes its first user message as title.
        if locked.title is None:
            await self._maybe_title(conn, user_id, conversation_id, batch, first_seq)

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

    async def _check_tool_results(
        self,
        conn: AsyncConnection,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
    ) -> None:
        open_in_batch: set[str] = set()  # called by an assistant message of this batch
        answered: set[str] = set()  # answered by a tool message of this batch
        errors: list[FieldError] = []
        for index, message in enumerate(batch):
            if message.tool_calls:
                open_in_batch.update(call.id for call in message.tool_calls)
                answered.difference_update(call.id for call in message.tool_calls)
                continue
            if message.role != "tool":
                continue
            call_id = message.tool_call_id
            assert call_id is not None
            if call_id in open_in_batch:
                open_in_batch.discard(call_id)
            elif call_id in answered or not await self._tool_call_is_open(
                conn, user_id, conversation_id, call_id
            ):
                loc: tuple[str | int, ...] = (index,) if len(batch) > 1 else ()
                errors.append(
                    FieldError(
                        (*loc, "tool_call_id"),
                        f"{call_id!r} answers no open tool call of an earlier assistant "
                        "message in this conversation",
                        "tool_call_not_open",
                    )
                )
            answered.add(call_id)
        if errors:
            raise ValidationError(errors)

    async def _tool_call_is_open(
        self, conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, call_id: str
    ) -> bool:
        """Whether the newest assistant message that called ``call_id`` still awaits its result."""
        calls: ColumnElement[bool] | TextClause
        if self._is_postgres:
            calls = type_coerce(_M.tool_calls, JSONB).contains([{"id": call_id}])
        else:
            calls = text(
                "EXISTS (SELECT 1 FROM json_each(messages.tool_calls) AS call "
                "WHERE json_extract(call.value, '$.id') = :call_id)"
            ).bindparams(call_id=call_id)
        asked = (
            await conn.execute(
                select(_M.seq)
                .where(
                    _M.conversation_id == conversation_id,
                    _M.user_id == user_id,
                    _M.role == "assistant",
                    _M.tool_calls.is_not(None),
                    calls,
                )
                .order_by(_M.seq.desc())
                .limit(1)
            )
        ).scalar()
        if asked is None:
            return False
        answered = (
            await conn.execute(
                select(_M.seq)
                .where(
                    _M.conversation_id == conversation_id,
                    _M.user_id == user_id,
                    _M.tool_call_id == call_id,
                    _M.seq > asked,
                )
                .limit(1)
            )
        ).scalar()
        return answered is None

    async def _maybe_title(
        self,
        conn: AsyncConnection,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
        first_seq: int,
    ) -> None:
        first_user = next((m for m in batch if m.role == "user"), None)
        if first_user is None:
            return
        if first_seq > 1:
            earlier_user = (
                await conn.execute(
                    select(_M.seq)
                    .where(
                        _M.conversation_id == conversation_id,
                        _M.user_id == user_id,
                        _M.role == "user",
                        _M.seq < first_seq,
                    )
                    .limit(1)
                )
            ).scalar()
            if earlier_user is not None:
                return
        title = title_from(first_user.text())
        if title is not None:
            await conn.execute(
                update(conversations)
                .where(_C.user_id == user_id, _C.id == conversation_id, _C.title.is_(None))
                .values(title=title)
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
        )
        if not rows:
            async with self._transaction() as conn:
                await self._require_conversation(conn, user_id, conversation_id)
        items = [_message(row) for row in rows[:limit]]
        if scan_ascending != ascending:
            items.reverse()
        # After the last item; on an empty page, the position asked from (to poll again).
        position = items[-1].seq if items else past
        next_cursor = (
            None if position is None else pagination.encode_message_cursor(position, order)
        )
        return MessagePage(
            data=items,
            has_more=len(rows) > limit,
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
    ) -> list[Mapping[Any, Any]]:
        """Messages of a conversation with ``past < seq < until``, by seq, at most ``limit``.

        The hot read path. On PostgreSQL it is one statement on the pooled asyncpg connection,
        in asyncpg's own implicit transaction (safe behind PgBouncer: nothing outlives it),
        without SQLAlchemy's statement machinery."""
        if self._is_postgres:
            async with self._driver() as driver:
                rows: list[Mapping[Any, Any]] = await driver.fetch(
                    _PAGE_SQL[ascending],
                    conversation_id,
                    user_id,
                    0 if past is None else past,
                    _MAX_SEQ if until is None else until,
                    limit,
                )
                return rows
        query = select(messages).where(_M.conversation_id == conversation_id, _M.user_id == user_id)
        if past is not None:
            query = query.where(_M.seq > past)
        if until is not None:
            query = query.where(_M.seq < until)
        query = query.order_by(_M.seq.asc() if ascending else _M.seq.desc()).limit(limit)
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
        async with self._transaction() as conn:
            system = await self._system_prefix(conn, owned)
            if not system:
                await self._require_conversation(conn, user_id, conversation_id)
            used = tokens.REPLY_PRIMING + sum(cost(row) for row in system)
            if used > max_tokens:
                raise ValidationError(
                    f"the leading system messages alone need {used} tokens", loc=("max_tokens",)
                )
            run, used, truncated = await self._newest_run(
                conn, owned, system[-1].seq if system else 0, max_tokens, used, cost
            )
        return ContextWindow(
            messages=[openai_message(row) for row in [*system, *run]],
            token_count=used,
            max_tokens=max_tokens,
            truncated=truncated,
            encoding=counter.encoding,
            exact=counter.exact,
        )

    async def _system_prefix(
        self, conn: AsyncConnection, owned: tuple[ColumnElement[bool], ...]
    ) -> list[Any]:
        """The conversation's leading system messages, read forwards in small LIMITed pages
        (a LIMIT keeps the planner on the index, whatever the conversation's length)."""
        prefix: list[Any] = []
        after = 0
        while True:
            rows = (
                await conn.execute(
                    select(*_WINDOW_COLUMNS)
                    .where(*owned, _M.seq > after)
                    .order_by(_M.seq.asc())
                    .limit(_SYSTEM_CHUNK)
                )
            ).all()
            for row in rows:
                if row.role != "system":
                    return prefix
                prefix.append(row)
            if len(rows) < _SYSTEM_CHUNK:
                return prefix
            after = rows[-1].seq

    async def _newest_run(
        self,
        conn: AsyncConnection,
        owned: tuple[ColumnElement[bool], ...],
        after_seq: int,
        budget: int,
        used: int,
        cost: Callable[[Any], int],
    ) -> tuple[list[Any], int, bool]:
        """Walk back from the newest message, taking whole groups (a message, or an assistant
        message with all of its tool results) while they fit."""
        # Start small and grow fourfold: few statements, and rows read stay within four times
        # what fits (plus the first chunk). Every message costs
        # at least TOKENS_PER_MESSAGE, which bounds how many can fit at all.
        most = (budget - used) // tokens.TOKENS_PER_MESSAGE + 1
        chunk = min(_CONTEXT_FIRST_CHUNK, most)
        taken: list[Any] = []  # newest first
        pending: list[Any] = []  # tool results seen since the last non-tool message
        below: int | None = None
        while True:
            query = select(*_WINDOW_COLUMNS).where(*owned, _M.seq > after_seq)
            if below is not None:
                query = query.where(_M.seq < below)
            rows = (await conn.execute(query.order_by(_M.seq.desc()).limit(chunk))).all()
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
                group_cost = sum(cost(member) for member in group)
                if used + group_cost > budget:
                    return taken[::-1], used, True
                used += group_cost
                taken += group
            if len(rows) < chunk:
                return taken[::-1], used, False
            below = rows[-1].seq
            chunk = min(_CONTEXT_MAX_CHUNK, chunk * 4, most)

    # -- export and import -------------------------------------------------------------------

    async def iter_user_ids(self, *, chunk: int = 1000) -> AsyncIterator[str]:
        """Every user that has a conversation, in order (for exports of the whole database)."""
        after: str | None = None
        while True:
            query = select(_C.user_id).distinct().order_by(_C.user_id).limit(chunk)
            if after is not None:
                query = query.where(_C.user_id > after)
            async with self._transaction() as conn:
                users = list((await conn.execute(query)).scalars())
            for user_id in users:
                yield user_id
            if len(users) < chunk:
                return
            after = users[-1]

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

    async def import_conversation(self, record: ConversationRecord | Mapping[str, Any]) -> bool:
        """Store an exported conversation whole, keeping its ids, seq and timestamps.

        Atomic: all of it or nothing. Returns ``False`` (and writes nothing) when the
        conversation is already stored with the same messages; ``ConflictError`` when its id is
        stored with other messages or a message id is taken."""
        spec: ConversationRecord = _parse(ConversationRecord, record)
        check_user_id(spec.user_id)
        self._check_sizes(spec.messages)
        try:
            async with self._transaction() as conn:
                return await self._import(conn, spec)
        except IntegrityError as exc:
            raise ConflictError(
                f"conversation {spec.id}: an id is already stored elsewhere"
            ) from exc

    async def _import(self, conn: AsyncConnection, spec: ConversationRecord) -> bool:
        existing = await self._find_conversation(conn, spec.user_id, spec.id)
        if existing is not None:
            last = (
                await conn.execute(
                    select(_M.id)
                    .where(_M.conversation_id == spec.id, _M.user_id == spec.user_id)
                    .order_by(_M.seq.desc())
                    .limit(1)
                )
            ).scalar()
            same = existing.message_count == len(spec.messages) and last == (
                spec.messages[-1].id if spec.messages else None
            )
            if same:
                return False
            raise ConflictError(f"conversation {spec.id} is already stored with other messages")
        await conn.execute(
            insert(conversations).values(
                id=spec.id,
                user_id=spec.user_id,
                title=spec.title,
                metadata=spec.metadata,
                created_at=spec.created_at,
                updated_at=spec.updated_at,
                message_count=len(spec.messages),
            )
        )
        await self._check_tool_results(conn, spec.user_id, spec.id, list(spec.messages))
        for start in range(0, len(spec.messages), _IMPORT_CHUNK):
            rows = [
                self._row(spec.user_id, spec.id, message, message.seq, message.created_at)
                for message in spec.messages[start : start + _IMPORT_CHUNK]
            ]
            await conn.execute(insert(messages), rows)
        return True

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


_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")


def _is_unavailable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return _sqlstate_unavailable(code)


def _sqlstate_unavailable(code: object) -> bool:
    return isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__


__all__ = ["UNSET", "ChatHistory"]
