"""The operations that differ between PostgreSQL and SQLite, named once: :class:`Dialect`.

:class:`~chathistory.store.database.Database` picks one implementation when it opens
(:func:`chathistory.store.dialects.choose`) and the rooms ask it (``db.dialect.read_range(...)``)
instead of testing the backend themselves. PostgreSQL's (:mod:`.postgresql`) runs its hot paths
as hand-written statements straight on the pooled asyncpg connection; SQLite's (:mod:`.sqlite`)
runs the same operations as SQLAlchemy Core statements. The shared test suite proves they agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ColumnElement, Select, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.pagination import ConversationCursor
from chathistory.schemas import ConversationRead, MessageCreate, MessageRead
from chathistory.store import search_syntax

if TYPE_CHECKING:
    from chathistory.store.appending import Rules


class SearchForm(Protocol):
    """One backend's form of each part of search that differs (:mod:`chathistory.store.search`
    keeps the plan: probe, index candidates, walk): how a message's words are kept, how the
    rows a page looks at are found and matched. One per backend, shared: it keys the cache of
    search's statement shapes."""

    def __hash__(self) -> int: ...

    @property
    def size(self) -> ColumnElement[int]:
        """Bytes of a message's content, tool calls and extras as stored (JSON text)."""
        ...

    def insert(self, table: Table) -> Any:
        """The backend's ``INSERT`` that takes ``ON CONFLICT`` (filling the index in)."""
        ...

    def words(self, text: str) -> str:
        """A message's words as the index keeps them."""
        ...

    def values(self, query: search_syntax.Query, user_id: str) -> dict[str, str]:
        """The statement's parameters that say what the query matches."""
        ...

    async def plan(self, conn: AsyncConnection, *, index_only: bool) -> None:
        """Plan the rest of the transaction's statements from the index only
        (``index_only``), or as the planner chooses again."""
        ...

    def owner(self, walk: bool) -> ColumnElement[Any]:
        """The column the user's rows are looked up by."""
        ...

    def look(self, looked: Select[Any], walk: bool) -> Select[Any]:
        """The rows a page looks at: with ``walk``, every row (the caller orders and limits
        them) with its words; else the index's candidates for the query."""
        ...

    def holds(self, pool: Any, walk: bool) -> ColumnElement[bool] | None:
        """Whether a looked-at row matches the query (``None``: every candidate does)."""
        ...

    def loose(self, pool: Any, walk: bool) -> Any:
        """How many walked rows hold the query's words (phrases and exclusions left out)."""
        ...


class Dialect(Protocol):
    """One backend's form of each operation that differs; the rules stay in the rooms."""

    @property
    def name(self) -> str:
        """SQLAlchemy's name of the backend: ``postgresql`` or ``sqlite``."""
        ...

    @property
    def size(self) -> ColumnElement[int]:
        """Bytes of a message's content, tool calls and extras as stored (JSON text)."""
        ...

    @property
    def search(self) -> SearchForm:
        """Its form of search."""
        ...

    @property
    def ping(self) -> str:
        """Readiness in one statement: ``transaction_read_only`` and the schema's revisions."""
        ...

    def insert(self, table: Table) -> Any:
        """The backend's ``INSERT`` that takes ``ON CONFLICT`` (the open calls' and the call
        sites' upserts)."""
        ...

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
        """The hot read and the page: messages of a conversation with ``past < seq < until``,
        by seq, at most ``limit``, and (with ``max_bytes``) only those that start within that
        many bytes of content and tool calls (each row carries its ``size``; the caller cuts
        the one that crosses), of a conversation not expired at ``now``. A conversation known
        to have branched is read along its active branch (unless ``every`` message is asked
        for); one never branched, in seq order; any other reads nothing (the caller takes the
        general path, :mod:`chathistory.store.reading`)."""
        ...

    def messages(
        self, found: Sequence[Mapping[str, Any]], upto: int, stale_before: datetime
    ) -> list[MessageRead]:
        """Read models of the first ``upto`` rows :meth:`read_range` returned."""
        ...

    async def read_items(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        ascending: bool,
        limit: int,
        now: datetime,
    ) -> Sequence[Mapping[str, Any]]:
        """The first page of a conversation's items (SPEC 15): its first or last ``limit``
        rows by seq, every column (``item`` and ``item_id`` too, rows of items with no chat
        form included), in one statement; nothing when the conversation is missing, expired
        at ``now`` or branched (the caller then reads along the branch, or answers 404)."""
        ...

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
        """The listing: at most ``limit`` of the user's conversations not expired at ``now``,
        most recently updated first, after ``position``; and whether more follow."""
        ...

    async def append_at_once(
        self,
        rules: Rules,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
    ) -> list[MessageRead] | None:
        """The batch stored in one statement, or ``None``: the general path
        (:func:`chathistory.store.appending.append`) stores it."""
        ...

    async def purge_batch(
        self,
        conn: AsyncConnection,
        user_id: str,
        pick: Select[Any],
        due: ColumnElement[bool],
    ) -> list[int]:
        """Delete the user's conversations ``pick`` selects (its ids, in order, limited) that
        are still ``due`` as they are deleted; the message counts of those deleted."""
        ...

    async def snapshot_isolation(self, conn: AsyncConnection) -> None:
        """Set up ``conn`` for an export's snapshot, before its transaction begins."""
        ...

    async def snapshot_begun(self, conn: AsyncConnection) -> None:
        """Make the transaction just begun on ``conn`` see one snapshot from now on."""
        ...


__all__ = ["Dialect", "SearchForm"]
