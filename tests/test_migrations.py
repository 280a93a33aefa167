"""The shipped migrations build the schema the models describe, both ways, on both backends."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from chathistory import ChatHistory, ConfigurationError, UnavailableError, migrations
from chathistory.db import create_engine


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(
    request: pytest.FixtureRequest, tmp_path: Path, make_pg_database: Callable[[str], str]
) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return make_pg_database("chathistory_migration_tests")


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_without_drift(fresh_url: str) -> None:
    assert await migrations.current(fresh_url) is None
    await migrations.upgrade(fresh_url)
    assert await migrations.current(fresh_url) == migrations.head()
    assert await migrations.drift(fresh_url) == []
    assert {"conversations", "messages", "chathistory_alembic_version"} <= await _tables(fresh_url)

    await migrations.downgrade(fresh_url, "base")
    assert await migrations.current(fresh_url) is None
    assert not {"conversations", "messages"} & await _tables(fresh_url)

    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []
    await migrations.upgrade(fresh_url)  # at head already: nothing to do
    async with ChatHistory.open(fresh_url) as store:
        conv = await store.create_conversation("u")
        await store.add_message("u", conv.id, "user", "works")


async def test_host_apps_alembic_table_is_untouched(fresh_url: str) -> None:
    engine = create_engine(fresh_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            await conn.execute(text("INSERT INTO alembic_version VALUES ('hostapp123')"))
        await migrations.upgrade(engine)
        await migrations.downgrade(engine, "base")
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert [tuple(r) for r in rows] == [("hostapp123",)]
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_do_not_race(fresh_url: str) -> None:
    await asyncio.gather(*(migrations.upgrade(fresh_url) for _ in range(4)))
    assert await migrations.current(fresh_url) == migrations.head()


async def test_open_migrates_unless_told_not_to(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auto.db'}"
    async with ChatHistory.open(url, migrate=False):
        pass
    assert await migrations.current(url) is None
    async with ChatHistory.open(url):
        pass
    assert await migrations.current(url) == migrations.head()


async def test_unreachable_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        await migrations.upgrade(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(UnavailableError):
        await ChatHistory.open("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_cli_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = [sys.executable, "-m", "chathistory.cli"]
    before = subprocess.run(
        [*run, "db", "current", "--database-url", url], capture_output=True, text=True, check=True
    )
    assert before.stdout.startswith("(none)")
    upgraded = subprocess.run(
        [*run, "db", "upgrade", "--database-url", url], capture_output=True, text=True, check=True
    )
    assert migrations.head() in upgraded.stderr + upgraded.stdout
    after = subprocess.run(
        [*run, "db", "current"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CHATHISTORY_DATABASE_URL": url},
    )
    assert after.stdout.strip() == f"{migrations.head()} (up to date)"
    failed = subprocess.run(
        [*run, "db", "upgrade", "--database-url", f"sqlite:///{tmp_path / 'no' / 'x.db'}"],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1
    assert "error" in failed.stderr
    assert "Traceback" not in failed.stderr
