"""SQLite's form of search (:class:`SqliteSearch`): a message's words joined by spaces, in an
FTS5 index of each user's words (migration ``0011_sqlite_search``); a walk reads the walked
rows' own words instead of asking FTS5."""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Select,
    Text,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.models import message_search
from chathistory.store import limits, search_syntax

_S = message_search.c
_FTS = table("message_search_fts")  # each user's words (fts5_query)

# Whether a walked row (of the CTE ``looked``) matches, read from its words (the message's words
# joined by single spaces: ``search_syntax.index_text``), so a walk's work is its rows. FTS5
# asked about one row (``MATCH ... AND rowid = ?``) skips ahead to the next real match in the
# whole index when the row holds the words but not the phrase, or holds an excluded word:
# seconds for one row at 1,000,000 messages. ``:groups`` is a JSON array of groups (all must
# match), each an array of terms (any), each a term's words between spaces (a phrase's words
# adjacent, as FTS5 matches them); ``:excluded`` those none may match.
HOLDS: Final = text(
    "NOT EXISTS (SELECT 1 FROM json_each(:groups) AS g WHERE NOT EXISTS"
    " (SELECT 1 FROM json_each(g.value) AS t"
    " WHERE instr(' ' || looked.words || ' ', t.value) > 0))"
    " AND NOT EXISTS (SELECT 1 FROM json_each(:excluded) AS x"
    " WHERE instr(' ' || looked.words || ' ', x.value) > 0)"
).bindparams(bindparam("groups", type_=Text), bindparam("excluded", type_=Text))
# ... and whether it holds the query's words (phrases as their words, exclusions left out):
# ``:loose_groups``, each group an array of terms, each an array of words (as PostgreSQL's
# ``to_loose_tsquery``).
LOOSE: Final = text(
    "NOT EXISTS (SELECT 1 FROM json_each(:loose_groups) AS g WHERE NOT EXISTS"
    " (SELECT 1 FROM json_each(g.value) AS t WHERE NOT EXISTS"
    " (SELECT 1 FROM json_each(t.value) AS w"
    " WHERE instr(' ' || looked.words || ' ', w.value) = 0)))"
).bindparams(bindparam("loose_groups", type_=Text))


class SqliteSearch:
    """SQLite's form of each part of search that differs
    (:class:`~chathistory.store.dialects.base.SearchForm`)."""

    size: ColumnElement[int] = limits.stored_size(func.length, LargeBinary)
    insert: Final = staticmethod(sqlite.insert)
    words: Final = staticmethod(search_syntax.index_text)

    def values(self, query: search_syntax.Query, user_id: str) -> dict[str, str]:
        """FTS5's query (``q``, the user's terms: :func:`fts5_query`) and the JSON of
        :data:`HOLDS` and :data:`LOOSE`."""

        def spaced(term: search_syntax.Term) -> str:
            return " " + " ".join(term) + " "

        return {
            "q": fts5_query(query, user_id),
            "groups": _json([[spaced(term) for term in group] for group in query.groups]),
            "excluded": _json([spaced(term) for term in query.excluded]),
            "loose_groups": _json(
                [[[f" {word} " for word in term] for term in group] for group in query.groups]
            ),
        }

    async def plan(self, conn: AsyncConnection, *, index_only: bool) -> None:
        """Nothing: SQLite's plans come from the statements' shapes."""

    def owner(self, walk: bool) -> ColumnElement[Any]:
        # Candidates: FTS5's rowids drive; the unary + keeps SQLite from walking the user's
        # index instead, every row of the history tested against the matches (its choice
        # without ANALYZE's statistics).
        return _S.user_id if walk else literal_column("+message_search.user_id")

    def look(self, looked: Select[Any], walk: bool) -> Select[Any]:
        """A walk's rows with their words; else FTS5's matches (the user's terms), looked up
        once, then each row by its rowid."""
        if walk:
            return looked.add_columns(_S.words)
        fts_query = text("message_search_fts MATCH :q").bindparams(bindparam("q", type_=Text))
        matched: Select[Any] = select(literal_column("rowid")).select_from(_FTS).where(fts_query)
        search_rowid: ColumnElement[int] = literal_column("message_search.search_rowid")
        return looked.where(search_rowid.in_(matched))

    def holds(self, pool: Any, walk: bool) -> ColumnElement[bool] | None:
        return and_(HOLDS) if walk else None  # FTS5 matched the candidates already

    def loose(self, pool: Any, walk: bool) -> Any:
        if not walk:
            return literal(0)
        return select(func.count()).select_from(pool).where(LOOSE).scalar_subquery()


def _json(value: Any) -> str:
    """JSON with the words as they are (no ``\\u`` escapes for SQLite's JSON to decode)."""
    return json.dumps(value, ensure_ascii=False)


def fts5_query(query: search_syntax.Query, user_id: str) -> str:
    """SQLite's FTS5 query for one user: ``query.to_fts5()`` with each word prefixed as the
    index holds it since migration ``0011_sqlite_search``: the user id's UTF-8 bytes in hex,
    then ``x`` (never a hex digit), then the word; so it reads that user's posting lists only."""
    tag = user_id.encode("utf-8").hex() + "x"

    def quoted(term: search_syntax.Term) -> str:
        return '"' + " ".join(tag + word for word in term).replace('"', '""') + '"'

    expression = " AND ".join(
        "(" + " OR ".join(quoted(term) for term in group) + ")" for group in query.groups
    )
    for term in query.excluded:
        expression = f"({expression}) NOT {quoted(term)}"
    return expression


__all__ = ["HOLDS", "LOOSE", "SqliteSearch", "fts5_query"]
