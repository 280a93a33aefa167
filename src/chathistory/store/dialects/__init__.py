"""One place per backend: the operations that differ between PostgreSQL and SQLite
(:class:`Dialect`), one implementation each (:mod:`.postgresql`, :mod:`.sqlite`), chosen once
when a :class:`~chathistory.store.database.Database` opens (:func:`choose`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from chathistory.store.dialects.base import Dialect, SearchForm

if TYPE_CHECKING:
    from chathistory.store.database import Database


def choose(db: Database) -> Dialect:
    """The dialect of ``db``'s engine. Its modules are imported here, on first use: they build
    on the rooms' shared rules, which import :mod:`chathistory.store.database`."""
    if db.engine.dialect.name == "postgresql":
        from chathistory.store.dialects.postgresql import Postgres

        return Postgres(db)
    from chathistory.store.dialects.sqlite import Sqlite

    return Sqlite(db)


def search_form(engine: AsyncEngine) -> SearchForm:
    """The form of search of ``engine``'s backend, for work given an engine rather than a
    store (:func:`chathistory.store.search.fill`)."""
    if engine.dialect.name == "postgresql":
        from chathistory.store.dialects.postgresql.search import PostgresSearch

        return PostgresSearch()
    from chathistory.store.dialects.sqlite_search import SqliteSearch

    return SqliteSearch()


__all__ = ["Dialect", "SearchForm", "choose", "search_form"]
