"""The store's way into its database: transactions, the pooled asyncpg connection for the hot
reads, the export's snapshot, and database failures turned into :class:`UnavailableError`.

"The database can't serve this now" is one error whatever the cause: connection failures (08),
insufficient resources (53), shutdown and restart (57P), refused credentials or a missing role
(28), a missing database (3D000), a read-only server such as a standby or
``default_transaction_read_only`` (25006), no pooled connection free in time, a timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import ColumnElement, literal, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from chathistory.errors import ChatHistoryError, UnavailableError
from chathistory.store import limits

_UNAVAILABLE_SQLSTATE_PREFIXES: Final = ("08", "53", "57P", "28", "3D000", "25006")
# The one statement that reads every shard on purpose: an export's snapshot on Citus.
CITUS_SNAPSHOT_SQL: Final = "SELECT 1 FROM conversations LIMIT 1"


class Database:
    """One engine, PostgreSQL (asyncpg) or SQLite (aiosqlite), as the rooms use it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.size: ColumnElement[int] = limits.size_of(self.postgres)
        self._sync_engine = engine.sync_engine  # its pool is looked up per call (dispose)
        self._dbapi: Any = engine.dialect.loaded_dbapi
        self._citus: bool | None = None  # the citus extension, looked up on first export

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, with database failures turned into :class:`UnavailableError`."""
        async with errors(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """A pooled asyncpg connection used directly (PostgreSQL's hot paths: one statement in
        asyncpg's own implicit transaction, safe behind PgBouncer), failures as above.

        Checked out of the engine's own pool (its size, timeout and checkout events apply),
        without an engine-level ``Connection`` around it: a third of the cost of
        ``engine.connect()``, which the hot paths pay on every call."""
        import asyncpg

        async with errors():
            try:
                fairy = await greenlet_spawn(self._sync_engine.pool.connect)
            except self._dbapi.Error as exc:  # the pool raises the driver's own errors
                if isinstance(exc, self._dbapi.OperationalError | self._dbapi.InterfaceError) or (
                    _sqlstate_unavailable(getattr(exc, "sqlstate", None))
                ):
                    raise UnavailableError(f"the database is unavailable: {_brief(exc)}") from exc
                raise
            try:
                yield fairy.driver_connection
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                if not isinstance(exc, asyncpg.PostgresError) or _sqlstate_unavailable(
                    exc.sqlstate
                ):
                    await greenlet_spawn(fairy.invalidate, exc)  # it must not go back
                    raise UnavailableError(f"the database is unavailable: {exc}") from exc
                raise
            finally:
                await greenlet_spawn(fairy.close)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction that sees the database as it was when it began, as
        ``pg_dump`` reads: PostgreSQL ``REPEATABLE READ, READ ONLY`` (one transaction, so fine
        behind PgBouncer in transaction mode); SQLite a read transaction, a snapshot in WAL mode
        (writers carry on)."""
        async with errors(), self.engine.connect() as conn:
            if self.postgres:
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            async with conn.begin():
                if not self.postgres:
                    raw = (await conn.get_raw_connection()).driver_connection
                    if not getattr(raw, "in_transaction", False):
                        # pysqlite starts no transaction for a SELECT (unless the engine has a
                        # "begin" hook): each statement would see the database as it is.
                        await conn.exec_driver_sql("BEGIN")
                elif await self._on_citus(conn):
                    # Citus has no cluster-wide snapshot: each worker's is taken when the
                    # transaction first reaches it. Reach every worker now, on one connection
                    # each (kept for the whole transaction), so that every user's rows are read
                    # as they were at this instant, not as they were when the export got there.
                    await conn.exec_driver_sql(
                        "SET LOCAL citus.max_adaptive_executor_pool_size = 1"
                    )
                    await conn.exec_driver_sql(CITUS_SNAPSHOT_SQL)
                yield conn

    async def _on_citus(self, conn: AsyncConnection) -> bool:
        if self._citus is None:
            found = await conn.exec_driver_sql(
                "SELECT count(*) FROM pg_extension WHERE extname = 'citus'"
            )
            self._citus = bool(found.scalar())
        return self._citus

    async def ping(self) -> None:
        """Raise :class:`UnavailableError` unless the database answers and takes writes (a
        read-only PostgreSQL server, such as a standby, is not ready)."""
        async with self.transaction() as conn:
            if not self.postgres:
                await conn.execute(select(literal(1)))
                return
            read_only = (
                await conn.execute(text("SELECT current_setting('transaction_read_only')"))
            ).scalar()
        if read_only == "on":
            raise UnavailableError("the database is read-only (a standby, or set read-only)")


@asynccontextmanager
async def errors() -> AsyncIterator[None]:
    """Database failures turned into :class:`UnavailableError`."""
    try:
        yield
    except (ChatHistoryError, IntegrityError):
        raise
    except PoolTimeoutError as exc:
        raise UnavailableError("no database connection came free in time") from exc
    except (OperationalError, InterfaceError) as exc:
        raise UnavailableError(f"the database is unavailable: {_brief(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or _is_unavailable(exc):
            raise UnavailableError(f"the database is unavailable: {_brief(exc)}") from exc
        raise
    except (TimeoutError, OSError) as exc:
        raise UnavailableError(f"the database is unavailable: {exc}") from exc


def _is_unavailable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return _sqlstate_unavailable(code)


def _sqlstate_unavailable(code: object) -> bool:
    return isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__


__all__ = ["Database", "errors"]
