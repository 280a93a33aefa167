"""PostgreSQL (asyncpg), on its own or behind PgBouncer or Citus: :class:`Postgres`.

The hot paths are hand-written statements run straight on the pooled asyncpg connection
(:meth:`Database.driver <chathistory.store.database.Database.driver>`; unnamed statements unless
the engine caches them), past SQLAlchemy's statement machinery, each statement beside the call
that runs it and its ``$n`` parameters a named tuple (:mod:`.params`): the read and the page
(:mod:`.reads`, a branched conversation's in :mod:`.branched`), the listing (:mod:`.listing`),
the one-statement append (:mod:`.appends`); the records they return become read models in
:mod:`.records`. The rest is SQLAlchemy Core, as on SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, Select, Text, delete, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.models import conversations
from chathistory.store import limits
from chathistory.store.dialects.postgresql.appends import Appends
from chathistory.store.dialects.postgresql.listing import Listing
from chathistory.store.dialects.postgresql.reads import Reads
from chathistory.store.dialects.postgresql.search import PostgresSearch

if TYPE_CHECKING:
    from chathistory.store.database import Database

_C = conversations.c
# Readiness, in one statement: writable and the schema's revision.
PING: Final = (
    "SELECT current_setting('transaction_read_only'), "
    "(SELECT string_agg(version_num, ',') FROM chathistory_alembic_version)"
)
# The one statement that reads every shard on purpose: an export's snapshot on Citus.
CITUS_SNAPSHOT_SQL: Final = "SELECT 1 FROM conversations LIMIT 1"


class Postgres(Reads, Listing, Appends):
    """The PostgreSQL form of each operation of :class:`~chathistory.store.dialects.Dialect`."""

    name: Final = "postgresql"
    size: ColumnElement[int] = limits.stored_size(func.octet_length, Text)
    insert: Final = staticmethod(postgresql.insert)
    ping: Final = PING
    search: Final = PostgresSearch()

    def __init__(self, db: Database) -> None:
        self._db = db
        self._citus: bool | None = None  # the citus extension, looked up on first export

    async def purge_batch(
        self, conn: AsyncConnection, user_id: str, pick: Select[Any], due: ColumnElement[bool]
    ) -> list[int]:
        """``pick ... FOR UPDATE SKIP LOCKED`` picks and locks a batch (a second purger skips
        those rows and takes others; so is a row an appender holds), then ``DELETE ... WHERE id
        IN (...) AND <still due>``."""
        ids = list((await conn.execute(pick.with_for_update(skip_locked=True))).scalars())
        if not ids:
            return []
        removed = await conn.execute(
            delete(conversations)
            .where(_C.user_id == user_id, _C.id.in_(ids), due)
            .returning(_C.message_count)
        )
        return [int(count) for count in removed.scalars()]

    async def snapshot_isolation(self, conn: AsyncConnection) -> None:
        """``REPEATABLE READ, READ ONLY``: one transaction, as ``pg_dump`` reads (fine behind
        PgBouncer in transaction mode)."""
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)

    async def snapshot_begun(self, conn: AsyncConnection) -> None:
        if await self._on_citus(conn):
            # Citus has no cluster-wide snapshot: each worker's is taken when the
            # transaction first reaches it. Reach every worker now, on one connection
            # each (kept for the whole transaction), so that every user's rows are read
            # as they were at this instant, not as they were when the export got there.
            await conn.exec_driver_sql("SET LOCAL citus.max_adaptive_executor_pool_size = 1")
            await conn.exec_driver_sql(CITUS_SNAPSHOT_SQL)

    async def _on_citus(self, conn: AsyncConnection) -> bool:
        if self._citus is None:
            found = await conn.exec_driver_sql(
                "SELECT count(*) FROM pg_extension WHERE extname = 'citus'"
            )
            self._citus = bool(found.scalar())
        return self._citus


__all__ = ["CITUS_SNAPSHOT_SQL", "PING", "Postgres"]
