"""Online upgrades: how a revision changes a PostgreSQL database that readers and writers use.

:func:`chathistory.migrations.upgrade` runs on PostgreSQL one revision at a time, each in
transactions of its own on one connection, while a second connection holds the upgrade's
advisory lock (so concurrent upgrades wait, and readers and writers never do). Inside a
revision these helpers cut the work into short transactions:

- :func:`ddl`: schema changes that take a strong lock (``ALTER TABLE``, ``CREATE TABLE`` with a
  foreign key), as one transaction under ``lock_timeout`` (:data:`LOCK_TIMEOUT_MS`), retried
  with backoff on a lock timeout, then :class:`LockBudgetError`. Idempotent: ``done`` tells
  whether an earlier, interrupted run already committed it.
- :func:`backfill`: a keyset walk, one short transaction per batch; each batch touches only
  rows not backfilled yet, so a walk interrupted anywhere resumes on the next run.
- :func:`transaction`: any other short step (``VALIDATE CONSTRAINT``, a one-off statement).
- :func:`create_index`: ``CREATE INDEX CONCURRENTLY`` outside a transaction (an invalid index
  left by an interrupted build is dropped and built again).

The revision is stamped in the version table only after its last step, so the store (which
refuses a schema behind its release) never sees a half-done revision. On SQLite every helper
runs its work in the one running transaction (a single process migrates there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from chathistory.errors import ChatHistoryError

LOCK_TIMEOUT_MS = 500  # the longest a step waits for a lock (and others queue behind it)
ATTEMPTS = 10  # tries of one step before giving up
BACKOFF = 0.1  # seconds before the second try, doubled each time up to BACKOFF_CAP
BACKOFF_CAP = 5.0
LOCK_NOT_AVAILABLE = "55P03"

T = TypeVar("T")
K = TypeVar("K")

# Called with (connection, event, revision) at each step: "batch" inside a backfill batch's
# transaction before it commits, "committed" after any step committed. For tests and benches.
observers: list[Callable[[Connection, str, str], None]] = []

_CITUS = "chathistory.citus"
_REVISION = "chathistory.revision"


class LockBudgetError(ChatHistoryError):
    """A migration step could not take its lock within the budget, however often it tried."""


def postgres(bind: Connection) -> bool:
    return bind.dialect.name == "postgresql"


def begin(bind: Connection, revision: str | None = None) -> None:
    """Settings of each new transaction of an upgrade on PostgreSQL: the lock budget, and on
    Citus sequential multi-shard work (Citus refuses an extension command after parallel work on
    distributed tables in the same transaction)."""
    if revision is not None:
        bind.info[_REVISION] = revision
    if not postgres(bind):
        return
    bind.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
    if _CITUS not in bind.info:
        found = bind.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'"))
        bind.info[_CITUS] = found.first() is not None
    if bind.info[_CITUS]:
        bind.execute(text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))


def retrying(bind: Connection, what: str, attempt: Callable[[], T]) -> T:
    """``attempt()`` (which begins and ends its own transactions), again after a lock timeout,
    :data:`ATTEMPTS` times at most, with a backoff in between."""
    delay = BACKOFF
    for tried in range(1, ATTEMPTS + 1):
        try:
            return attempt()
        except DBAPIError as exc:
            if bind.in_transaction():
                bind.rollback()
            if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            if tried == ATTEMPTS:
                raise LockBudgetError(_budget_message(bind, what, exc)) from exc
        time.sleep(delay)
        delay = min(delay * 2, BACKOFF_CAP)
    raise AssertionError("unreachable")


def transaction(bind: Connection, what: str, work: Callable[[], T]) -> T:
    """``work()`` as one short transaction on PostgreSQL (what ran before it commits first),
    retried on a lock timeout; on SQLite ``work()`` in the running transaction."""
    if not postgres(bind):
        return work()

    def attempt() -> T:
        begin(bind)
        result = work()
        bind.commit()
        _notify(bind, "committed")
        return result

    _commit(bind)
    return retrying(bind, what, attempt)


def ddl(
    bind: Connection, what: str, *, done: Callable[[], bool], apply: Callable[[], None]
) -> None:
    """A schema change as one short transaction, skipped when ``done()`` (it committed in an
    earlier run of this revision that did not finish)."""

    def work() -> None:
        if not done():
            apply()

    transaction(bind, what, work)


def backfill(bind: Connection, what: str, batch: Callable[[K | None], K | None]) -> None:
    """``batch(after)`` from ``after=None`` until it returns ``None``, each call one short
    transaction on PostgreSQL; each returns the key the next one starts after."""
    after: K | None = None
    while True:

        def work(after: K | None = after) -> K | None:
            following = batch(after)
            _notify(bind, "batch")
            return following

        after = transaction(bind, what, work)
        if after is None:
            return


def create_index(bind: Connection, name: str, build: Callable[[], None]) -> None:
    """Build index ``name`` with ``build()`` (an ``op.create_index(...,
    postgresql_concurrently=True)``): on PostgreSQL outside any transaction, so that readers and
    writers go on while it builds; on SQLite in the running transaction."""
    if not postgres(bind):
        build()
        return
    _commit(bind)
    with _autocommit(bind):
        valid = bind.execute(
            text(
                "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
                " WHERE c.relname = :name AND pg_catalog.pg_table_is_visible(c.oid)"
            ),
            {"name": name},
        ).scalar()
        if valid is False:  # left by an interrupted build
            bind.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'))
        if not valid:
            build()
    _notify(bind, "committed")


def has_table(bind: Connection, table: str) -> bool:
    return bind.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar() is True


def has_column(bind: Connection, table: str, column: str) -> bool:
    found = bind.execute(
        text(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = :c"
            " AND NOT attisdropped"
        ),
        {"t": table, "c": column},
    )
    return found.first() is not None


def _commit(bind: Connection) -> None:
    if bind.in_transaction():
        bind.commit()
        _notify(bind, "committed")


@contextmanager
def _autocommit(bind: Connection) -> Iterator[None]:
    bind.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
    finally:
        if bind.in_transaction():
            bind.commit()
        bind.execution_options(isolation_level=bind.default_isolation_level)


def _notify(bind: Connection, event: str) -> None:
    for observer in observers:
        observer(bind, event, str(bind.info.get(_REVISION, "")))


def _sqlstate(exc: DBAPIError) -> str | None:
    orig: Any = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _budget_message(bind: Connection, what: str, exc: DBAPIError) -> str:
    revision = bind.info.get(_REVISION, "?")
    try:
        holders = bind.execute(
            text(
                "SELECT DISTINCT l.pid, c.relname, l.mode, a.state,"
                " left(coalesce(a.query, ''), 80) AS query FROM pg_locks AS l"
                " JOIN pg_class AS c ON c.oid = l.relation"
                " LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid"
                " WHERE l.granted AND l.pid <> pg_backend_pid() AND c.relnamespace ="
                " to_regnamespace(current_schema())::oid ORDER BY l.pid LIMIT 10"
            )
        ).all()
        bind.rollback()
        blocking = "; ".join(
            f"pid {r.pid} holds {r.mode} on {r.relname} ({r.state}: {r.query!r})" for r in holders
        )
    except DBAPIError:
        blocking = ""
    return (
        f"migration {revision}: {what} could not take its lock within {LOCK_TIMEOUT_MS} ms in "
        f"{ATTEMPTS} tries ({str(exc.orig).strip()}); "
        + (f"sessions holding locks: {blocking}" if blocking else "no lock holder seen now")
        + ". End the long transactions (or wait for them) and run the upgrade again: it resumes."
    )
