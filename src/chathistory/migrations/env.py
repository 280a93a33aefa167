"""Alembic environment for chathistory (its version table: chathistory_alembic_version).

Normally driven by :mod:`chathistory.migrations`, which hands over an open connection. Run through
the ``alembic`` command, it reads ``sqlalchemy.url`` (or ``CHATHISTORY_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from chathistory.db import create_engine
from chathistory.migrations import VERSION_TABLE, configure_context
from chathistory.models import metadata

config = context.config


def run_with(connection: Connection) -> None:
    configure_context(context, connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_with)
            await connection.commit()  # a revision may have committed its own steps already
    finally:
        await engine.dispose()


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get(
        "CHATHISTORY_DATABASE_URL", "chathistory.db"
    )


if context.is_offline_mode():
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    run_with(connection)
else:
    asyncio.run(_run_online(_url()))
