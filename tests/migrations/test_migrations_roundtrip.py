"""Populated databases migrated down to the first revision and up again keep every row: rows
compared column by column, on SQLite, PostgreSQL, PgBouncer and Citus. What a downgrade cannot
keep (branches, streaming statuses, the lifecycle, message extras) is what its report says, and
`chathistory db downgrade` refuses to lose it unless told."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from chathistory import ChatHistory, migrations
from chathistory.migrations import citus as citus_schema
from chathistory.migrations import downgrading
from tests.support.pgbouncer import pgbouncer

HEAD = migrations.head()
FIRST = "0001_initial"
Snapshot = dict[str, list[dict[str, Any]]]


@pytest.fixture(params=["sqlite", "postgres", "pgbouncer", "citus"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own on each backend (PgBouncer: this module's database
    behind its own pooler, emptied; Citus: distributed after the upgrade, by :func:`_migrated`)."""
    name = f"roundtrip_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roundtrip.db'}"
    elif request.param == "postgres":
        yield request.getfixturevalue("make_pg_database")(name)
    elif request.param == "pgbouncer":
        url = str(request.getfixturevalue("pooled_url"))
        asyncio.run(migrations.downgrade(url, "base"))  # empty again for each test
        asyncio.run(migrations.with_connection(url, _drop_version_table))
        yield url
    else:
        yield request.getfixturevalue("citus_database")(name)


@pytest.fixture(scope="module")
def pooled_url(make_pg_database: Callable[[str], str]) -> Iterator[str]:
    """A database of this module's own behind a PgBouncer in transaction pooling mode (the
    suite's pooler serves only the shared store database, which a downgrade would break)."""
    url = make_pg_database("roundtrip_pooled")
    with pgbouncer(url) as through:
        yield through(url)


def _drop_version_table(connection: Connection) -> None:
    connection.execute(text(f"DROP TABLE IF EXISTS {migrations.VERSION_TABLE}"))


async def _migrated(url: str) -> None:
    await migrations.upgrade(url)
    if await _has_citus(url):
        await citus_schema.distribute(url)


async def _has_citus(url: str) -> bool:
    found: bool = await migrations.with_connection(url, citus_schema.has_citus)
    return found


# --- populating through the library --------------------------------------------------------


def _call(call_id: str, name: str = "lookup") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


