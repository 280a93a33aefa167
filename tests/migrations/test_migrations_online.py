"""Upgrades are online on PostgreSQL: one revision per commit, backfills in short transactions
that hold no table lock, a bounded wait for each strong lock, and an interrupted upgrade that
resumes to the same data an uninterrupted one writes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import await_only

from chathistory import migrations
from chathistory.db import create_engine
from chathistory.migrations import citus as citus_schema
from chathistory.migrations import online
from tests.support.pgbouncer import pgbouncer

FIRST = "0001_initial"
STORE_TABLES = ("conversations", "messages", "open_tool_calls", "message_search")
STRONG = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
CONVERSATIONS = 1_100  # more than two backfill batches of 0002 and 0007 (500 each)
WITH_MESSAGES = 300  # of them hold messages: 4 each, more than one batch of 0004 (1,000)


class Interrupted(Exception):
    """Raised from an observer: the upgrade stops in the middle of a backfill."""


@pytest.fixture
def observe() -> Iterator[Callable[[Callable[[Connection, str, str], None]], None]]:
    added: list[Callable[[Connection, str, str], None]] = []

    def add(observer: Callable[[Connection, str, str], None]) -> None:
        online.observers.append(observer)
        added.append(observer)

    yield add
    for observer in added:
        online.observers.remove(observer)


def _id(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


async def _fill(url: str) -> None:
    """Conversations and messages in the first release's schema: user turns, a tool call and
    its answer, a refusal part, and an unanswered call in every tenth conversation."""
    conversations, messages = [], []
    for n in range(CONVERSATIONS):
        conv, user = _id(n + 1), f"u{n % 7}"
        turns: list[dict[str, Any]] = []
        if n < WITH_MESSAGES:
            call = f"call_{n}"
            calls = [{"id": call, "type": "function", "function": {"name": "f", "arguments": "{}"}}]
            turns = [
                {"role": "user", "content": json.dumps(f"hello harbor {n}")},
                {"role": "assistant", "content": None, "tool_calls": json.dumps(calls)},
                {"role": "tool", "content": json.dumps("sunny"), "tool_call_id": call},
                {
                    "role": "assistant",
                    "content": json.dumps([{"type": "refusal", "refusal": f"no zanzibar {n}"}]),
                },
            ]
            if n % 10 == 0:  # the last call stays open
                turns = turns[:2]
        conversations.append({"id": conv, "user_id": user, "count": len(turns)})
        for seq, turn in enumerate(turns, start=1):
            messages.append(
                {
                    "id": _id(1_000_000 + n * 10 + seq),
                    "user_id": user,
                    "conversation_id": conv,
                    "seq": seq,
                    "tool_calls": None,
                    "tool_call_id": None,
                    **turn,
                }
            )
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO conversations (id, user_id, title, metadata, created_at,"
                    " updated_at, message_count) VALUES (:id, :user_id, NULL, '{}',"
                    " '2026-01-02T00:00:00Z', '2026-01-02T00:00:00Z', :count)"
                ),
                conversations,
            )
            await conn.execute(
                text(
                    "INSERT INTO messages (id, user_id, conversation_id, seq, role, content,"
                    " tool_calls, tool_call_id, metadata, created_at) VALUES (:id, :user_id,"
                    " :conversation_id, :seq, :role, CAST(:content AS jsonb),"
                    " CAST(:tool_calls AS jsonb), :tool_call_id, '{}', '2026-01-02T00:00:00Z')"
                ),
                messages,
            )
    finally:
        await engine.dispose()


async def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "conversations": "SELECT id, user_id, message_count, has_user_message,"
        " current_message_id, archived, pinned, branched FROM conversations ORDER BY id, user_id",
        "messages": "SELECT id, parent_id, fork, status, extras FROM messages ORDER BY id",
        "open_tool_calls": "SELECT * FROM open_tool_calls ORDER BY conversation_id, call_id",
        "message_search": "SELECT message_id, user_id, conversation_id, words::text"
        " FROM message_search ORDER BY message_id",
        "invalid": "SELECT conname FROM pg_constraint WHERE NOT convalidated"
        " UNION ALL SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid",
    }
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                name: [tuple(row) for row in (await conn.execute(text(sql))).all()]
                for name, sql in queries.items()
            }
    finally:
        await engine.dispose()


@pytest.fixture
def filled(make_pg_database: Callable[[str], str]) -> Callable[[str], str]:
    """``filled(name)``: a database of that name at 0001 with :func:`_fill`'s data."""

    def make(name: str) -> str:
        url = make_pg_database(name)
        asyncio.run(migrations.upgrade(url, FIRST))
        asyncio.run(_fill(url))
        return url

    return make


