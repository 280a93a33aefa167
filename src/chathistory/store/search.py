"""Search (SPEC 8): one user's messages whose words match a query, newest first, keyset-paged.

The words are cut in Python (:mod:`chathistory.store.search_syntax`) for the index and the
query alike, so both backends find the same messages. PostgreSQL matches a ``tsvector`` against
a ``tsquery``: at most :data:`MAX_CANDIDATES` candidates from the GIN index over
``(user_id, words)``, or, with more, a walk of the user's :data:`WALK_ROWS` newest rows after
the cursor. SQLite matches its FTS5 index. Every statement names
the user, so on Citus it runs on that user's shard only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    cast,
    delete,
    func,
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
from chathistory.store import branches, limits, rows, search_syntax
from chathistory.store import conversations as conversation_room
from chathistory.store.database import Database

S = message_search.c
M = messages.c
C = conversations.c
_FTS = table("message_search_fts")  # SQLite's FTS5 index over message_search.words


MAX_CANDIDATES: Final = 1_000
"""Index candidates (messages holding the query's words) a page of search looks at, at most.
With more than this (words common in the history, phrases of common words, an exclusion that
removes most of them) the page walks the :data:`WALK_ROWS` newest rows after the cursor
instead and answers the hits among them: ``has_more`` and a cursor after the walked rows."""
WALK_ROWS: Final = 1_000
"""Index rows such a walking page looks at, at most."""

_INDEX_ONLY = text(
    "SELECT set_config('enable_indexscan', 'off', true),"
    " set_config('enable_indexonlyscan', 'off', true), set_config('enable_seqscan', 'off', true)"
)
_WALKING = text(
    "SELECT set_config('enable_indexscan', 'on', true),"
    " set_config('enable_indexonlyscan', 'on', true), set_config('enable_seqscan', 'on', true)"
)


async def search(
    db: Database,
    user_id: str,
    query: str,
    *,
    conversation_id: uuid.UUID | None,
    role: str | None,
    limit: int,
    cursor: str | None,
    max_bytes: int | None = None,
) -> SearchPage:
    parsed = search_syntax.parse_query(query)
    rows.check_limit(limit)
    if role is not None and role not in ROLES:
        raise ValidationError(f"must be one of {', '.join(ROLES)}", loc=("role",))
    after = pagination.decode_search_cursor(cursor) if cursor is not None else None
    where = Where(db, user_id, parsed, conversation_id, role, after)
    stale_before = db.stale_before(utcnow())
    async with db.transaction() as conn:
        if conversation_id is not None:
            await conversation_room.require(conn, user_id, conversation_id)
        if db.postgres:  # the candidates from the GIN index, whatever the estimates
            await conn.execute(_INDEX_ONLY)
        answer = (await conn.execute(statement(where, limit + 1, max_bytes))).all()
        walked = answer[0].examined > MAX_CANDIDATES
        if walked:  # too many candidates: the newest rows after the cursor instead
            if db.postgres:
                await conn.execute(_WALKING)
            answer = (await conn.execute(statement(where, limit + 1, max_bytes, walk=True))).all()
        found = [row._mapping for row in answer if row.id is not None]
        fitting = min(len(found), limit)
        sizes = [row["size"] for row in found[:fitting]]
        # Cut by bytes: the database returned the hit that crossed the budget (whether any
        # follow it, only the next page knows).
        cut = max_bytes is not None and sum(sizes) > max_bytes
        if cut:
            fitting = limits.within_bytes(sizes, max_bytes or 0)
        examined = found[:fitting]
        kept, numbers = await _on_active_branches(conn, user_id, examined)
    # A walk that looked at a whole window may have more to find past it.
    window_full = walked and answer[0].examined >= WALK_ROWS
    has_more = len(found) > fitting or cut or window_full
    # After the last hit looked at, kept or not (a page may hold fewer hits than the limit);
    # after a whole window walked when every hit found fits.
    at: tuple[Any, uuid.UUID] | None = None
    if window_full and fitting == len(found) and not cut:
        at = (answer[0].last_created_at, answer[0].last_id)
    elif examined:
        at = (examined[-1]["created_at"], examined[-1]["id"])
    return SearchPage.model_construct(
        data=_hits(kept, numbers, parsed, stale_before),
        has_more=has_more,
        next_cursor=pagination.encode_search_cursor(*at) if at else None,
    )


def _hits(
    kept: list[Any],
    numbers: dict[tuple[uuid.UUID, int], tuple[int, int]],
    parsed: search_syntax.Query,
    stale_before: Any,
) -> list[SearchHit]:
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
    return hits


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


@dataclass(frozen=True, slots=True)
class Where:
    """What a search looks for: the user, the query, the filters, the position after."""

    db: Database
    user_id: str
    query: search_syntax.Query
    conversation_id: uuid.UUID | None
    role: str | None
    after: tuple[object, uuid.UUID] | None

    def rows(self) -> list[ColumnElement[bool]]:
        """The user's index rows within the filters, after the cursor."""
        conditions: list[ColumnElement[bool]] = [S.user_id == self.user_id]
        if self.conversation_id is not None:
            conditions.append(S.conversation_id == self.conversation_id)
        if self.after is not None:
            at, message_id = self.after
            conditions.append(
                tuple_(S.created_at, S.message_id)
                < tuple_(literal(at, S.created_at.type), literal(message_id, S.message_id.type))
            )
        return conditions

    def fts_matches(self) -> ColumnElement[bool]:
        """SQLite: the index rows FTS5 finds, looked up once (then by rowid)."""
        found: Select[Any] = (
            select(literal_column("rowid"))
            .select_from(_FTS)
            .where(text("message_search_fts MATCH :q").bindparams(q=self.query.to_fts5()))
        )
        rowid: ColumnElement[int] = literal_column("message_search.search_rowid")
        return rowid.in_(found)


def statement(
    where: Where, limit: int, max_bytes: int | None, *, walk: bool = False
) -> Select[Any]:
    """One row saying how many index rows were looked at (``examined``) and the last of them,
    joined to the hits, newest first, at most ``limit`` and (with ``max_bytes``) only those
    that start within that many bytes.

    The rows looked at are the candidates of the index (PostgreSQL: those holding the query's
    words, from the GIN index, phrases and exclusions left for after; SQLite: FTS5's matches),
    at most :data:`MAX_CANDIDATES` + 1, and no hit comes back when there are more; or with
    ``walk``, the :data:`WALK_ROWS` newest rows after the cursor."""
    db, user_id = where.db, where.user_id
    looked = select(S.message_id, S.conversation_id, S.created_at).where(*where.rows())
    if db.postgres:
        looked = looked.add_columns(S.words)
    if walk:
        looked = looked.order_by(S.created_at.desc(), S.message_id.desc()).limit(WALK_ROWS)
    elif db.postgres:
        loose = S.words.op("@@")(cast(bindparam("loose", where.query.to_loose_tsquery()), TSQUERY))
        looked = looked.where(loose).limit(MAX_CANDIDATES + 1)
    else:
        looked = looked.where(where.fts_matches()).limit(MAX_CANDIDATES + 1)
    pool = looked.cte("looked").prefix_with("MATERIALIZED", dialect="postgresql")
    examined = select(func.count()).select_from(pool).scalar_subquery()
    # Not in a conversation expired by now (SPEC 9): the user's expired ones, found once on
    # their partial index (usually none), left out before the page is cut.
    gone = conversations.alias("gone")
    expired = select(gone.c.id).where(
        gone.c.user_id == user_id, gone.c.expires_at <= literal(utcnow(), gone.c.expires_at.type)
    )
    source: Any = pool
    conditions: list[ColumnElement[bool]] = [pool.c.conversation_id.not_in(expired)]
    if db.postgres:
        tsquery = cast(bindparam("q", where.query.to_tsquery()), TSQUERY)
        conditions.append(pool.c.words.op("@@")(tsquery))
    elif walk:
        conditions.append(pool.c.message_id.in_(select(S.message_id).where(where.fts_matches())))
    if not walk:
        conditions.append(examined <= MAX_CANDIDATES)
    if where.role is not None:
        of_role = messages.alias("of_role")
        source = source.join(
            of_role, and_(of_role.c.id == pool.c.message_id, of_role.c.user_id == user_id)
        )
        conditions.append(of_role.c.role == where.role)
    hits = (
        select(pool.c.message_id, pool.c.conversation_id, pool.c.created_at)
        .select_from(source)
        .where(*conditions)
        .order_by(pool.c.created_at.desc(), pool.c.message_id.desc())
        .limit(limit)
        .subquery("hits")
    )
    joined = hits.join(messages, and_(M.id == hits.c.message_id, M.user_id == user_id)).join(
        conversations, and_(C.id == hits.c.conversation_id, C.user_id == user_id)
    )
    newest_first = (hits.c.created_at.desc(), hits.c.message_id.desc())
    found: Any = select(
        messages,
        C.title.label("conversation_title"),
        C.branched.label("conversation_branched"),
        db.size.label("size"),
        hits.c.created_at.label("hit_at"),
    ).select_from(joined)
    if max_bytes is not None:  # the hits that start within the budget (see store.limits)
        running = func.sum(db.size).over(order_by=newest_first)
        numbered = found.add_columns(running.label("running")).subquery("numbered")
        found = select(numbered).where(numbered.c.running - numbered.c.size <= max_bytes)
    found = found.subquery("found")
    oldest = pool.c.created_at.asc(), pool.c.message_id.asc()
    summary = select(
        examined.label("examined"),
        select(pool.c.created_at)
        .order_by(*oldest)
        .limit(1)
        .scalar_subquery()
        .label("last_created_at"),
        select(pool.c.message_id).order_by(*oldest).limit(1).scalar_subquery().label("last_id"),
    ).subquery("summary")
    return (
        select(summary, found)
        .select_from(summary.outerjoin(found, literal(True)))
        .order_by(found.c.hit_at.desc(), found.c.id.desc())
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
