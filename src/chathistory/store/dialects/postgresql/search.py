"""PostgreSQL's form of search (:class:`PostgresSearch`): a message's words as a ``tsvector``,
matched by a ``tsquery``; the candidates of a rare word read from the GIN index over
``(user_id, words)``."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import ColumnElement, Select, Text, bindparam, cast, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.models import message_search
from chathistory.store import limits, search_syntax

_S = message_search.c
# Planner settings for the rest of the transaction (``set_config(..., true)``: nothing outlives
# it, so PgBouncer's transaction mode is fine): the candidates from the GIN index, whatever the
# estimates; then the defaults again, for the walk or the branch reads that follow.
INDEX_ONLY: Final = (
    "SELECT set_config('enable_indexscan', 'off', true),"
    " set_config('enable_indexonlyscan', 'off', true), set_config('enable_seqscan', 'off', true)"
)
PLANNER_DEFAULTS: Final = (
    "SELECT set_config('enable_indexscan', 'on', true),"
    " set_config('enable_indexonlyscan', 'on', true), set_config('enable_seqscan', 'on', true)"
)


def _query(name: str) -> ColumnElement[Any]:
    return cast(bindparam(name, type_=Text), TSQUERY)


class PostgresSearch:
    """PostgreSQL's form of each part of search that differs
    (:class:`~chathistory.store.dialects.base.SearchForm`)."""

    size: ColumnElement[int] = limits.stored_size(func.octet_length, Text)
    insert: Final = staticmethod(postgresql.insert)
    words: Final = staticmethod(search_syntax.tsvector_text)

    def values(self, query: search_syntax.Query, user_id: str) -> dict[str, str]:
        """The query as a ``tsquery`` (``q``), and without its phrases and exclusions
        (``loose``)."""
        return {"q": query.to_tsquery(), "loose": query.to_loose_tsquery()}

    async def plan(self, conn: AsyncConnection, *, index_only: bool) -> None:
        """One round trip on the simple query protocol (no statement to prepare)."""
        raw: Any = (await conn.get_raw_connection()).driver_connection
        await raw.execute(INDEX_ONLY if index_only else PLANNER_DEFAULTS)

    def owner(self, walk: bool) -> ColumnElement[Any]:
        column: ColumnElement[Any] = _S.user_id
        return column

    def look(self, looked: Select[Any], walk: bool) -> Select[Any]:
        """Each row's words; without a walk, only the rows holding the query's words."""
        looked = looked.add_columns(_S.words)
        if walk:
            return looked
        return looked.where(_S.words.op("@@")(_query("loose")))

    def holds(self, pool: Any, walk: bool) -> ColumnElement[bool] | None:
        return pool.c.words.op("@@")(_query("q"))  # type: ignore[no-any-return]

    def loose(self, pool: Any, walk: bool) -> Any:
        if not walk:
            return literal(0)
        held = select(func.count()).select_from(pool).where(pool.c.words.op("@@")(_query("loose")))
        return held.scalar_subquery()


__all__ = ["INDEX_ONLY", "PLANNER_DEFAULTS", "PostgresSearch"]
