"""Scale-out on Citus: distribute the store's tables by ``user_id`` on a migrated coordinator.

Every table of the store carries ``user_id`` in each key and index, and every statement the
store runs names it, so each table becomes a distributed table by ``user_id``, colocated with
``conversations``: one user's conversations, messages and open tool calls live on one shard
group, and each statement for one user is routed to one worker. The version table stays a local
table of the coordinator (only migrations read it).

    await chathistory.migrations.citus.distribute("postgresql://coordinator/db")

Idempotent: a table already distributed by ``user_id`` is left alone and reported as such. A
future migration that creates a table calls :func:`distribute_new_table` so that a distributed
database stays distributed (see ``docs/deployment.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chathistory.errors import ConfigurationError

DISTRIBUTION_COLUMN: Final = "user_id"
ANCHOR: Final = "conversations"  # the table every other one is colocated with


@dataclass(frozen=True, slots=True)
class Distributed:
    """What ``distribute`` did to one table: ``created`` now, or found already distributed."""

    table: str
    created: bool
    shards: int


def store_tables() -> list[str]:
    """The store's tables in distribution order: the anchor first, then the others."""
    from chathistory.models import metadata

    names = [table.name for table in metadata.sorted_tables]
    for name in names:
        if DISTRIBUTION_COLUMN not in metadata.tables[name].c:
            raise AssertionError(f"table {name} has no {DISTRIBUTION_COLUMN}: not distributable")
    return [ANCHOR, *(name for name in names if name != ANCHOR)]


async def distribute(target: str | AsyncEngine) -> list[Distributed]:
    """Distribute every table of the store by ``user_id``, colocated; one transaction per table
    (rerun after an interruption to finish). Raises :class:`ConfigurationError` on a server
    without Citus, on a worker, or on a database that is not migrated to the newest revision."""
    from chathistory import migrations

    def check(connection: Connection) -> None:
        _require_citus_coordinator(connection)
        now = migrations.read_revision(connection)
        if now != migrations.head():
            raise ConfigurationError(
                f"the database is at revision {now or '(none)'}, the newest is "
                f"{migrations.head()}: run `chathistory db upgrade` first"
            )

    await migrations.with_connection(target, check)
    done: list[Distributed] = []
    for table in store_tables():
        outcome: Distributed = await migrations.with_connection(
            target, lambda connection, table=table: _distribute_one(connection, table)
        )
        done.append(outcome)
    return done


def distribute_new_table(connection: Connection, table: str) -> None:
    """For a migration that creates ``table``: distribute it like the others when the database
    is distributed (``conversations`` is), and do nothing elsewhere (SQLite, plain PostgreSQL)."""
    if has_citus(connection) and _distribution(connection, ANCHOR) is not None:
        _distribute_one(connection, table)


def has_citus(connection: Connection) -> bool:
    """Whether the database has the ``citus`` extension."""
    if connection.dialect.name != "postgresql":
        return False
    found = connection.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'"))
    return found.first() is not None


def _require_citus_coordinator(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        raise ConfigurationError(
            "`db distribute` needs PostgreSQL with the Citus extension; this database is "
            f"{connection.dialect.name}"
        )
    if not has_citus(connection):
        raise ConfigurationError(
            "this database has no `citus` extension: on a Citus coordinator run "
            "`CREATE EXTENSION citus` in it first (plain PostgreSQL cannot distribute tables)"
        )
    if not connection.execute(text("SELECT citus_is_coordinator()")).scalar():
        raise ConfigurationError(
            "this server is not the Citus coordinator (or has no nodes yet): run `db "
            "distribute` against the coordinator after `citus_set_coordinator_host` and "
            "`citus_add_node`"
        )


def _distribution(connection: Connection, table: str) -> tuple[str, str | None] | None:
    """``(method, column)`` of a table Citus knows, ``None`` for a plain local table."""
    row = connection.execute(
        text(
            "SELECT citus_table_type, distribution_column FROM citus_tables "
            "WHERE table_name = CAST(:table AS regclass)"
        ),
        {"table": table},
    ).first()
    if row is None:
        return None
    return str(row[0]), (None if row[1] in (None, "<none>") else str(row[1]))


def _distribute_one(connection: Connection, table: str) -> Distributed:
    # Two `db distribute` runs at once wait here rather than race on the same table.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('chathistory distribute'))"))
    found = _distribution(connection, table)
    if found == ("distributed", DISTRIBUTION_COLUMN):
        return Distributed(table, created=False, shards=_shards(connection, table))
    if found is not None:
        kind, column = found
        raise ConfigurationError(
            f"{table} is already a Citus {kind} table"
            + (f" by {column}" if column else "")
            + f"; the store needs it distributed by {DISTRIBUTION_COLUMN}: undistribute it "
            "(`SELECT undistribute_table(...)`) and run `db distribute` again"
        )
    colocate = "default" if table == ANCHOR else ANCHOR
    connection.execute(
        text("SELECT create_distributed_table(:table, :column, colocate_with => :colocate)"),
        {"table": table, "column": DISTRIBUTION_COLUMN, "colocate": colocate},
    )
    return Distributed(table, created=True, shards=_shards(connection, table))


def _shards(connection: Connection, table: str) -> int:
    return int(
        connection.execute(
            text("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = CAST(:t AS regclass)"),
            {"t": table},
        ).scalar_one()
    )
