"""The schema's Alembic migrations, shipped inside the package, and a Python API to run them.

They keep their own version table (``chathistory_alembic_version``), so a host application's
Alembic history is never touched.

On PostgreSQL an upgrade is online (:mod:`chathistory.migrations.online`): one revision at a
time, each in short transactions of its own on one connection, while a second connection keeps
a transaction-scoped advisory lock for the whole upgrade, so concurrent upgrades (several workers
starting at once) wait for each other instead of racing, and nothing the readers and writers
need stays locked. A revision is stamped only when all of it is done; an interrupted upgrade
resumes on the next run.

    await chathistory.migrations.upgrade("postgresql://...")      # or an AsyncEngine
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chathistory.errors import UnavailableError

VERSION_TABLE = "chathistory_alembic_version"
_LOCK_KEY = 0x63686174686973  # "chathis": the advisory lock taken while migrating


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "chathistory:migrations")
    return config


def _includer(connection: Connection) -> Any:
    """What drift compares: everything, except on SQLite the search objects, which have a shape
    of their own there (a table with an FTS5 index and triggers; migration 0004), not the
    models' PostgreSQL one."""
    sqlite = connection.dialect.name == "sqlite"

    def include(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
        return not (sqlite and str(table or "").startswith("message_search"))

    return include


def configure_context(context: Any, connection: Connection) -> None:
    from chathistory.models import metadata

    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=_includer(connection),
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )


async def upgrade(target: str | AsyncEngine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the newest).

    On PostgreSQL online (:mod:`chathistory.migrations.online`), with two connections of
    ``target`` at once; raises :class:`~chathistory.migrations.online.LockBudgetError` when a
    step cannot get its lock in time (run it again: it resumes)."""
    await _run(target, lambda config: command.upgrade(config, revision), online=revision)


async def downgrade(target: str | AsyncEngine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table)."""
    await _run(target, lambda config: command.downgrade(config, revision))


async def current(target: str | AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` when it was never migrated."""

    revision: str | None = await with_connection(target, read_revision)
    return revision


def read_revision(connection: Connection) -> str | None:
    """The revision of the database ``connection`` is in (``None``: never migrated)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def head() -> str:
    """The newest revision the package ships."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def drift(target: str | AsyncEngine) -> list[Any]:
    """Differences between the migrated schema and the models (empty when they agree)."""
    from alembic.autogenerate import compare_metadata

    from chathistory.models import metadata

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "compare_server_default": True,
                "target_metadata": metadata,
                "include_object": _includer(connection),
            },
        )
        return list(compare_metadata(context, metadata))

    differences: list[Any] = await with_connection(target, compare)
    return differences


async def _run(target: str | AsyncEngine, action: Any, *, online: str | None = None) -> None:
    from chathistory.migrations import citus

    def run(connection: Connection) -> None:
        # Other processes wait here: PostgreSQL for an advisory lock held until commit,
        # SQLite for the database's write lock.
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            if citus.has_citus(connection):
                # One connection per worker for the whole upgrade: Citus refuses an extension
                # command (CREATE EXTENSION) after parallel work on distributed tables in the
                # same transaction, as when several migrations run at once.
                connection.execute(text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)

    # Alembic keeps its running context in module globals: one migration at a time per process.
    loop = asyncio.get_running_loop()
    lock = _locks.setdefault(loop, asyncio.Lock())
    async with lock:
        if online is not None and _dialect(target) == "postgresql":
            await _upgrade_online(target, online)
        else:
            await with_connection(target, run)


def _dialect(target: str | AsyncEngine) -> str:
    from chathistory.db import parse_database_url

    if isinstance(target, str):
        return parse_database_url(target).backend
    return target.dialect.name


async def _upgrade_online(target: str | AsyncEngine, revision: str) -> None:
    """Upgrade PostgreSQL one revision at a time (see :mod:`chathistory.migrations.online`)."""
    from chathistory.db import create_engine

    engine = create_engine(target, pool_size=2) if isinstance(target, str) else target
    try:
        async with engine.connect() as guard, engine.connect() as work:
            lock = await _guard(guard)
            while await work.run_sync(_next_revision, revision):
                await lock.execute("SELECT")  # still there, still holding the lock
            await lock.execute("ROLLBACK")
    except (OperationalError, InterfaceError, OSError) as exc:
        raise UnavailableError(f"cannot reach {engine.url.render_as_string()}: {exc}") from exc
    finally:
        if isinstance(target, str):
            await engine.dispose()


async def _guard(guard: AsyncConnection) -> Any:
    """Take the upgrade's advisory lock in a transaction of ``guard`` kept open for the whole
    upgrade; return the driver connection that holds it.

    The guard touches no table, so it makes no reader or writer wait, and it holds no snapshot
    (statements in the simple query protocol, no portal left open), so that neither vacuum nor
    ``CREATE INDEX CONCURRENTLY`` waits for it. Another upgrade tries the lock again and again,
    never waiting inside a statement (a waiting statement holds a snapshot, which the running
    upgrade's concurrent index builds would wait for, forever)."""
    raw = await guard.get_raw_connection()
    driver: Any = raw.driver_connection
    delay = 0.05
    while True:
        await driver.execute("BEGIN")
        taken = await driver.fetchval(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})")
        await driver.execute("SELECT")  # drops the unnamed portal and its snapshot
        if taken:
            return driver
        await driver.execute("ROLLBACK")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _next_revision(connection: Connection, target: str) -> bool:
    """Run the revision after the current one towards ``target``; ``False`` when there is none."""
    from chathistory.migrations import online

    current = read_revision(connection)
    script = ScriptDirectory.from_config(alembic_config())
    try:
        pending = list(script.iterate_revisions(target, current or "base"))
    except Exception:  # not an upgrade (``target`` is behind): Alembic says what is wrong
        pending = []
        step = target
    else:
        if not pending:
            connection.rollback()
            return False
        step = pending[-1].revision

    def attempt() -> None:
        online.begin(connection, step)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, step)
        connection.commit()

    try:
        if connection.in_transaction():
            connection.rollback()
        online.retrying(connection, f"revision {step}", attempt)
    except BaseException:
        if connection.in_transaction():
            connection.rollback()
        raise
    return len(pending) > 1


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def with_connection(target: str | AsyncEngine, fn: Any) -> Any:
    """``fn(connection)`` in one transaction of ``target`` (a URL: an engine of its own)."""
    from chathistory.db import create_engine

    engine = create_engine(target, pool_size=1) if isinstance(target, str) else target
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(fn)
    except (OperationalError, InterfaceError, OSError) as exc:
        raise UnavailableError(f"cannot reach {engine.url.render_as_string()}: {exc}") from exc
    finally:
        if isinstance(target, str):
            await engine.dispose()