async def _populate(url: str, *, lossy: bool) -> dict[str, Any]:
    """Several users, every role, tool calls (parallel, answered, unanswered), content parts,
    unicode and metadata, search rows; ``lossy``: also what a downgrade cannot keep (extras,
    lifecycle, streaming statuses and updates, a branched conversation with a regenerate and
    an edit). Returns what the test needs to know about it."""
    known: dict[str, Any] = {}
    async with ChatHistory.open(url, migrate=False) as store:
        a = await store.create_conversation("alice", title="Tools", metadata={"k": "v"})
        await store.add_messages(
            "alice",
            a.id,
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Zürich and 東京?", "name": "al"},
                {"role": "assistant", "tool_calls": [_call("c1"), _call("c2")]},
                {"role": "tool", "tool_call_id": "c1", "content": "12°C", "metadata": {"t": "1"}},
                {"role": "tool", "tool_call_id": "c2", "content": "20°C"},
                {"role": "assistant", "content": "Cool and mild.", "tool_calls": [_call("c3")]},
            ],
        )
        parts = await store.create_conversation("bob")  # untitled: the first user message
        await store.add_messages(
            "bob",
            parts.id,
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture? 🖼️"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                        },
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "A cat, ça va."}]},
            ],
        )
        await store.create_conversation("bob", title="empty")
        if not lossy:
            return known
        extras = await store.create_conversation("carol", title="extras")
        stored = await store.add_messages(
            "carol",
            extras.id,
            [
                {"role": "user", "content": "Say something rude."},
                {"role": "assistant", "content": None, "refusal": "I won't."},
                {
                    "role": "assistant",
                    "content": "See [1].",
                    "function_call": {"name": "lookup", "arguments": '{"q": "x"}'},
                },
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "No, again."}]},
            ],
        )
        known["refused"] = stored[1].id
        await store.create_conversation("carol", archived=True, pinned=True)
        await store.create_conversation("carol", pinned=True)
        await store.create_conversation("carol", expires_at=datetime.now(UTC) + timedelta(days=30))
        stream = await store.create_conversation("dave", title="streams")
        [_, live, cut, done] = await store.add_messages(
            "dave",
            stream.id,
            [
                {"role": "user", "content": "Tell me a story."},
                {"role": "assistant", "content": "", "status": "in_progress"},
                {"role": "assistant", "content": "Once", "status": "in_progress"},
                {"role": "assistant", "content": "", "status": "in_progress"},
            ],
        )
        await store.update_message("dave", stream.id, live.id, append_text="Once upon")
        await store.update_message("dave", stream.id, cut.id, status="incomplete")
        await store.update_message(
            "dave", stream.id, done.id, content="The end.", status="completed"
        )
        tree = await store.create_conversation("ünïcødé-user", title="branches")
        [_, a1, u2, _] = await store.add_messages(
            "ünïcødé-user",
            tree.id,
            [
                {"role": "user", "content": "Hi 👋"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ],
        )
        await store.add_messages(  # regenerate a2
            "ünïcødé-user",
            tree.id,
            [{"role": "assistant", "content": "Paris!", "parent_id": u2.id}],
        )
        await store.add_messages(  # edit u2, and its answer: the active branch
            "ünïcødé-user",
            tree.id,
            [
                {"role": "user", "content": "Capital of Spain?", "parent_id": a1.id},
                {"role": "assistant", "content": "Madrid."},
            ],
        )
        known["branched"] = (tree.id, 7, 4)  # id, messages, on the active branch
    return known


# --- snapshots -------------------------------------------------------------------------------


def _snapshot(connection: Connection) -> Snapshot:
    """Every row of every table, every column, ordered by primary key (SQLite: the search
    table by its natural key, without its rowid, and not FTS5's own tables); on PostgreSQL
    every value as text (a tsvector too)."""
    inspector = inspect(connection)
    sqlite = connection.dialect.name == "sqlite"
    found: Snapshot = {}
    for table in inspector.get_table_names():
        if table.startswith(("message_search_fts", "sqlite_")):
            continue
        columns = [c["name"] for c in inspector.get_columns(table)]
        key = inspector.get_pk_constraint(table)["constrained_columns"]
        if sqlite and table == "message_search":
            columns.remove("search_rowid")
            key = ["message_id", "user_id"]
        shown = ", ".join(f'"{c}"' if sqlite else f'CAST("{c}" AS TEXT) AS "{c}"' for c in columns)
        order = ", ".join(f'"{c}"' for c in key) or shown
        rows = connection.execute(text(f'SELECT {shown} FROM "{table}" ORDER BY {order}'))
        found[table] = [dict(row._mapping) for row in rows]
    return found


def _schema(connection: Connection) -> list[str]:
    """The definitions of every index (and on SQLite every table and trigger)."""
    if connection.dialect.name == "sqlite":
        query = "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
    else:
        query = (
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " ORDER BY indexname"
        )
    # A batch rebuild (SQLite) lists a table's constraints in an order of its own: compared
    # as a set of lines.
    return [
        " | ".join(str(part) for part in row[:-1])
        + " | "
        + " ".join(sorted(line.strip().rstrip(",") for line in str(row[-1]).splitlines()))
        for row in connection.execute(text(query))
    ]


async def _read(url: str, fn: Callable[[Connection], Any]) -> Any:
    return await migrations.with_connection(url, fn)


async def _down_step_by_step_and_up(url: str, *, allow_data_loss: bool) -> list[str]:
    """Down one revision at a time to the first, then up to the newest; returns the revisions
    passed on the way down."""
    passed = []
    while (now := await migrations.current(url)) != FIRST:
        assert now is not None
        plan = await downgrading.plan_downgrade(url, _below(now))
        await downgrading.downgrade(url, _below(now), allow_data_loss=allow_data_loss)
        passed.append(now)
        assert plan.undone == [now]
        counts = await _read(url, _counts)
        assert counts == _counted, f"rows lost undoing {now}: {counts} != {_counted}"
    await migrations.upgrade(url)
    return passed


_counted: dict[str, int] = {}


def _counts(connection: Connection) -> dict[str, int]:
    return {
        table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        for table in ("conversations", "messages")
    }


def _above(revision: str) -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    [above] = [r.revision for r in script.walk_revisions() if r.down_revision == revision]
    return str(above)


def _below(revision: str) -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    below = script.get_revision(revision).down_revision
    assert isinstance(below, str)
    return below


# --- the tests -----------------------------------------------------------------------------


async def test_a_cycle_without_lossy_data_keeps_every_row_byte_for_byte(empty_url: str) -> None:
    await _migrated(empty_url)
    await _populate(empty_url, lossy=False)
    before = await _read(empty_url, _snapshot)
    schema = await _read(empty_url, _schema)
    assert await downgrading.downgrade_losses(empty_url, FIRST) == []
    _counted.clear()
    _counted.update(await _read(empty_url, _counts))
    passed = await _down_step_by_step_and_up(empty_url, allow_data_loss=False)
    assert passed[0] == HEAD and passed[-1] == _above(FIRST)  # every revision, one at a time
    assert len(passed) == len(set(passed))
    assert await migrations.current(empty_url) == HEAD
    assert await _read(empty_url, _snapshot) == before
    assert await _read(empty_url, _schema) == schema
    assert await migrations.drift(empty_url) == []
    if await _has_citus(empty_url):  # the tables created again are distributed like before
        assert not any(table.created for table in await citus_schema.distribute(empty_url))
    async with ChatHistory.open(empty_url, migrate=False) as store:
        [hit] = (await store.search_messages("alice", "zürich")).data
        assert hit.message.seq == 2


async def test_a_cycle_keeps_every_row_and_loses_only_what_it_reported(empty_url: str) -> None:
    await _migrated(empty_url)
    known = await _populate(empty_url, lossy=True)
    before = await _read(empty_url, _snapshot)
    schema = await _read(empty_url, _schema)

    losses = await downgrading.downgrade_losses(empty_url, FIRST)
    by_kind = {loss.kind: loss for loss in losses}
    assert list(by_kind) == ["branches", "status", "updated_at", "lifecycle", "extras"]
    assert by_kind["branches"].count == 1
    tree, total, active = known["branched"]
    assert f"({total - active} messages off their active branch)" in by_kind["branches"].detail
    assert str(tree) in by_kind["branches"].detail
    assert (by_kind["status"].count, by_kind["updated_at"].count) == (2, 3)
    assert by_kind["lifecycle"].count == 3
    assert "1 archived, 2 pinned, 1 with an expiry" in by_kind["lifecycle"].detail
    assert (
        by_kind["extras"].count == 2 and "1 of them hold nothing else" in by_kind["extras"].detail
    )
    assert not any(loss.count_is_lower_bound for loss in losses)
    with pytest.raises(downgrading.DataLossError, match="branched conversations"):
        await downgrading.downgrade(empty_url, FIRST)
    assert await migrations.current(empty_url) == HEAD  # refused: nothing changed
    assert await _read(empty_url, _snapshot) == before

    _counted.clear()
    _counted.update(await _read(empty_url, _counts))
    await _down_step_by_step_and_up(empty_url, allow_data_loss=True)
    after = await _read(empty_url, _snapshot)
    assert await _read(empty_url, _schema) == schema
    assert await migrations.drift(empty_url) == []
    assert set(after) == set(before)
    _expect_only_reported_losses(before, after, known)


def _expect_only_reported_losses(before: Snapshot, after: Snapshot, known: dict[str, Any]) -> None:
    """What docs/migrations.md says a downgrade to the first revision and back does
    (each conversation one chain in seq order, the last message current; no status, update,
    extras or lifecycle), applied to ``before``, is exactly ``after``."""
    postgres = isinstance(before["messages"][0]["seq"], str)  # every value as text
    false = "false" if postgres else 0
    refused = str(known["refused"]) if postgres else known["refused"].hex
    chains: dict[Any, dict[int, Any]] = {}
    for row in before["messages"]:
        chains.setdefault(row["conversation_id"], {})[int(row["seq"])] = row["id"]
    [kept] = [row for row in after["messages"] if row["id"] == refused]
    assert json.loads(kept["content"]) == [{"type": "refusal", "refusal": "I won't."}]
    expected = []
    for row in before["messages"]:
        parent = chains[row["conversation_id"]].get(int(row["seq"]) - 1)
        content = kept["content"] if row["id"] == refused else row["content"]
        expected.append(
            row
            | {"parent_id": parent, "fork": None, "extras": None, "updated_at": None}
            | {"status": "completed", "content": content, "children": None, "sibling": None}
        )
    assert after["messages"] == expected
    expected = []
    for row in before["conversations"]:
        chain = chains.get(row["id"], {})
        current = chain[max(chain)] if chain else None
        expected.append(
            row
            | {"current_message_id": current, "branched": false, "archived": false}
            | {"pinned": false, "expires_at": None, "roots": None}
        )
    assert after["conversations"] == expected
    assert after["conversation_paths"] == []
    # Derived data, computed again by the upgrade: the same.
    assert after["open_tool_calls"] == before["open_tool_calls"]
    assert after["message_search"] == before["message_search"]
    assert after["tool_call_sites"] == before["tool_call_sites"]


# --- the command ---------------------------------------------------------------------------


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "db", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={k: v for k, v in os.environ.items() if k != "CHATHISTORY_DATABASE_URL"},
    )


