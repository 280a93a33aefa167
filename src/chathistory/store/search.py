"""Search (SPEC 8): one user's messages whose words match a query, newest first, keyset-paged.

The words are cut in Python (:mod:`chathistory.store.search_syntax`) for the index and the
query alike, so both backends find the same messages. PostgreSQL matches a ``tsvector`` against
a ``tsquery``, SQLite its FTS5 index. A page looks at a bounded number of rows, in at most three
statements: the :data:`PROBE_ROWS` newest rows after the cursor (a common word's whole page);
else, when the query's words were not among them, at most :data:`MAX_CANDIDATES` candidates
from the index (a rare word's every hit); else the :data:`WALK_ROWS` newest rows, answering the
hits among them with a cursor after them. Every statement names the user, so on Citus it runs
on that user's shard only.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chathistory import pagination
from chathistory.errors import SearchDisabledError, ValidationError
from chathistory.models import ROLES, conversations, message_search, messages, utcnow
from chathistory.schemas.search import HitConversation, SearchHit, SearchPage
from chathistory.store import branches, limits, rows, search_syntax
from chathistory.store import conversations as conversation_room
from chathistory.store.database import Database
from chathistory.store.dialects import SearchForm, search_form

S = message_search.c
M = messages.c
C = conversations.c


PROBE_ROWS: Final = 128
"""The newest rows after the cursor a page looks at first: a word in every few messages fills
the page among them, with no index read that grows with the history."""
MAX_CANDIDATES: Final = 1_000
"""Index candidates (messages holding the query's words) a page looks at next, at most: a rare
word's every hit. With more (a common word that the phrase, the exclusions or the role leave
out), the page walks :data:`WALK_ROWS` newest rows instead."""
INDEX_WORDS: Final = 8
"""Words a query may hold for the index candidates to be read (each adds a posting list to
the GIN read); a query with more walks instead."""
WALK_ROWS: Final = 1_000
"""Rows after the cursor a walking page looks at, at most: it answers the hits among them,
with ``has_more`` and a cursor after them."""


_OFF: Final = "chathistory_search_off"
"""The execution option a store with search off sets on its engine: every connection it opens
carries it, so every room that would index a message (an append, a streaming update, an
import) sees it without another argument."""


def turned_off(engine: AsyncEngine) -> AsyncEngine:
    """The engine as a store with search off uses it (``ChatHistory(..., search=False)``):
    the same pool, its connections marked."""
    return engine.execution_options(**{_OFF: True})


def enabled(on: AsyncEngine | AsyncConnection) -> bool:
    """Whether messages written through this engine or connection get search rows."""
    engine = on.engine if isinstance(on, AsyncConnection) else on
    return not engine.get_execution_options().get(_OFF, False)


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
    if not enabled(db.engine):
        raise SearchDisabledError(
            "search is turned off for this store (search=False, CHATHISTORY_SEARCH=false):"
            " messages are not indexed, so no search can answer; turn it on and fill the index"
            " in (chathistory.store.search.fill) to search"
        )
    parsed = search_syntax.parse_query(query)
    rows.check_limit(limit)
    if role is not None and role not in ROLES:
        raise ValidationError(f"must be one of {', '.join(ROLES)}", loc=("role",))
    after = pagination.decode_search_cursor(cursor) if cursor is not None else None
    where = Where(db, user_id, parsed, conversation_id, role, after)
    form = db.dialect.search
    stale_before = db.stale_before(utcnow())
    async with db.transaction() as conn:
        if conversation_id is not None:
            await conversation_room.require(conn, user_id, conversation_id)
        window: int | None = PROBE_ROWS
        answer = (await conn.execute(*statement(where, limit + 1, max_bytes, PROBE_ROWS))).all()
        head = answer[0]
        probed = [row.size for row in answer if row.id is not None]
        filled = len(probed) > limit or (max_bytes is not None and sum(probed) > max_bytes)
        if not filled and head.examined >= PROBE_ROWS:  # more history than the probe saw
            window = WALK_ROWS
            # Words the probe already met are common: their candidates would be many.
            if not head.loose and len(parsed.matched_words()) <= INDEX_WORDS:
                await form.plan(conn, index_only=True)  # the candidates from the index
                answer = (await conn.execute(*statement(where, limit + 1, max_bytes))).all()
                window = None if answer[0].examined <= MAX_CANDIDATES else WALK_ROWS
                if window is not None or any(
                    r.conversation_branched for r in answer if r.id is not None
                ):
                    await form.plan(conn, index_only=False)  # a walk or branch reads follow
            if window is not None:
                walk = statement(where, limit + 1, max_bytes, WALK_ROWS)
                answer = (await conn.execute(*walk)).all()
        head = answer[0]
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
    window_full = window is not None and head.examined >= window
    has_more = len(found) > fitting or cut or window_full
    # After the last hit looked at, kept or not (a page may hold fewer hits than the limit);
    # after a whole window walked when every hit found fits.
    at: tuple[Any, uuid.UUID] | None = None
    if window_full and fitting == len(found) and not cut:
        at = (head.last_created_at, head.last_id)
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
        placed = [
            (r["seq"], r["fork"], r["sibling"])
            for r in kept
            if r["conversation_id"] == conversation
        ]
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


def statement(
    where: Where, limit: int, max_bytes: int | None, walk: int | None = None
) -> tuple[Select[Any], dict[str, Any]]:
    """One row saying how many index rows were looked at (``examined``) and the last of them,
    joined to the hits, newest first, at most ``limit`` and (with ``max_bytes``) only those
    that start within that many bytes; and the statement's parameters.

    The rows looked at are the candidates of the index (PostgreSQL: those holding the query's
    words, from the GIN index, phrases and exclusions left for after; SQLite: FTS5's matches
    among the user's own terms, :func:`fts5_query`), at most :data:`MAX_CANDIDATES` + 1, and no
    hit comes back when there are more; or with ``walk``, that many newest rows after the
    cursor (SQLite reads their words, :data:`_SQLITE_HOLDS`, and asks FTS5 nothing), and then
    also how many of them hold the query's words (``loose``; phrases and exclusions left out).

    The statement is built once per shape (which filters, which kind of look) and cached, its
    values all parameters, so a search builds no SQL and SQLAlchemy compiles it once."""
    form = where.db.dialect.search
    shape = _shape(
        form,
        where.conversation_id is not None,
        where.role is not None,
        where.after is not None,
        walk is not None,
        max_bytes is not None,
    )
    values: dict[str, Any] = {
        "user_id": where.user_id,
        "now": utcnow(),
        "page": limit,
        "looked_at": walk if walk is not None else MAX_CANDIDATES + 1,
        "candidates": MAX_CANDIDATES,
    }
    values.update(form.values(where.query, where.user_id))
    if where.conversation_id is not None:
        values["conversation_id"] = where.conversation_id
    if where.role is not None:
        values["role"] = where.role
    if where.after is not None:
        values["after_at"], values["after_id"] = where.after
    if max_bytes is not None:
        values["max_bytes"] = max_bytes
    return shape, values


@functools.cache
def _shape(
    form: SearchForm, in_conversation: bool, of_role: bool, after: bool, walk: bool, budget: bool
) -> Select[Any]:
    user_id = bindparam("user_id", type_=S.user_id.type)
    owner = form.owner(walk)
    looked = select(S.message_id, S.conversation_id, S.created_at).where(owner == user_id)
    if in_conversation:
        looked = looked.where(
            S.conversation_id == bindparam("conversation_id", type_=S.conversation_id.type)
        )
    if after:
        looked = looked.where(
            tuple_(S.created_at, S.message_id)
            < tuple_(
                bindparam("after_at", type_=S.created_at.type),
                bindparam("after_id", type_=S.message_id.type),
            )
        )
    looked = form.look(looked, walk)
    if walk:
        looked = looked.order_by(S.created_at.desc(), S.message_id.desc())
    pool = (
        looked.limit(bindparam("looked_at", type_=Integer))
        .cte("looked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    examined = select(func.count()).select_from(pool).scalar_subquery()
    # Not in a conversation expired by now (SPEC 9): the user's expired ones, found once on
    # their partial index (usually none), left out before the page is cut.
    gone = conversations.alias("gone")
    expired = select(gone.c.id).where(
        gone.c.user_id == user_id,
        gone.c.expires_at <= bindparam("now", type_=gone.c.expires_at.type),
    )
    source: Any = pool
    conditions: list[ColumnElement[bool]] = [pool.c.conversation_id.not_in(expired)]
    holds = form.holds(pool, walk)
    if holds is not None:
        conditions.append(holds)
    if not walk:
        conditions.append(examined <= bindparam("candidates", type_=Integer))
    if of_role:
        role_of = messages.alias("of_role")
        source = source.join(
            role_of, and_(role_of.c.id == pool.c.message_id, role_of.c.user_id == user_id)
        )
        conditions.append(role_of.c.role == bindparam("role", type_=Text))
    hits = (
        select(pool.c.message_id, pool.c.conversation_id, pool.c.created_at)
        .select_from(source)
        .where(*conditions)
        .order_by(pool.c.created_at.desc(), pool.c.message_id.desc())
        .limit(bindparam("page", type_=Integer))
        .subquery("hits")
    )
    joined = hits.join(messages, and_(M.id == hits.c.message_id, M.user_id == user_id)).join(
        conversations, and_(C.id == hits.c.conversation_id, C.user_id == user_id)
    )
    size = form.size
    newest_first = (hits.c.created_at.desc(), hits.c.message_id.desc())
    found: Any = select(
        messages,
        C.title.label("conversation_title"),
        C.branched.label("conversation_branched"),
        size.label("size"),
        hits.c.created_at.label("hit_at"),
    ).select_from(joined)
    if budget:  # the hits that start within the budget (see store.limits)
        running = func.sum(size).over(order_by=newest_first)
        numbered = found.add_columns(running.label("running")).subquery("numbered")
        found = select(numbered).where(
            numbered.c.running - numbered.c.size <= bindparam("max_bytes", type_=Integer)
        )
    found = found.subquery("found")
    loose_count = form.loose(pool, walk)
    oldest = pool.c.created_at.asc(), pool.c.message_id.asc()
    last = select(pool.c.created_at, pool.c.message_id).order_by(*oldest).limit(1)
    summary = select(
        examined.label("examined"),
        loose_count.label("loose"),
        last.with_only_columns(pool.c.created_at).scalar_subquery().label("last_created_at"),
        last.with_only_columns(pool.c.message_id).scalar_subquery().label("last_id"),
    ).subquery("summary")
    return (
        select(summary, found)
        .select_from(summary.outerjoin(found, literal(True)))
        .order_by(found.c.hit_at.desc(), found.c.id.desc())
    )


def index_rows(stored: list[dict[str, Any]], cut: Callable[[str], str]) -> list[dict[str, Any]]:
    """The ``message_search`` rows of freshly stored message rows (those with text), their
    words cut by ``cut`` (the dialect's :attr:`~chathistory.store.dialects.SearchForm.words`)."""
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


async def index(conn: AsyncConnection, form: SearchForm, stored: list[dict[str, Any]]) -> None:
    """Index freshly stored messages in the transaction that stores them (nothing with
    search off)."""
    if not enabled(conn):
        return
    found = index_rows(stored, form.words)
    if found:
        await conn.execute(insert(message_search), found)


async def reindex(conn: AsyncConnection, form: SearchForm, stored: dict[str, Any]) -> None:
    """Index an updated message's words again (a streaming update, SPEC 10). With search off
    the old row still goes (a message begun with search on), so :func:`fill` indexes it anew."""
    await conn.execute(
        delete(message_search).where(S.message_id == stored["id"], S.user_id == stored["user_id"])
    )
    await index(conn, form, [stored])


async def fill(engine: AsyncEngine, *, user_id: str | None = None, batch: int = 1_000) -> int:
    """Index the stored messages that have no search rows (those appended while search was
    off) and return how many were indexed. Walks the messages in ``id`` order, ``batch`` keys
    at a time, one short transaction each, so it runs beside readers and writers, and again
    after an interruption (what is indexed is skipped; a row a concurrent append indexed
    first is left as it is). Turn search back on in every process, then fill the index in:
    until it is done, searches miss the messages not indexed yet. With ``user_id``, only that
    user's messages."""
    from sqlalchemy import exists

    form = search_form(engine)
    indexed = exists().where(S.message_id == M.id, S.user_id == M.user_id)
    columns = (M.id, M.user_id, M.conversation_id, M.created_at, M.content, M.extras)
    after: uuid.UUID | None = None
    done = 0
    while True:
        async with engine.begin() as conn:
            window = select(*columns, indexed.label("indexed")).order_by(M.id).limit(batch)
            if after is not None:
                window = window.where(M.id > after)
            if user_id is not None:
                window = window.where(M.user_id == user_id)
            walked = [row._asdict() for row in await conn.execute(window)]
            if not walked:
                return done
            after = walked[-1]["id"]
            found = index_rows([row for row in walked if not row["indexed"]], form.words)
            if found:
                adding = form.insert(message_search)
                await conn.execute(adding.on_conflict_do_nothing(), found)
            done += len(found)


def words_column(
    stored: list[dict[str, Any]], engine: AsyncEngine, cut: Callable[[str], str]
) -> list[str | None]:
    """Each stored row's words as ``cut`` gives them, ``None`` where it has no text or search
    is off (the one-statement append's last array: no row for a ``None``)."""
    if not enabled(engine):
        return [None] * len(stored)
    return _words(stored, cut)


def _words(stored: list[dict[str, Any]], cut: Callable[[str], str]) -> list[str | None]:
    texts = (search_syntax.searchable_text(r["content"], r.get("extras")) for r in stored)
    return [None if text_ is None else cut(text_) for text_ in texts]
