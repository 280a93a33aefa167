"""The store's way into its database: transactions, the pooled asyncpg connection for the hot
reads, the export's snapshot, and database failures turned into :class:`UnavailableError`.

"The database can't serve this now" is one error whatever the cause: connection failures (08),
insufficient resources (53), shutdown and restart (57P), refused credentials or a missing role
(28), a missing database (3D000), a read-only server such as a standby or
``default_transaction_read_only`` (25006), no pooled connection free in time, a timeout.
A schema that is not there or is behind the code (an undefined table or column: 42P01, 42703,
SQLite's "no such table") is :class:`SchemaNotCurrentError`, a kind of it whose message names
the fix, ``chathistory db upgrade``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final

from sqlalchemy import ColumnElement
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn

from chathistory.db import _replace_closed
from chathistory.errors import ChatHistoryError, SchemaNotCurrentError, UnavailableError
from chathistory.store import dialects
from chathistory.store.dialects import Dialect

_UNAVAILABLE_SQLSTATE_PREFIXES: Final = ("08", "53", "57P", "28", "3D000", "25006")
_SCHEMA_SQLSTATES: Final = ("42P01", "42703")  # undefined table, undefined column
_SQLITE_SCHEMA_ERRORS: Final = ("no such table", "no such column")
UPGRADE_HINT: Final = "run `chathistory db upgrade`"
NOT_MIGRATED: Final = f"the database schema is not migrated: {UPGRADE_HINT}"
NO_CONNECTION: Final = "no database connection came free in time"
DEFAULT_STREAM_TIMEOUT: Final = timedelta(minutes=10)


class Database:
    """One engine, PostgreSQL (asyncpg) or SQLite (aiosqlite), as the rooms use it: its
    :attr:`dialect` (:mod:`chathistory.store.dialects`), chosen once here, holds what differs
    between the two."""

    def __init__(
        self, engine: AsyncEngine, stream_timeout: timedelta = DEFAULT_STREAM_TIMEOUT
    ) -> None:
        self.engine = engine
        self.stream_timeout = stream_timeout
        self.dialect: Dialect = dialects.choose(self)  # the backend's operations, chosen once
        self.size: ColumnElement[int] = self.dialect.size
        self._sync_engine = engine.sync_engine  # its pool is looked up per call (dispose)
        self._dbapi: Any = engine.dialect.loaded_dbapi
        self.branched = Branched()  # which read to try first (PostgreSQL)
        self._revisions: tuple[str, frozenset[str]] | None = None  # head, all: read on first ping
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def stale_before(self, now: datetime) -> datetime:
        """Before this instant an ``in_progress`` message's last update is too old: it reads
        as ``incomplete`` (SPEC 10; :func:`chathistory.store.rows.settled`)."""
        return now - self.stream_timeout

    def gate(self) -> asyncio.Semaphore | None:
        """First come, first served for the hot paths' borrows: at most as many borrowers as
        the pool holds connections, the others queue in arrival order (asyncio's semaphore is
        fair). SQLAlchemy's pool is not: a connection given back goes to whoever asks next,
        often a newcomer rather than the waiter it woke, which left some requests waiting
        hundreds of milliseconds under load (the HTTP p99). One gate per event loop; ``None``
        for a pool without a fixed size."""
        pool = self._sync_engine.pool
        size, overflow = getattr(pool, "size", None), getattr(pool, "_max_overflow", -1)
        if not callable(size) or overflow < 0:
            return None
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(size() + overflow)
        return gate

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, with database failures turned into :class:`UnavailableError`."""
        async with errors(), self.engine.begin() as conn:
            yield conn

    def driver(self) -> Borrowed:
        """A pooled asyncpg connection used directly (PostgreSQL's hot paths: one statement in
        asyncpg's own implicit transaction, safe behind PgBouncer), failures as above:
        ``async with db.driver() as conn``.

        Checked out of the engine's own pool (its size, timeout and checkout events apply),
        without an engine-level ``Connection`` around it (see :class:`Borrowed`)."""
        return Borrowed(self)

    def _checkout_failure(self, exc: Exception) -> UnavailableError | None:
        """What a failed checkout means: the pool raises the driver's own errors, SQLAlchemy's
        (a pool timeout) and the socket's."""
        dbapi = self._dbapi
        if dbapi is not None and isinstance(exc, dbapi.Error):
            if isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError) or (
                _sqlstate_unavailable(getattr(exc, "sqlstate", None))
            ):
                return UnavailableError(f"the database is unavailable: {_brief(exc)}")
            return None
        return unavailable(exc)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction that sees the database as it was when it began, as
        ``pg_dump`` reads: PostgreSQL ``REPEATABLE READ, READ ONLY`` (one transaction, so fine
        behind PgBouncer in transaction mode); SQLite a read transaction, a snapshot in WAL mode
        (writers carry on)."""
        async with errors(), self.engine.connect() as conn:
            await self.dialect.snapshot_isolation(conn)
            async with conn.begin():
                await self.dialect.snapshot_begun(conn)
                yield conn

    async def ping(self) -> None:
        """Raise :class:`UnavailableError` unless the database answers and takes writes (a
        read-only PostgreSQL server, such as a standby, is not ready), and
        :class:`SchemaNotCurrentError` when its schema is not migrated or is behind this
        release. One statement; a revision this release does not know (a newer release
        migrated the database, as in a rolling upgrade) is ready."""
        async with self.transaction() as conn:
            row: tuple[Any, ...] = tuple((await conn.exec_driver_sql(self.dialect.ping)).one())
        read_only, found = row
        if read_only == "on":
            read_only = "the database is read-only (a standby, or set read-only)"
            raise UnavailableError(read_only, summary=read_only)
        if self._revisions is None:
            self._revisions = await asyncio.to_thread(_package_revisions)
        head, known = self._revisions
        revisions = set(found.split(",")) if found else set()
        if not revisions:
            raise SchemaNotCurrentError(NOT_MIGRATED, summary=NOT_MIGRATED)
        if head not in revisions and revisions <= known:
            behind = (
                f"the database schema is at revision {found}, behind this release's {head}: "
                f"{UPGRADE_HINT}"
            )
            raise SchemaNotCurrentError(behind, summary=behind)


class Branched:
    """The conversations this process saw branched (the newest :data:`SIZE`): a hint of which
    statement reads them in one round trip on PostgreSQL
    (:mod:`chathistory.store.dialects.postgresql.branched`; a conversation never goes back to
    one chain but by being cleared, and the statements check)."""

    SIZE: Final = 100_000

    def __init__(self) -> None:
        self._seen: OrderedDict[uuid.UUID, None] = OrderedDict()

    def __contains__(self, conversation_id: uuid.UUID) -> bool:
        return conversation_id in self._seen

    def add(self, conversation_id: uuid.UUID) -> None:
        self._seen[conversation_id] = None
        if len(self._seen) > self.SIZE:
            self._seen.popitem(last=False)

    def discard(self, conversation_id: uuid.UUID) -> None:
        self._seen.pop(conversation_id, None)


def _package_revisions() -> tuple[str, frozenset[str]]:
    """The newest revision this package ships, and all of them."""
    from alembic.script import ScriptDirectory

    from chathistory import migrations

    script = ScriptDirectory.from_config(migrations.alembic_config())
    return migrations.head(), frozenset(rev.revision for rev in script.walk_revisions())


@asynccontextmanager
async def errors() -> AsyncIterator[None]:
    """Database failures turned into :class:`UnavailableError`."""
    try:
        yield
    except Exception as exc:
        failure = unavailable(exc)
        if failure is None:
            raise
        raise failure from exc


def unavailable(exc: BaseException) -> UnavailableError | None:
    """The :class:`UnavailableError` that ``exc`` means, or ``None`` (not a database failure)."""
    if isinstance(exc, ChatHistoryError | IntegrityError):
        return None
    if _schema_missing(exc):
        return SchemaNotCurrentError(f"{NOT_MIGRATED} ({_brief(exc)})", summary=NOT_MIGRATED)
    if isinstance(exc, PoolTimeoutError):
        return UnavailableError(NO_CONNECTION, summary=NO_CONNECTION)
    if isinstance(exc, OperationalError | InterfaceError):
        return UnavailableError(f"the database is unavailable: {_brief(exc)}")
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or _is_unavailable(exc):
            return UnavailableError(f"the database is unavailable: {_brief(exc)}")
        return None
    if isinstance(exc, TimeoutError | OSError):
        return UnavailableError(f"the database is unavailable: {exc}")
    return None


class Borrowed:
    """``async with db.driver() as conn``: an asyncpg connection of the engine's pool, checked
    out on entry and back in on exit; failures as :func:`errors` turns them.

    SQLAlchemy's async pool is a synchronous pool run in a greenlet: each way a new greenlet
    (and a new stack for its Python frames: an ``mmap`` and a ``munmap``), a proxy object, a
    weak reference and the events: about 50 us a borrow, out and back, between two round trips
    (caches cold), a third of a short read; 25 us this way. The greenlet is there for the I/O
    the pool may do: connect, recycle, replace a dead connection, wait for one to come free,
    close an overflow connection. When the pool's next idle connection needs none of that
    (:func:`_take`), the borrow takes it off the pool's queue and puts it back, as the pool's
    own checkout and checkin do (``_do_get``, ``_do_return_conn``), without the greenlet and
    the proxy; anything else goes through SQLAlchemy's own ``pool.connect()``."""

    __slots__ = ("_db", "_fairy", "_gate", "_pool", "_record")

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __aenter__(self) -> Any:
        pool = self._db._sync_engine.pool
        self._pool = pool
        self._gate = gate = self._db.gate()
        if gate is not None:
            if gate.locked():  # wait in line, as long as the pool's own timeout
                try:
                    async with asyncio.timeout(getattr(pool, "_timeout", 30)):
                        await gate.acquire()
                except TimeoutError:
                    raise UnavailableError(NO_CONNECTION, summary=NO_CONNECTION) from None
            else:  # room now: taken at once (the timer would cost a tenth of the borrow)
                await gate.acquire()
        try:
            return await self._checkout(pool)
        except BaseException:
            if gate is not None:
                gate.release()
            raise

    async def _checkout(self, pool: Any) -> Any:
        self._record = record = _take(pool)
        if record is not None:
            return record.dbapi_connection.driver_connection
        try:
            self._fairy = fairy = await greenlet_spawn(pool.connect)
        except Exception as exc:
            failure = self._db._checkout_failure(exc)
            if failure is None:
                raise
            raise failure from exc
        return fairy.driver_connection

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        failure: BaseException | None = None
        try:
            try:
                if exc is not None and _connection_lost(exc):
                    await greenlet_spawn(self._invalidate, exc)  # it must not go back
                    failure = UnavailableError(f"the database is unavailable: {exc}")
            finally:
                try:
                    record = self._record
                    if record is None:
                        await greenlet_spawn(self._fairy.close)
                    elif _returns_quietly(self._pool, record):
                        self._pool._do_return_conn(record)
                    else:
                        await greenlet_spawn(record.checkin, _fairy_was_created=False)
                finally:
                    if self._gate is not None:
                        self._gate.release()
        except Exception as error:
            mapped = unavailable(error)
            if mapped is None:
                raise
            raise mapped from error
        if failure is None and isinstance(exc, Exception):
            failure = unavailable(exc)
        if failure is not None:
            raise failure from exc

    def _invalidate(self, exc: BaseException) -> None:
        if self._record is not None:
            self._record.invalidate(e=exc)  # closed; the record goes back, to reconnect
        else:
            self._fairy.invalidate(exc)


