"""``ChatHistory``: the one public entry, a thin facade over the rooms.

Each public method checks its arguments, opens the call's one transaction (commit at the
boundary) and hands it to the room that owns the rule; the hot reads take the database itself
(one statement, no explicit transaction). No rule lives here.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from chathistory import tokens
from chathistory.errors import ConflictError, ConversationNotFoundError, ValidationError
from chathistory.models import utcnow
from chathistory.schemas import (
    ContextWindow,
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    MessageCreate,
    MessagePage,
    MessageRead,
    Page,
    check_user_id,
)
from chathistory.schemas.items import ItemPage
from chathistory.schemas.lifecycle import Flag, PurgeReport, flag
from chathistory.schemas.search import SearchPage
from chathistory.schemas.streaming import MessageUpdate
from chathistory.schemas.transfer import ConversationRecord, MessageRecord
from chathistory.store import (
    appending,
    context,
    conversations,
    items,
    purging,
    reading,
    rows,
    search,
    streaming,
    transfer,
)
from chathistory.store.changes import UNSET as UNSET
from chathistory.store.changes import Unset as _Unset
from chathistory.store.changes import merged as _merged
from chathistory.store.database import DEFAULT_STREAM_TIMEOUT, Database
from chathistory.store.opening import Opening
from chathistory.store.reading import Branch, Order
from chathistory.store.search import turned_off

DEFAULT_MAX_CONTENT_CHARS: Final = 100_000
DEFAULT_MAX_BATCH_MESSAGES: Final = 1000
DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024


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
        stream_timeout: timedelta = DEFAULT_STREAM_TIMEOUT,
        owns_engine: bool = False,
        search: bool = True,  # False: no search rows written; a search is SearchDisabledError
    ) -> None:
        self.engine = engine
        self.max_content_chars = max_content_chars
        self.max_batch_messages = max_batch_messages
        self.max_response_bytes = max_response_bytes
        self.tokens = tokens.counter(encoding)
        self._owns_engine = owns_engine
        self._db = Database(engine if search else turned_off(engine), stream_timeout)
        self._rules = appending.Rules(max_content_chars, max_batch_messages, self.tokens)

    def with_response_budget(self, max_bytes: int) -> ChatHistory:
        """This store with another ``max_response_bytes`` (same engine, still this one's)."""
        view = copy.copy(self)
        view.max_response_bytes = max_bytes
        view._owns_engine = False
        return view

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
        stream_timeout: timedelta = DEFAULT_STREAM_TIMEOUT,
        search: bool = True,
        **engine_options: Any,
    ) -> Opening:
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
            "stream_timeout": stream_timeout,
            "search": search,
        }
        return Opening(cls, database, migrate, options, engine_options)

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
        await self._db.ping()

    # -- conversations ---------------------------------------------------------------------

    async def create_conversation(
        self,
        user_id: str,
        *,
        id: uuid.UUID | None = None,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
        archived: bool = False,
        pinned: bool = False,
        expires_at: datetime | None = None,
    ) -> ConversationRead:
        """Create a conversation. With a client-given ``id`` the call is idempotent: the same
        ``id`` again returns the stored conversation (``ConflictError`` if the title or metadata
        sent differ from what is stored). ``expires_at`` (a future instant) makes it temporary:
        from then on it is gone for every call, and :meth:`purge` deletes it."""
        data: dict[str, Any] = {"id": id, "title": title, "metadata": dict(metadata or {})}
        if archived:
            data["archived"] = archived
        if pinned:
            data["pinned"] = pinned
        if expires_at is not None:
            data["expires_at"] = expires_at
        conversation, _created = await self.create_conversation_idempotent(user_id, data)
        return conversation

    async def create_conversation_idempotent(
        self, user_id: str, data: ConversationCreate | Mapping[str, Any]
    ) -> tuple[ConversationRead, bool]:
        """Like :meth:`create_conversation`, from a create model; also says whether it created."""
        check_user_id(user_id)
        spec = rows.parse(ConversationCreate, data)
        for _attempt in range(2):
            try:
                async with self._db.transaction() as conn:
                    return await conversations.create(conn, user_id, spec)
            except IntegrityError:
                continue  # a concurrent create of the same id won: read what it stored
        raise ConflictError(f"conversation {spec.id} could not be created")  # pragma: no cover

    async def get_or_create_conversation(
        self, user_id: str, conversation_id: uuid.UUID | None = None
    ) -> ConversationRead:
        """The given conversation (created with that id if it does not exist yet), or, without
        an id, the user's most recently updated conversation, or a new one."""
        check_user_id(user_id)
        if conversation_id is None:
            async with self._db.transaction() as conn:
                found = await conversations.newest(conn, user_id)
            if found is not None:
                return found
        conversation, _ = await self.create_conversation_idempotent(
            user_id, ConversationCreate(id=conversation_id)
        )
        return conversation

    async def get_conversation(self, user_id: str, conversation_id: uuid.UUID) -> ConversationRead:
        check_user_id(user_id)
        async with self._db.transaction() as conn:
            found = await conversations.find(conn, user_id, conversation_id)
        if found is None:
            raise ConversationNotFoundError(conversation_id)
        return found

    async def list_conversations(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        archived: bool | Flag = False,
        pinned: bool | Flag = "any",
    ) -> Page[ConversationRead]:
        """The user's conversations, most recently updated first, one keyset page at a time.

        ``archived`` (default ``False``: the archived ones are left out) and ``pinned``
        (default ``"any"``) filter: ``True``, ``False`` or ``"any"``. A UI lists its pinned
        section with ``pinned=True`` and the rest with ``pinned=False``. Expired conversations
        are never listed. A conversation that gets a new message while a client walks the list
        moves to the front; the walk never returns an item twice."""
        check_user_id(user_id)
        rows.check_limit(limit)
        archived_is = flag(archived, "archived")
        pinned_is = flag(pinned, "pinned")
        return await conversations.page(
            self._db, user_id, limit, cursor, archived=archived_is, pinned=pinned_is
        )

    async def update_conversation(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        changes: ConversationUpdate | Mapping[str, Any] | None = None,
        *,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, str] | _Unset = UNSET,
        archived: bool | _Unset = UNSET,
        pinned: bool | _Unset = UNSET,
        expires_at: datetime | _Unset | None = UNSET,
        current_message_id: uuid.UUID | _Unset = UNSET,
    ) -> ConversationRead:
        """Change the title and/or replace the metadata, archive or pin it, set or clear
        (``None``) its expiry, switch its active branch (``current_message_id``, SPEC 11);
        fields not given stay as they are. A change of the title or metadata moves
        ``updated_at``; archiving, pinning, the expiry and switching branches do not."""
        check_user_id(user_id)
        data = _merged(
            changes,
            ConversationUpdate,
            title=title,
            metadata=metadata,
            archived=archived,
            pinned=pinned,
            expires_at=expires_at,
            current_message_id=current_message_id,
        )
        values = conversations.changes(data)
        if not values:
            return await self.get_conversation(user_id, conversation_id)
        async with self._db.transaction() as conn:
            return await conversations.update_columns(conn, user_id, conversation_id, values)

    async def delete_conversation(self, user_id: str, conversation_id: uuid.UUID) -> None:
        """Delete a conversation and (by the foreign key's cascade) all of its messages."""
        check_user_id(user_id)
        async with self._db.transaction() as conn:
            await conversations.remove(conn, user_id, conversation_id)

    async def clear_conversation(self, user_id: str, conversation_id: uuid.UUID) -> int:
        """Delete every message of a conversation but keep the conversation (its title and
        metadata); the next message gets seq 1. Returns how many messages went."""
        check_user_id(user_id)
        async with self._db.transaction() as conn:
            return await conversations.clear(conn, user_id, conversation_id)

    async def purge(
        self,
        *,
        older_than: timedelta | None = None,
        user_id: str | None = None,
        dry_run: bool = False,
        batch_size: int = purging.DEFAULT_BATCH,
        progress: Callable[[int], object] | None = None,
        duty: float = purging.DEFAULT_DUTY,
    ) -> PurgeReport:
        """Delete the expired conversations and, with ``older_than``, every conversation not
        updated for that long, except pinned ones (of ``user_id`` only, when given); their
        messages go with them. Returns the counts deleted (with ``dry_run``: that would be,
        deleting nothing).

        Works in batches of ``batch_size``, each its own short transaction; safe to run from
        several processes at once (each conversation is deleted once, nothing errors); a
        conversation that gets a message while the purge runs is kept. ``progress`` is called
        after each batch with the conversations it deleted (a coroutine function is awaited).
        ``duty`` (above 0, at most 1): the fraction of its time the purge works; after each
        batch it pauses in proportion (0.5: as long as the batch took; 1: no pause)."""
        if user_id is not None:
            check_user_id(user_id)
        return await purging.purge(
            self._db,
            older_than=older_than,
            user_id=user_id,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
            duty=duty,
        )

    async def delete_user_data(self, user_id: str) -> int:
        """Erase every conversation and message of the user; returns how many conversations."""
        check_user_id(user_id)
        async with self._db.transaction() as conn:
            return await conversations.erase_user(conn, user_id)

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
        batch = appending.parse_batch(self._rules, messages)
        return await appending.store(self._db, self._rules, user_id, conversation_id, batch)

    async def get_message(
        self, user_id: str, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> MessageRead:
        check_user_id(user_id)
        return await reading.one(self._db, user_id, conversation_id, message_id)

    async def update_message(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        change: MessageUpdate | Mapping[str, Any] | None = None,
        *,
        content: str | list[dict[str, Any]] | _Unset | None = UNSET,
        append_text: str | _Unset = UNSET,
        tool_calls: list[dict[str, Any]] | _Unset | None = UNSET,
        status: str | _Unset = UNSET,
    ) -> MessageRead:
        """Update an ``in_progress`` assistant message as it streams (SPEC 10): ``content``,
        ``append_text``, ``tool_calls``, ``status`` (``completed`` / ``incomplete`` finish it),
        given as a mapping (or :class:`MessageUpdate`) and/or keyword arguments.
        A finished message raises :class:`ConflictError` (:mod:`chathistory.store.streaming`)."""
        check_user_id(user_id)
        data = _merged(
            change,
            MessageUpdate,
            content=content,
            append_text=append_text,
            tool_calls=tool_calls,
            status=status,
        )
        update: MessageUpdate = rows.parse(MessageUpdate, data)
        now = utcnow()
        async with self._db.transaction() as conn:
            return await streaming.update_message(
                conn,
                self._db.dialect,
                self._rules,
                user_id,
                conversation_id,
                message_id,
                update,
                now,
                self._db.stale_before(now),
            )

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
        branch: Branch = "active",
    ) -> MessagePage:
        """A page of the conversation's messages by ``seq``.

        Continue with ``cursor`` (the previous page's ``next_cursor``), or OpenAI-style with
        ``after`` / ``before`` message ids: ``after`` gives the items that follow that message
        in the list's order, ``before`` the ones just preceding it (still in list order). A page
        stops at ``max_response_bytes`` of content (it always holds at least one message).
        The messages are those of the active branch (SPEC 11), or with ``branch="all"`` every
        message of the conversation.
        """
        check_user_id(user_id)
        return await reading.page(
            self._db,
            user_id,
            conversation_id,
            limit=limit,
            order=order,
            cursor=cursor,
            after=after,
            before=before,
            max_bytes=self.max_response_bytes,
            branch=branch,
        )

    async def get_chat_history(
        self, user_id: str, conversation_id: uuid.UUID, limit: int | None = None
    ) -> list[MessageRead]:
        """The newest ``limit`` messages (all when ``None``), oldest first."""
        check_user_id(user_id)
        return await reading.newest(self._db, user_id, conversation_id, limit)

    # -- items (SPEC 15: OpenAI's item format, in the same history) -------------------------

    async def add_items(
        self, user_id: str, conversation_id: uuid.UUID, new: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Append items atomically, in order, as :mod:`chathistory.store.items` says; ids stored
        with the same item are a replay (nothing added), with another a ConflictError."""
        check_user_id(user_id)
        parsed = items.parse(self._rules, new)
        return await items.add(self._db, self._rules, user_id, conversation_id, parsed)

    async def list_items(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        limit: int = 20,
        after: str | None = None,
        order: Order = "asc",
    ) -> ItemPage:
        """A page of the active branch's items, messages appended the chat way as theirs."""
        check_user_id(user_id)
        return await items.page(
            self._db, user_id, conversation_id, limit=limit, after=after, order=order
        )

    async def get_item(
        self, user_id: str, conversation_id: uuid.UUID, item_id: str
    ) -> dict[str, Any]:
        check_user_id(user_id)
        return await items.one(self._db, user_id, conversation_id, item_id)

    async def search_messages(
        self,
        user_id: str,
        query: str,
        *,
        conversation_id: uuid.UUID | None = None,
        role: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> SearchPage:
        """The user's messages matching ``query`` (the query language of SPEC 8), newest first:
        each hit with its conversation's id and title and an HTML-safe snippet."""
        check_user_id(user_id)
        return await search.search(
            self._db,
            user_id,
            query,
            conversation_id=conversation_id,
            role=role,
            limit=limit,
            cursor=cursor,
            max_bytes=self.max_response_bytes,
        )

    async def get_context_window(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        max_tokens: int,
        model: str | None = None,
    ) -> ContextWindow:
        """The messages to send to an LLM within ``max_tokens`` (SPEC section 4): the leading
        system messages, then the newest contiguous run that fits, oldest first, tool calls
        and their results never split (:mod:`chathistory.store.context`)."""
        check_user_id(user_id)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValidationError("must be a positive integer", loc=("max_tokens",))
        counter = tokens.counter(tokens.encoding_for_model(model)) if model else self.tokens
        stored_counts = counter.encoding == self.tokens.encoding  # the counts rows carry
        budget = context.Budget(max_tokens, self.max_response_bytes, counter, stored_counts)
        streaming_since = self._db.stale_before(utcnow())
        async with self._db.transaction() as conn:
            return await context.window(
                conn, self._db.size, user_id, conversation_id, budget, streaming_since
            )

    # -- export and import -------------------------------------------------------------------

    def iter_user_ids(self, *, chunk: int = 1000) -> AsyncIterator[str]:
        """Every user that has a conversation, in order (for exports of the whole database)."""
        return transfer.user_ids(self._db, chunk=chunk)

    def iter_messages(
        self, user_id: str, conversation_id: uuid.UUID, *, chunk: int = 1000
    ) -> AsyncIterator[MessageRead]:
        """Every message of a conversation in seq order, read ``chunk`` rows at a time."""
        check_user_id(user_id)
        return transfer.conversation_messages(self._db, user_id, conversation_id, chunk=chunk)

    def iter_export(
        self, user_ids: Iterable[str] | None = None, *, chunk: int = 200
    ) -> AsyncGenerator[ConversationRead | MessageRead, None]:
        """Every conversation of ``user_ids`` (of every user when ``None``), each followed by
        its messages in seq order; users in the order given (else by id), a user's
        conversations most recently updated first.

        All of it is read in ONE snapshot, as ``pg_dump`` does: exactly the conversations and
        messages committed when the export began, each once, whatever is written meanwhile.
        Memory holds ``chunk`` rows, never a user or a conversation. Stopping early? Close the
        iterator (``contextlib.aclosing``): that ends the snapshot."""
        given = None if user_ids is None else list(dict.fromkeys(map(check_user_id, user_ids)))
        return transfer.export(self._db, given, chunk=chunk)

    async def import_conversation(
        self,
        record: ConversationRecord | Mapping[str, Any],
        items: Iterable[MessageRecord | Mapping[str, Any]] | None = None,
        *,
        chunk: int = transfer.IMPORT_CHUNK,
    ) -> bool:
        """Store an exported conversation whole, keeping its ids, seq and timestamps.

        Atomic: all of it or nothing. Returns ``False`` (and writes nothing) when the
        conversation is already stored with the same messages; ``ConflictError`` when its id is
        stored with other messages or a message id is taken.

        With ``items``, ``record`` is the conversation without its messages and the messages
        come from ``items`` (a generator, say): validated and inserted at most ``chunk`` (or
        about 4 million characters) at a time inside the one transaction, so memory holds one
        chunk, never the conversation. An exception from ``items`` rolls it all back."""
        return await transfer.import_conversation(self._db, self._rules, record, items, chunk)