def test_db_downgrade_says_what_it_loses_and_refuses_unless_told(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    asyncio.run(_migrated(url))
    asyncio.run(_populate(url, lossy=True))
    before = asyncio.run(_read(url, _snapshot))
    target = "0006_streaming_turns"

    refused = _cli("downgrade", target, "--database-url", url, "--yes")
    assert refused.returncode == 1, refused.stderr
    assert "branched conversations (3 messages off their active branch)" in refused.stderr
    assert "--allow-data-loss" in refused.stderr and "Traceback" not in refused.stderr
    assert asyncio.run(migrations.current(url)) == HEAD
    assert asyncio.run(_read(url, _snapshot)) == before

    unconfirmed = _cli("downgrade", target, "--database-url", url, "--allow-data-loss", stdin="")
    assert unconfirmed.returncode == 1 and "Aborted" in unconfirmed.stderr
    assert asyncio.run(migrations.current(url)) == HEAD

    declined = _cli("downgrade", target, "--database-url", url, "--allow-data-loss", stdin="n\n")
    assert declined.returncode == 1
    assert asyncio.run(_read(url, _snapshot)) == before

    done = _cli("downgrade", target, "--database-url", url, "--allow-data-loss", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"is at revision {target}" in done.stderr
    current = _cli("current", "--database-url", url)
    assert current.stdout.strip() == f"{target} (newest is {HEAD})"

    again = _cli("downgrade", target, "--database-url", url)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    up = _cli("downgrade", HEAD, "--database-url", url, "--yes")
    assert up.returncode == 1 and "not below" in up.stderr


def test_db_downgrade_without_losses_asks_and_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    asyncio.run(_migrated(url))
    asyncio.run(_populate(url, lossy=False))
    unconfirmed = _cli("downgrade", "0004_message_search", "--database-url", url, stdin="")
    assert unconfirmed.returncode == 1 and "nothing would be lost" in unconfirmed.stderr
    assert asyncio.run(migrations.current(url)) == HEAD
    confirmed = _cli("downgrade", "0004", "--database-url", url, stdin="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert asyncio.run(migrations.current(url)) == "0004_message_search"
    unknown = _cli("downgrade", "nope", "--database-url", url, "--yes")
    assert unknown.returncode == 1 and "unknown revision" in unknown.stderr