def _connection_lost(exc: BaseException) -> bool:
    """Whether an error of a statement on a borrowed connection means it is unusable: a
    driver or socket failure, a timeout, or PostgreSQL saying it can't serve now."""
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate_unavailable(exc.sqlstate)
    return isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError)


def _take(pool: Any) -> Any:
    """The connection record of an idle connection, taken off ``pool``'s queue as its
    checkout takes it, when using it needs no I/O and nothing would see the checkout: the pool
    is the async queue pool :func:`chathistory.db.create_engine` builds, with no pre-ping, no
    listener but the store's own check for a closed socket (done here: the same test), no
    debug log; the connection is live, not due for recycling, not invalidated. Otherwise
    ``None``, the pool as it was: SQLAlchemy's own checkout. Reads SQLAlchemy's pool state;
    anything unexpected answers ``None``."""
    try:
        if type(pool) is not AsyncAdaptedQueuePool or pool._pre_ping or not pool.checkedin():
            return None
        events = pool.dispatch
        if events.checkin or events.reset or pool._should_log_debug():
            return None
        for listener in events.checkout:
            if listener is not _replace_closed:
                return None
        record = pool._do_get()  # an idle one is there: no wait, no I/O
    except (AttributeError, TypeError):  # pragma: no cover - another SQLAlchemy
        return None
    if _usable(pool, record):
        return record
    pool._do_return_conn(record)  # the room it just left: no I/O
    return None