def test_each_revision_commits_alone_and_backfills_hold_no_table_lock(
    filled: Callable[[str], str], observe: Any
) -> None:
    url = filled("chathistory_online_locks")
    seen: list[tuple[str, str, str | None, list[tuple[str, str]]]] = []
    written: list[str] = []

    async def main() -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as other:

                def look(bind: Connection, event: str, revision: str) -> None:
                    stamped, strong = await_only(_look(other))
                    seen.append((event, revision, stamped, strong))
                    if event == "batch":  # an old-shaped writer, not made to wait
                        await_only(_write(other, len(written)))
                        written.append(revision)

                observe(look)
                await migrations.upgrade(url)
        finally:
            await engine.dispose()

    asyncio.run(main())
    batches = [(revision, stamped) for event, revision, stamped, _ in seen if event == "batch"]
    for revision in ("0002_bounded_appends", "0004_message_search", "0007_branches"):
        assert sum(1 for r, _ in batches if r == revision) >= 2, revision
    # While a revision's backfill runs, the version table still names the revision before it.
    scripts = ScriptDirectory.from_config(migrations.alembic_config())
    for revision, stamped in batches:
        revision_script = scripts.get_revision(revision)
        assert revision_script is not None
        assert stamped == revision_script.down_revision, (revision, stamped)
    # No strong lock on a store table at any step boundary or inside any batch.
    assert [strong for *_, strong in seen if strong] == []
    # The version table advanced one revision at a time (every one but the last seen stamped
    # from another connection while the upgrade ran), in order.
    # (A revision with no step on PostgreSQL, as 0011 has none, is stamped right after the one
    # before it, with no step between to see that one's stamp.)
    order = [r.revision for r in reversed(list(scripts.walk_revisions()))]
    stamps = list(dict.fromkeys(stamped for _, _, stamped, _ in seen))
    assert stamps == [revision for revision in order if revision in stamps]
    assert set(order) - set(stamps) <= {"0010_branch_bounds", order[-1]}
    assert "0010_branch_bounds" in [revision for _, revision, _, _ in seen]
    assert len(written) == len(batches)
    assert asyncio.run(migrations.current(url)) == migrations.head()
    assert asyncio.run(migrations.drift(url)) == []


async def _look(other: AsyncConnection) -> tuple[str | None, list[tuple[str, str]]]:
    async with other.begin():
        stamped = (
            await other.execute(text("SELECT version_num FROM chathistory_alembic_version"))
        ).scalar()
        # Table locks only: a relation extension lock (locktype 'extend', ExclusiveLock, held
        # for an instant while a writer grows the table) blocks no reader or writer for long.
        strong = (
            await other.execute(
                text(
                    "SELECT c.relname, l.mode FROM pg_locks AS l JOIN pg_class AS c"
                    " ON c.oid = l.relation WHERE l.locktype = 'relation'"
                    " AND l.pid <> pg_backend_pid() AND l.granted"
                    " AND c.relname = ANY(:tables) AND l.mode = ANY(:modes)"
                ),
                {"tables": list(STORE_TABLES), "modes": list(STRONG)},
            )
        ).all()
    return stamped, [tuple(row) for row in strong]


async def _write(other: AsyncConnection, n: int) -> None:
    """A conversation and a message as the first release writes them, under a 100 ms lock
    budget: it fails (and the test with it) if anything holds a lock it needs."""
    conv = uuid.uuid4()
    async with other.begin():
        await other.execute(text("SET LOCAL lock_timeout = '100ms'"))
        await other.execute(
            text(
                "INSERT INTO conversations (id, user_id, metadata, created_at, updated_at,"
                " message_count) VALUES (:id, 'writer', '{}', now(), now(), 1)"
            ),
            {"id": conv},
        )
        await other.execute(
            text(
                "INSERT INTO messages (id, user_id, conversation_id, seq, role, content,"
                " metadata, created_at) VALUES (:id, 'writer', :conv, 1, 'user',"
                " to_jsonb(CAST(:words AS text)), '{}', now())"
            ),
            {"id": uuid.uuid4(), "conv": conv, "words": f"written during the upgrade {n}"},
        )
        await other.execute(
            text("SELECT * FROM messages WHERE user_id = 'u1' ORDER BY seq DESC LIMIT 50")
        )


def test_an_interrupted_upgrade_resumes_to_the_same_data(
    filled: Callable[[str], str], observe: Any
) -> None:
    reference = filled("chathistory_online_reference")
    interrupted = filled("chathistory_online_interrupted")
    asyncio.run(migrations.upgrade(reference))
    stops = ["0002_bounded_appends", "0004_message_search", "0007_branches", "0008_refusal_search"]
    batches: dict[str, int] = {}

    def stop(bind: Connection, event: str, revision: str) -> None:
        if event == "batch" and stops and revision == stops[0]:
            batches[revision] = batches.get(revision, 0) + 1
            if batches[revision] == 2 or revision == "0008_refusal_search":
                stops.pop(0)
                raise Interrupted(revision)

    observe(stop)
    before = "0001_initial"
    for revision in list(stops):
        with pytest.raises(Interrupted):
            asyncio.run(migrations.upgrade(interrupted))
        now = asyncio.run(migrations.current(interrupted))
        assert now is not None and before <= now < revision  # not stamped: not done
        before = now
    assert stops == []

    async def concurrently() -> None:  # the last run: three upgrades at once, as workers do
        await asyncio.gather(*(migrations.upgrade(interrupted) for _ in range(3)))

    asyncio.run(concurrently())
    assert asyncio.run(migrations.current(interrupted)) == migrations.head()
    assert asyncio.run(_dump(interrupted)) == asyncio.run(_dump(reference))
    assert asyncio.run(_dump(reference))["invalid"] == []


