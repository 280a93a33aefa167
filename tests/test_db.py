"""Database URLs as users paste them, the store's lifecycle, and failures as typed errors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from chathistory import ChatHistory, ConfigurationError, UnavailableError
from chathistory.db import create_engine, parse_database_url


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        (
            "postgresql://alex:AbC123@ep-cool-darkness-123456.us-east-2.aws.neon.tech/dbname"
            "?sslmode=require&channel_binding=require",
            "postgresql://alex:AbC123@ep-cool-darkness-123456.us-east-2.aws.neon.tech/dbname"
            "?sslmode=require",
        ),
        ("postgres://u:p@h:5433/d", "postgresql://u:p@h:5433/d"),
        ("postgresql+asyncpg://u@h/d?ssl=require", "postgresql://u@h/d?sslmode=require"),
        ("postgresql+psycopg://u@h/d", "postgresql://u@h/d"),
        (
            "postgresql://u@/d?host=/var/run/postgresql",
            "postgresql://u@/d?host=%2Fvar%2Frun%2Fpostgresql",
        ),
        (
            "postgresql://u@h/d?application_name=app&prepared_statement_cache_size=0",
            "postgresql://u@h/d?application_name=app",
        ),
        ("  postgresql://u@h/d  ", "postgresql://u@h/d"),
    ],
)
def test_postgres_urls(url: str, dsn: str) -> None:
    target = parse_database_url(url)
    assert target.backend == "postgresql"
    assert target.url.drivername == "postgresql+asyncpg"
    assert target.connect_args["dsn"] == dsn


def test_connect_timeout_becomes_asyncpg_timeout() -> None:
    target = parse_database_url("postgresql://u@h/d?connect_timeout=3")
    assert target.connect_args["timeout"] == 3.0
    with pytest.raises(ConfigurationError):
        parse_database_url("postgresql://u@h/d?connect_timeout=soon")


def test_password_hidden_when_rendered() -> None:
    target = parse_database_url("postgresql://alex:s3cret@host/db")
    assert "s3cret" not in target.render()
    assert "***" in target.render()


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("sqlite:///chat.db", "chat.db"),
        ("sqlite:////abs/chat.db", "/abs/chat.db"),
        ("sqlite+aiosqlite:///chat.db", "chat.db"),
        ("sqlite+pysqlite:///chat.db", "chat.db"),
        ("chat.db", "chat.db"),
        ("./data/chat.db", "./data/chat.db"),
        ("/abs/chat.db", "/abs/chat.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        (":memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, database: str) -> None:
    target = parse_database_url(url)
    assert target.url.drivername == "sqlite+aiosqlite"
    assert target.url.database == database


@pytest.mark.parametrize("url", ["", "   ", "mysql://u@h/d", "redis://localhost"])
def test_unusable_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_database_url(url)


async def test_memory_database_is_one_database() -> None:
    async with ChatHistory.open("sqlite://") as store:
        conv = await store.create_conversation("u")
        await asyncio.gather(*(store.add_message("u", conv.id, "user", str(n)) for n in range(5)))
        assert (await store.get_conversation("u", conv.id)).message_count == 5


async def test_open_as_awaitable_and_close(tmp_path: Path) -> None:
    store = await ChatHistory.open(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        await store.create_conversation("u")
    finally:
        await store.close()


async def test_store_on_host_engine_leaves_it_open(backend_url: str) -> None:
    engine = create_engine(backend_url)
    try:
        async with ChatHistory.open(engine, migrate=False) as store:
            await store.ping()
        async with engine.connect() as conn:  # still usable: the store did not dispose it
            await conn.exec_driver_sql("SELECT 1")
        direct = ChatHistory(engine)
        await direct.ping()
    finally:
        await engine.dispose()


async def test_unreachable_postgres_raises_unavailable() -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    store = ChatHistory(engine, owns_engine=True)
    try:
        with pytest.raises(UnavailableError):
            await store.ping()
        with pytest.raises(UnavailableError):
            await store.create_conversation("u")
        with pytest.raises(UnavailableError):
            await store.list_conversations("u")
    finally:
        await store.close()


async def test_exhausted_pool_raises_unavailable(postgres_store_url: str) -> None:
    engine = create_engine(postgres_store_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    store = ChatHistory(engine, owns_engine=True)
    try:
        async with engine.connect() as held:  # the only connection, held by someone else
            await held.exec_driver_sql("SELECT 1")
            with pytest.raises(UnavailableError, match="came free"):
                await store.list_conversations("u")
        await store.list_conversations("u")  # and it recovers once one is free
    finally:
        await store.close()


def test_import_does_not_pull_in_web_frameworks() -> None:
    code = (
        "import sys, chathistory; "
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'typer') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- passwords never printed (red-team report, issue 9 item 9) ---------------------------------

SECRETS = ("NETSECRET", "QUERYSECRET", "SSLSECRET")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://alex:NETSECRET@host/db?password=QUERYSECRET&sslpassword=SSLSECRET"
            "&sslmode=require",
            "postgresql://alex:***@host/db?password=***&sslpassword=***&sslmode=require",
        ),
        (
            "postgresql://alex@host/db?password=QUERYSECRET",
            "postgresql://alex@host/db?password=***",
        ),
        (
            "postgresql://alex@host/db?PASSWORD=QUERYSECRET",
            "postgresql://alex@host/db?PASSWORD=***",
        ),
        ("postgres://u:NET%40SECRET@h:5/db", "postgresql://u:***@h:5/db"),
        ("postgresql://u:NET@SECRET@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u:@/db?host=/tmp/pg&sslpassword=SSLSECRET",
            "postgresql://u:***@/db?host=%2Ftmp%2Fpg&sslpassword=***",
        ),
        ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
    ],
)
def test_render_hides_every_password(url: str, shown: str) -> None:
    rendered = parse_database_url(url).render()
    assert rendered == shown
    assert not any(secret in rendered for secret in (*SECRETS, "NET@SECRET", "NET%40SECRET"))


def _with_secrets(url: str) -> str:
    """``url`` with a password in the user part and in both query parameters."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0] or 'postgres'}:NETSECRET@{hostport}"
    query = "&".join(q for q in (parts.query, "password=QUERYSECRET&sslpassword=SSLSECRET") if q)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    return subprocess.run(
        [sys.executable, "-m", "chathistory.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def _assert_no_secret(output: str) -> None:
    unwrapped = "".join(output.split())  # rich wraps long lines: a secret could straddle one
    assert not any(secret in unwrapped for secret in SECRETS), output


def test_db_upgrade_never_prints_a_password(make_pg_database: Any, tmp_path: Path) -> None:
    url = _with_secrets(make_pg_database("chathistory_render_tests"))
    result = _cli("db", "upgrade", "--database-url", url, cwd=tmp_path)  # trust auth: accepted
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "is at revision" in output
    assert "password=***" in "".join(output.split())
    _assert_no_secret(output)
    failed = _cli("db", "upgrade", "--database-url", _with_secrets(UNREACHABLE), cwd=tmp_path)
    assert failed.returncode == 1
    assert "error" in failed.stderr
    _assert_no_secret(failed.stdout + failed.stderr)


UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def test_serve_never_prints_a_password(make_pg_database: Any, tmp_path: Path) -> None:
    url = _with_secrets(make_pg_database("chathistory_render_tests"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    command = [sys.executable, "-m", "chathistory.cli", "serve", "--insecure-no-auth"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--database-url", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)  # polling a starting process, not synchronising tests
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert "servingpostgresql://postgres:***@" in "".join(output.split())
    _assert_no_secret(output)
    failed = _cli(
        "serve", "--insecure-no-auth", "--database-url", _with_secrets(UNREACHABLE), cwd=tmp_path
    )
    assert failed.returncode == 1
    _assert_no_secret(failed.stdout + failed.stderr)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_port_that_is_not_a_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        parse_database_url("postgresql://u:secret@host:abc/db")
