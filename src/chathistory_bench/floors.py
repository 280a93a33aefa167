"""The floors: raw asyncpg doing each operation's work in the fewest round trips.

One statement per operation, each in its implicit transaction, on a connection of its own (no
pool). The append is one statement too: the conversation's ``UPDATE ... RETURNING`` (which
takes the row lock and hands out the seq) in a CTE feeding the ``INSERT`` of the message and
of its search words (cut once: the floor neither counts tokens nor cuts words per append). The
floor writes the same columns the store writes, with the id (a UUIDv7) and timestamp made client
side.

JSON is encoded and decoded as the library does (a json/jsonb codec on each connection).
Statement handling follows the library's mode: ``statement_cache_size=0`` (asyncpg then parses
each statement unnamed, as the library's default engine does) or asyncpg's default statement
cache (named prepared statements, as ``prepared_statement_cache=True``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from chathistory.db import decode_jsonb
from chathistory.models import uuid7
from chathistory.store import search_syntax
from chathistory_bench.fixtures import CONTENT, role
from chathistory_bench.rounds import WriterOp

MESSAGE_COLUMNS = (
    "id, user_id, conversation_id, seq, role, content, name, tool_calls, tool_call_id,"
    " metadata, token_count, created_at, status, updated_at, parent_id"
)
CONVERSATION_COLUMNS = (
    "id, user_id, title, metadata, created_at, updated_at, message_count,"
    " archived, pinned, expires_at"
)
# SPEC 9: every read and write of a conversation refuses an expired one, as the store's do.
LIVE = "(expires_at IS NULL OR expires_at > now())"

# The message follows the conversation's current message and becomes it (SPEC 11), as the
# store's one-statement append does (PostgreSQL 18's RETURNING old).
APPEND_SQL = (
    "WITH c AS (UPDATE conversations SET message_count = message_count + 1,"
    " updated_at = greatest(updated_at, $3), current_message_id = $4"
    " WHERE id = $1 AND user_id = $2"
    " AND (expires_at IS NULL OR expires_at > $3)"
    " RETURNING message_count, old.current_message_id AS parent),"
    " i AS (INSERT INTO messages (id, user_id, conversation_id, seq, role, content, name,"
    " tool_calls, tool_call_id, metadata, token_count, created_at, parent_id)"
    " SELECT $4, $2, $1, c.message_count, $5, $6::jsonb, $7, $8::jsonb, $9, $10::jsonb,"
    " $11, $3, c.parent"
    " FROM c RETURNING seq, parent_id),"
    " s AS (INSERT INTO message_search (message_id, user_id, conversation_id, created_at, words)"
    " SELECT $4, $2, $1, $3, $12::tsvector FROM c WHERE $12::text IS NOT NULL)"
    " SELECT seq, parent_id FROM i"
)
READ_NEWEST_SQL = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608 - constant columns
    " WHERE conversation_id = $1 AND user_id = $2 AND EXISTS (SELECT FROM conversations AS c"
    f" WHERE c.id = $1 AND c.user_id = $2 AND {LIVE.replace('expires_at', 'c.expires_at')})"
    " ORDER BY seq DESC LIMIT $3"
)
# A page within a byte budget (the library's list_messages, 8 MiB by default): each row with its
# size (content, tool calls and extras as JSON text), its content only when it is within its
# share of the budget, $4 (when every row is, the page fits; the library reads again only when
# one is not). The fewest round trips: one statement, as the library's page.
PAGE_SQL = (
    "SELECT id, user_id, conversation_id, seq, role,"  # noqa: S608 - constant columns
    " CASE WHEN size <= $4 THEN content END AS content, name,"
    " CASE WHEN size <= $4 THEN tool_calls END AS tool_calls, tool_call_id, metadata,"
    " token_count, created_at, status, updated_at, parent_id, size"
    f" FROM (SELECT {MESSAGE_COLUMNS}, octet_length(concat(content, tool_calls, extras)) AS size"
    " FROM messages WHERE conversation_id = $1 AND user_id = $2 AND EXISTS (SELECT FROM"
    f" conversations AS c WHERE c.id = $1 AND c.user_id = $2"
    f" AND {LIVE.replace('expires_at', 'c.expires_at')})"
    " ORDER BY seq DESC LIMIT $3) AS page"
)
PAGE_BYTES = 8 * 1024 * 1024  # the library's default budget (max_response_bytes)
LIST_FIRST_SQL = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations"  # noqa: S608 - constant columns
    f" WHERE user_id = $1 AND archived = false AND {LIVE}"
    " ORDER BY updated_at DESC, id DESC LIMIT $2"
)
LIST_AFTER_SQL = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations"  # noqa: S608 - constant columns
    f" WHERE user_id = $1 AND archived = false AND (updated_at, id) < ($2, $3) AND {LIVE}"
    " ORDER BY updated_at DESC, id DESC LIMIT $4"
)
TOKEN_COUNT = 90  # what a turn of CONTENT counts; the floor does not count tokens
WORDS = search_syntax.tsvector_text(CONTENT)  # CONTENT's search words, cut once


@asynccontextmanager
async def connections(dsn: str, *, cached: bool, count: int) -> AsyncIterator[list[Any]]:
    """``count`` direct asyncpg connections, with or without asyncpg's statement cache."""
    import asyncpg

    options: dict[str, Any] = {} if cached else {"statement_cache_size": 0}
    opened: list[Any] = []
    try:
        for _ in range(count):
            conn = await asyncpg.connect(dsn, **options)
            await _json_codecs(conn)
            opened.append(conn)
        yield opened
    finally:
        for conn in opened:
            await conn.close()


