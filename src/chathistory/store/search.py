"""Search (SPEC 8): one user's messages whose words match a query, newest first, keyset-paged.

The words are cut in Python (:mod:`chathistory.store.search_syntax`) for the index and the
query alike, so both backends find the same messages. PostgreSQL matches a ``tsvector`` against
a ``tsquery`` (GIN over ``(user_id, words)``, or the user's newest rows walked backwards when
the words are common: the planner picks); SQLite matches its FTS5 index. Every statement names
the user, so on Citus it runs on that user's shard only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    cast,
    delete,
    insert,
    literal,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory import pagination
from chathistory.errors import ValidationError
from chathistory.models import ROLES, conversations, message_search, messages, utcnow
from chathistory.search_schemas import HitConversation, SearchHit, SearchPage
from chathistory.store import branches, rows, search_syntax
from chathistory.store import conversations as conversation_room
from chathistory.store.database import Database

S = message_search.c
M = messages.c
C = conversations.c
_FTS = table("message_search_fts")  # SQLite's FTS5 index over message_search.words


async def search(
    db: Database,
    user_id: str,
    query: str,
    *,
    conversation_id: uuid.UUID | None,
    role: str | None,
    limit: int,
    cursor: str | None,
) -> SearchPage:
    parsed = search_syntax.parse_query(query)
    rows.check_limit(limit)
    if role is not None and role not in ROLES:
        raise ValidationError(f"must be one of {', '.join(ROLES)}", loc=("role",))
    after = pagination.decode_search_cursor(cursor) if cursor is not None else None
    select_hits = statement(db, user_id, parsed, conversation_id, role, after, limit + 1)
    stale_before = db.stale_before(utcnow())
    async with db.transaction() as conn:
        if conversation_id is not None:
            await conversation_room.require(conn, user_id, conversation_id)
        found = (await conn.execute(select_hits)).all()
        examined = [row._mapping for row in found[:limit]]
        kept, numbers = await _on_active_branches(conn, user_id, examined)
    matched = parsed.matched_words()
    hits = []
    for values in kept:
        text_ = search_syntax.searchable_text(values["content"], values["extras"]) or ""
        message = rows.message(values, stale_before)
        if (values["conversation_id"], values["seq"]) in numbers:
            rows.numbered(message, *numbers[values["conversation_id"], values["seq"]])
        hits.append(  # built from stored, valid values: no second validation
            SearchHit.model_construct(
                message=message,
                conversation=HitConversation.model_construct(
                    id=values["conversation_id"], title=values["conversation_title"]
                ),
                snippet=search_syntax.snippet(text_, matched),
            )
        )
    # After the last row looked at, kept or not (a page may hold fewer hits than the limit).
    last = examined[-1] if examined else None
    return SearchPage.model_construct(
        data=hits,
        has_more=len(found) > limit,
        next_cursor=pagination.encode_search_cursor(last["created_at"], last["id"])
        if last
        else None,
    )


async def _on_active_branches(
    conn: AsyncConnection, user_id: str, found: list[Any]
) -> tuple[list[Any], dict[tuple[uuid.UUID, int], tuple[int, int]]]:
    """The hits on their conversation's active branch (SPEC 11: every message of one that
    never branched), and the sibling numbers of those in branched conversations."""
    kept = []
    for row in found:
        if not row["conversation_branched"] or await branches.holds(
            conn, user_id, row["conversation_id"], row["seq"]
        ):
            kept.append(row)
    numbers: dict[tuple[uuid.UUID, int], tuple[int, int]] = {}
    for conversation in {r["conversation_id"] for r in kept if r["conversation_branched"]}:
        placed = [(r["seq"], r["fork"]) for r in kept if r["conversation_id"] == conversation]
        counted = await branches.siblings(conn, user_id, conversation, placed)
        numbers.update({(conversation, seq): pair for seq, pair in counted.items()})
    return kept, numbers


def statement(
    db: Database,
    user_id: str,
    query: search_syntax.Query,
    conversation_id: uuid.UUID | None,
    role: str | None,
    after: tuple[object, uuid.UUID] | None,
    limit: int,
) -> Select[tuple[object, ...]]:
    """The hits first (``message_search`` alone: its GIN index for rare words, its
    ``(user_id, created_at, message_id)`` index walked backwards for common ones), then their
    messages and conversations by primary key."""
    source: Any = message_search
    if db.postgres:
        matches = S.words.op("@@")(cast(bindparam("q", query.to_tsquery()), TSQUERY))
    else:
        source = source.join(
            _FTS,
            literal_column("message_search_fts.rowid")
            == literal_column("message_search.search_rowid"),
        )
        matches = text("message_search_fts MATCH :q").bindparams(q=query.to_fts5())
    # Not in a conversation expired by now (SPEC 9): the user's expired ones, found once on
    # their partial index (usually none), left out before the page is cut.
    gone = conversations.alias("gone")
    expired = select(gone.c.id).where(
        gone.c.user_id == user_id, gone.c.expires_at <= literal(utcnow(), gone.c.expires_at.type)
    )
    conditions = [S.user_id == user_id, matches, S.conversation_id.not_in(expired)]
    if conversation_id is not None:
        conditions.append(S.conversation_id == conversation_id)
    if role is not None:
        of_role = messages.alias("of_role")
        source = source.join(
            of_role, and_(of_role.c.id == S.message_id, of_role.c.user_id == user_id)
        )
        conditions.append(of_role.c.role == role)
    if after is not None:
        at, message_id = after
        conditions.append(
            tuple_(S.created_at, S.message_id)
            < tuple_(literal(at, S.created_at.type), literal(message_id, S.message_id.type))
        )
    hits = (
        select(S.message_id, S.conversation_id, S.created_at)
        .select_from(source)
        .where(*conditions)
        .order_by(S.created_at.desc(), S.message_id.desc())
        .limit(limit)
        .subquery("hits")
    )
    found = hits.join(messages, and_(M.id == hits.c.message_id, M.user_id == user_id)).join(
        conversations, and_(C.id == hits.c.conversation_id, C.user_id == user_id)
    )
    return (
        select(
            messages, C.title.label("conversation_title"), C.branched.label("conversation_branched")
        )
        .select_from(found)
        .order_by(hits.c.created_at.desc(), hits.c.message_id.desc())
    )


def index_rows(stored: list[dict[str, Any]], postgres: bool) -> list[dict[str, Any]]:
    """The ``message_search`` rows of freshly stored message rows (those with text)."""
    cut = search_syntax.tsvector_text if postgres else search_syntax.index_text
    return [
        {
            "message_id": row["id"],
            "user_id": row["user_id"],
            "conversation_id": row["conversation_id"],
            "created_at": row["created_at"],
            "words": words,
        }
        for row, words in zip(stored, _words(stored, cut), strict=True)
        if words is not None
    ]


async def index(conn: AsyncConnection, stored: list[dict[str, Any]]) -> None:
    """Index freshly stored messages in the transaction that stores them."""
    found = index_rows(stored, conn.dialect.name == "postgresql")
    if found:
        await conn.execute(insert(message_search), found)


async def reindex(conn: AsyncConnection, stored: dict[str, Any]) -> None:
    """Index an updated message's words again (a streaming update, SPEC 10)."""
    await conn.execute(
        delete(message_search).where(S.message_id == stored["id"], S.user_id == stored["user_id"])
    )
    await index(conn, [stored])


def words_column(stored: list[dict[str, Any]]) -> list[str | None]:
    """Each stored row's words as PostgreSQL ``tsvector`` text, ``None`` where it has no text
    (the one-statement append's last array)."""
    return _words(stored, search_syntax.tsvector_text)


def _words(stored: list[dict[str, Any]], cut: Callable[[str], str]) -> list[str | None]:
    texts = (search_syntax.searchable_text(r["content"], r.get("extras")) for r in stored)
    return [None if text_ is None else cut(text_) for text_ in texts]