def _usable(pool: Any, record: Any) -> bool:
    """Whether the pool's checkout would hand ``record``'s connection over as it is: what
    ``_ConnectionRecord.get_connection`` and the closed-socket check look at."""
    try:
        connection = record.dbapi_connection
        if connection is None or record.fairy_ref is not None:
            return False
        started = record.starttime
        if pool._invalidate_time > started or record._soft_invalidate_time > started:
            return False
        # Recycling is due after pool._recycle seconds: leave it a second's margin.
        if pool._recycle > -1 and time.time() - started > pool._recycle - 1:
            return False
        return not connection.driver_connection.is_closed()
    except AttributeError:  # pragma: no cover - another SQLAlchemy
        return False


def _returns_quietly(pool: Any, record: Any) -> bool:
    """Whether ``record`` can go back onto the queue as it is, as the pool's checkin would put
    it: still connected, no transaction of SQLAlchemy's open on it (the hot paths use the
    driver directly: the pool's reset would roll back nothing), and room on the queue
    (otherwise the pool closes it)."""
    connection = record.dbapi_connection
    if connection is None or getattr(connection, "_transaction", None) is not None:
        return False
    if getattr(connection, "_started", False):  # SQLAlchemy 2.0's adapter
        return False
    return bool(pool.checkedin() < pool.size())


def _schema_missing(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's or the driver's own) says a table or column the store
    uses is not there: a schema never migrated, or behind the code."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig).startswith(_SQLITE_SCHEMA_ERRORS)
    return getattr(orig, "sqlstate", None) in _SCHEMA_SQLSTATES


def _is_unavailable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return _sqlstate_unavailable(code)


def _sqlstate_unavailable(code: object) -> bool:
    return isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__


__all__ = ["Borrowed", "Branched", "Database", "errors", "unavailable"]