async def _json_codecs(conn: Any) -> None:
    # The same work as the library: JSON goes in as Python values and comes back decoded
    # (asyncpg alone would hand jsonb over as text), jsonb with the library's own decoder (its
    # shortcut for strings and empty objects is not the library's advantage over the floor).
    for kind, decoder in (("json", json.loads), ("jsonb", decode_jsonb)):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=decoder, schema="pg_catalog")


async def keep_session(_conn: Any) -> None:
    """A pool's ``reset`` that sends nothing. asyncpg's default sends ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` as each connection goes
    back: a second round trip per operation, which the floor's one statement (in its implicit
    transaction, leaving no session state) does not need and the library does not pay. An open
    transaction is still rolled back (asyncpg's own ``_reset`` runs first)."""


@asynccontextmanager
async def pool(dsn: str, *, cached: bool, size: int) -> AsyncIterator[Any]:
    """asyncpg's own pool of ``size`` connections: the floor of a service, which borrows a
    connection for each operation (``pool.fetch`` acquires and releases around the call), in
    the fewest round trips (:func:`keep_session`)."""
    import asyncpg

    options: dict[str, Any] = {} if cached else {"statement_cache_size": 0}
    opened = await asyncpg.create_pool(
        dsn, min_size=size, max_size=size, init=_json_codecs, reset=keep_session, **options
    )
    try:
        yield opened
    finally:
        await opened.close()


def append(conns: Sequence[Any], user_id: str, conversation_ids: Sequence[uuid.UUID]) -> WriterOp:
    """Writer w appends turn n to conversation w on connection w, in one statement."""

    async def op(w: int, n: int) -> None:
        seq = await conns[w].fetchval(
            APPEND_SQL,
            conversation_ids[w],
            user_id,
            datetime.now(UTC),
            uuid7(),
            role(n),
            CONTENT,
            None,  # name
            None,  # tool_calls
            None,  # tool_call_id
            {},  # metadata
            TOKEN_COUNT,
            WORDS,
        )
        if seq is None:
            raise RuntimeError(f"conversation {conversation_ids[w]} not found")

    return op


def read_newest(conn: Any, user_id: str, conversation_id: uuid.UUID, limit: int) -> WriterOp:
    """The newest ``limit`` messages, oldest first."""

    async def op(_w: int, _n: int) -> list[Any]:
        rows: list[Any] = await conn.fetch(READ_NEWEST_SQL, conversation_id, user_id, limit)
        rows.reverse()
        return rows

    return op


def read_page(conn: Any, user_id: str, conversation_id: uuid.UUID, limit: int) -> WriterOp:
    """The newest ``limit`` messages as a page, newest first, within :data:`PAGE_BYTES`: one
    row past the page (has the conversation more?) and each row's share of the budget, as the
    library reads them."""
    share = PAGE_BYTES // (limit + 1)

    async def op(_w: int, _n: int) -> list[Any]:
        rows: list[Any] = await conn.fetch(PAGE_SQL, conversation_id, user_id, limit + 1, share)
        return rows[:limit]

    return op


def list_page(
    conn: Any, user_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> WriterOp:
    """A page of the user's conversations: the first, or the one after the keyset ``after``."""

    async def op(_w: int, _n: int) -> list[Any]:
        if after is None:
            rows: list[Any] = await conn.fetch(LIST_FIRST_SQL, user_id, limit)
        else:
            rows = await conn.fetch(LIST_AFTER_SQL, user_id, after[0], after[1], limit)
        return rows

    return op