def test_a_held_lock_fails_the_step_naming_the_revision(
    make_pg_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_pg_database("chathistory_online_budget")
    asyncio.run(migrations.upgrade(url, "0002_bounded_appends"))
    monkeypatch.setattr(online, "ATTEMPTS", 2)
    monkeypatch.setattr(online, "LOCK_TIMEOUT_MS", 50)
    monkeypatch.setattr(online, "BACKOFF", 0.01)

    async def main() -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as reader:
                await reader.execute(text("SELECT count(*) FROM messages"))  # stays open
                with pytest.raises(online.LockBudgetError) as raised:
                    await migrations.upgrade(url)
                message = str(raised.value)
                assert "0003_message_extras" in message and "messages" in message
                assert "AccessShareLock" in message
                # Readers waited at most one lock budget per try: a fresh one reads now.
                async with engine.connect() as fresh:
                    await fresh.execute(text("SET lock_timeout = '50ms'"))
                    await fresh.execute(text("SELECT count(*) FROM messages"))
                await reader.rollback()
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert asyncio.run(migrations.current(url)) == "0002_bounded_appends"
    asyncio.run(migrations.upgrade(url))
    assert asyncio.run(migrations.current(url)) == migrations.head()


@pytest.fixture
def bouncer(pg_server_url: str) -> Iterator[Callable[[str], str]]:
    """``bouncer(database_url)``: the same database through PgBouncer in transaction mode."""
    with pgbouncer(pg_server_url) as through:
        yield through


def test_concurrent_upgrades_through_pgbouncer(
    filled: Callable[[str], str], bouncer: Callable[[str], str]
) -> None:
    direct = filled("chathistory_online_bouncer")
    reference = filled("chathistory_online_bouncer_reference")
    asyncio.run(migrations.upgrade(reference))
    url = bouncer(direct)

    async def upgrades() -> None:
        await asyncio.gather(*(migrations.upgrade(url) for _ in range(3)))

    asyncio.run(upgrades())
    assert asyncio.run(migrations.current(direct)) == migrations.head()
    assert asyncio.run(_dump(direct)) == asyncio.run(_dump(reference))


def test_an_interrupted_upgrade_of_distributed_tables(
    citus_database: Callable[[str], str], filled: Callable[[str], str], observe: Any
) -> None:
    """On Citus: distributed tables at the first revision with data, an upgrade stopped in the
    middle of 0007's backfill, then resumed, end as an uninterrupted upgrade on PostgreSQL."""
    reference = filled("chathistory_online_citus_reference")
    asyncio.run(migrations.upgrade(reference))
    url = citus_database("online_migrations")
    asyncio.run(migrations.upgrade(url))
    asyncio.run(citus_schema.distribute(url))  # needs the newest revision: then down to 0001
    asyncio.run(migrations.downgrade(url, FIRST))
    asyncio.run(_fill(url))
    batches: list[str] = []

    def stop(bind: Connection, event: str, revision: str) -> None:
        if event == "batch" and revision == "0007_branches":
            batches.append(revision)
            if len(batches) == 2:
                raise Interrupted(revision)

    observe(stop)
    with pytest.raises(Interrupted):
        asyncio.run(migrations.upgrade(url))
    assert asyncio.run(migrations.current(url)) == "0006_streaming_turns"
    asyncio.run(migrations.upgrade(url))
    assert asyncio.run(migrations.current(url)) == migrations.head()
    assert asyncio.run(migrations.drift(url)) == []
    assert asyncio.run(_dump(url)) == asyncio.run(_dump(reference))


def test_an_index_build_left_invalid_is_built_again(filled: Callable[[str], str]) -> None:
    """A concurrent index build that did not finish leaves an invalid index of the name: the
    next upgrade drops it and builds the migration's own."""
    url = filled("chathistory_online_invalid_index")
    asyncio.run(migrations.upgrade(url, "0004_message_search"))

    async def leave_invalid() -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                with pytest.raises(Exception, match="could not create unique index"):
                    await conn.execute(  # duplicates: the build fails, the index stays invalid
                        text(
                            "CREATE UNIQUE INDEX CONCURRENTLY ix_conversations_user_id_expires_at"
                            " ON conversations (message_count)"
                        )
                    )
        finally:
            await engine.dispose()

    asyncio.run(leave_invalid())
    assert asyncio.run(_invalid_indexes(url)) == ["ix_conversations_user_id_expires_at"]
    asyncio.run(migrations.upgrade(url))
    assert asyncio.run(_invalid_indexes(url)) == []
    assert asyncio.run(migrations.drift(url)) == []


async def _invalid_indexes(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
            )
            return [str(row[0]) for row in found]
    finally:
        await engine.dispose()
