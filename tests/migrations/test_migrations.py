"""The shipped migrations build the schema the models describe, both ways, on both backends."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, text

from chathistory import (
    ChatHistory,
    ConfigurationError,
    ConflictError,
    UnavailableError,
    ValidationError,
    migrations,
)
from chathistory.db import create_engine
from chathistory.migrations import citus as citus_schema
from chathistory.models import conversations, message_search, messages
from chathistory.store import search_syntax


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


async def test_open_tool_calls_are_backfilled(fresh_url: str) -> None:
    """Migration 0002 fills ``open_tool_calls`` from stored messages (for each call id the
    newest assistant message that called it, unless a later tool message answered it) and
    ``has_user_message``."""
    await migrations.upgrade(fresh_url, "0001_initial")
    engine = create_engine(fresh_url)
    user, conv = "u", "0190c9a8-0000-7000-8000-000000000001"

    def call(*ids: str) -> str:
        function = {"name": "f", "arguments": ""}
        return json.dumps([{"id": i, "type": "function", "function": function} for i in ids])

    rows = [  # seq, role, tool_calls, tool_call_id
        (1, "assistant", call("a", "b"), None),
        (2, "tool", None, "a"),
        (3, "assistant", call("a"), None),  # reuses "a": open again, at seq 3
        (4, "assistant", call("c"), None),
        (5, "tool", None, "c"),
    ]
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=uuid.UUID(conv),
                    user_id=user,
                    metadata={},
                    created_at=now,
                    updated_at=now,
                    message_count=5,
                )
            )
            for seq, role, calls, answers in rows:
                await conn.execute(
                    insert(messages).values(
                        id=uuid.uuid4(),
                        user_id=user,
                        conversation_id=uuid.UUID(conv),
                        seq=seq,
                        role=role,
                        content="r" if role == "tool" else None,
                        tool_calls=None if calls is None else json.loads(calls),
                        tool_call_id=answers,
                        metadata={},
                        created_at=now,
                    )
                )
    finally:
        await engine.dispose()
    await migrations.upgrade(fresh_url)
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        async with store.engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT call_id, seq FROM open_tool_calls ORDER BY call_id")
                )
            ).all()
        assert [tuple(row) for row in found] == [("a", 3), ("b", 1)]
        # And the store goes on from there: "b" can be answered once, "c" not again.
        await store.add_message(user, uuid.UUID(conv), "tool", "rb", tool_call_id="b")
        with pytest.raises(ValidationError):
            await store.add_message(user, uuid.UUID(conv), "tool", "rc", tool_call_id="c")
        # No user message before the migration: the first one titles the conversation.
        await store.add_message(user, uuid.UUID(conv), "user", "first words")
        assert (await store.get_conversation(user, uuid.UUID(conv))).title == "first words"


async def test_search_words_are_backfilled(fresh_url: str) -> None:
    """Migration 0004 indexes the messages stored before it, in batches (2,500 messages of two
    users: more than two batches), and search finds them as if they had been appended since."""
    await migrations.upgrade(fresh_url, "0003_message_extras")
    engine = create_engine(fresh_url)
    now = datetime.now(UTC)
    convs = {"u1": uuid.uuid4(), "u2": uuid.uuid4()}
    try:
        async with engine.begin() as conn:
            for user, conv in convs.items():
                await conn.execute(
                    insert(conversations).values(
                        id=conv,
                        user_id=user,
                        metadata={},
                        created_at=now,
                        updated_at=now,
                        message_count=1250,
                    )
                )
                await conn.execute(
                    insert(messages),
                    [
                        {
                            "id": uuid.uuid4(),
                            "user_id": user,
                            "conversation_id": conv,
                            "seq": n,
                            "role": "user",
                            "content": [{"type": "text", "text": f"parts {n}"}]
                            if n % 5 == 0
                            else f"message {n} of {user}" + (" rare-word" if n == 77 else ""),
                            "metadata": {},
                            "created_at": now,
                        }
                        for n in range(1, 1251)
                    ],
                )
    finally:
        await engine.dispose()
    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        hits = (await store.search_messages("u1", '"rare word"')).data
        assert [h.message.seq for h in hits] == [77]
        assert (await store.search_messages("u2", "u1")).data == []
        parts = await store.search_messages("u2", "parts", limit=100)
        assert len(parts.data) == 100 and parts.has_more
        count, cursor = 0, None
        while True:
            page = await store.search_messages("u1", "message", limit=100, cursor=cursor)
            count += len(page.data)
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert count == 1000  # every message but the 250 of parts


async def test_stored_messages_read_as_completed_after_0006(fresh_url: str) -> None:
    """Migration 0006 adds status and updated_at without touching stored rows: every message
    reads as completed, last updated when it was created, and stays finished."""
    await migrations.upgrade(fresh_url, "0005_conversation_lifecycle")
    engine = create_engine(fresh_url)
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    conv, answer = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=conv,
                    user_id="u",
                    metadata={},
                    created_at=created,
                    updated_at=created,
                    message_count=1,
                )
            )
            await conn.execute(
                insert(messages).values(
                    id=answer,
                    user_id="u",
                    conversation_id=conv,
                    seq=1,
                    role="assistant",
                    content="stored before 0006",
                    metadata={},
                    created_at=created,
                )
            )
    finally:
        await engine.dispose()
    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        stored = await store.get_message("u", conv, answer)
        assert (stored.status, stored.updated_at) == ("completed", created)
        with pytest.raises(ConflictError, match="completed"):
            await store.update_message("u", conv, answer, {"append_text": "!"})
    await migrations.downgrade(fresh_url, "0005_conversation_lifecycle")
    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []


async def test_0007_links_every_stored_message_to_the_one_before(fresh_url: str) -> None:
    """Migration 0007 gives each stored message its parent (the message one seq before) and
    each conversation its current message (the last), more conversations than one batch."""
    await migrations.upgrade(fresh_url, "0006_streaming_turns")
    engine = create_engine(fresh_url)
    created = datetime(2026, 1, 2, tzinfo=UTC)
    convs = [uuid.uuid4() for _ in range(1203)]
    ids = {conv: [uuid.uuid4() for _ in range(3)] for conv in convs[:3]}
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations),
                [
                    {
                        "id": conv,
                        "user_id": f"u{n % 7}",
                        "metadata": {},
                        "created_at": created,
                        "updated_at": created,
                        "message_count": len(ids.get(conv, [])),
                    }
                    for n, conv in enumerate(convs)
                ],
            )
            user_of = {conv: f"u{n % 7}" for n, conv in enumerate(convs)}
            await conn.execute(
                insert(messages),
                [
                    {
                        "id": message_id,
                        "user_id": user_of[conv],
                        "conversation_id": conv,
                        "seq": seq,
                        "role": "user",
                        "content": f"m{seq}",
                        "metadata": {},
                        "created_at": created,
                    }
                    for conv, chain in ids.items()
                    for seq, message_id in enumerate(chain, start=1)
                ],
            )
    finally:
        await engine.dispose()
    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        for conv, chain in ids.items():
            user = user_of[conv]
            history = await store.get_chat_history(user, conv)
            assert [m.parent_id for m in history] == [None, *chain[:-1]]
            assert (await store.get_conversation(user, conv)).current_message_id == chain[-1]
            [added] = await store.add_messages(user, conv, [{"role": "user", "content": "next"}])
            assert added.parent_id == chain[-1]
        assert (
            await store.get_conversation(user_of[convs[-1]], convs[-1])
        ).current_message_id is None


async def _store_before_0008(url: str) -> dict[str, uuid.UUID]:
    """At revision 0007: 5,100 assistant messages of two users (ids 1 … 5100, so their key
    order is known: two windows of the walk), indexed as search indexed them then (text parts
    only). Returns the ids of the messages that matter, by name."""
    engine = create_engine(url)
    created = datetime(2026, 1, 2, tzinfo=UTC)
    convs = {"u1": uuid.uuid4(), "u2": uuid.uuid4()}
    refusing = {  # n: content; the first, both ends of the first window, the last
        1: [{"type": "refusal", "refusal": "Declined politely."}],
        5000: [{"type": "text", "text": "Hello there"}, {"type": "refusal", "refusal": "Nope"}],
        5001: [{"type": "refusal", "refusal": "sorrowfully not"}],
        5100: [{"type": "text", "text": "bye"}, {"type": "refusal", "refusal": "last refusal"}],
    }
    quoting = 2  # string content that quotes "refusal": no refusal part, left as it is
    rows = []
    for n in range(1, 5101):
        user = "u1" if n % 2 else "u2"
        content: object = refusing.get(n, f"message {n}")
        if n == quoting:
            content = 'the word "refusal" in quotes'
        rows.append(
            {
                "id": uuid.UUID(int=n),
                "user_id": user,
                "conversation_id": convs[user],
                "seq": n,
                "role": "assistant",
                "content": content,
                "metadata": {},
                "created_at": created,
            }
        )
    postgres = url.startswith("postgresql")
    cut = search_syntax.tsvector_text if postgres else search_syntax.index_text

    def old_text(n: int, content: object) -> str | None:
        if n == quoting:
            return "sentinel"  # not its text: shows the migration left the row alone
        if isinstance(content, str):
            return content
        assert isinstance(content, list)
        return "\n".join(p["text"] for p in content if p["type"] == "text") or None

    indexed = [
        {
            "message_id": row["id"],
            "user_id": row["user_id"],
            "conversation_id": row["conversation_id"],
            "created_at": created,
            "words": cut(text_),
        }
        for n, row in enumerate(rows, start=1)
        if (text_ := old_text(n, row["content"])) is not None
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations),
                [
                    {
                        "id": conv,
                        "user_id": user,
                        "metadata": {},
                        "created_at": created,
                        "updated_at": created,
                        "message_count": 2550,
                    }
                    for user, conv in convs.items()
                ],
            )
            await conn.execute(insert(messages), rows)
            await conn.execute(insert(message_search), indexed)
    finally:
        await engine.dispose()
    return {"first": uuid.UUID(int=1), "hello": uuid.UUID(int=5000), "quoting": uuid.UUID(int=2)}


async def _found(store: ChatHistory, user: str, query: str) -> list[int]:
    return [hit.message.seq for hit in (await store.search_messages(user, query)).data]


async def test_0008_indexes_the_refusal_parts_of_stored_messages(fresh_url: str) -> None:
    """Migration 0008 indexes again exactly the stored messages whose content holds a refusal
    part, in every window of its walk; the others keep their rows."""
    await migrations.upgrade(fresh_url, "0007_branches")
    await _store_before_0008(fresh_url)
    engine = create_engine(fresh_url)  # (today's store reads columns 0007 does not have)
    async with engine.connect() as conn:
        indexed = await conn.execute(
            text("SELECT count(*) FROM message_search WHERE CAST(words AS TEXT) LIKE '%declin%'")
        )
        assert indexed.scalar() == 0  # not indexed yet
    await engine.dispose()
    await migrations.upgrade(fresh_url)
    assert await migrations.current(fresh_url) == migrations.head()
    assert await migrations.drift(fresh_url) == []
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        assert await _found(store, "u1", "declined politely") == [1]
        assert await _found(store, "u2", "hello nope") == [5000]  # text and refusal
        assert await _found(store, "u1", "sorrowfully") == [5001]
        assert await _found(store, "u2", '"bye last refusal"') == [5100]
        assert await _found(store, "u2", "sentinel") == [2]  # not a refusal part: untouched
        assert await _found(store, "u2", "quotes") == []
        assert await _found(store, "u1", "message 4999") == [4999]
    # Nothing to undo, and running it again finds the same.
    await migrations.downgrade(fresh_url, "0007_branches")
    await migrations.upgrade(fresh_url)
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        assert await _found(store, "u1", "sorrowfully") == [5001]


async def test_0008_on_a_distributed_database(citus_database: Callable[[str], str]) -> None:
    """Migration 0008 on Citus: its reads walk every shard, its writes go to one each."""
    url = citus_database("refusal_search_migration")
    await migrations.upgrade(url)
    await citus_schema.distribute(url)  # needs the newest revision: then down to 0007
    await migrations.downgrade(url, "0007_branches")
    await _store_before_0008(url)
    await migrations.upgrade(url)
    async with ChatHistory.open(url, migrate=False) as store:
        assert await _found(store, "u1", "declined politely") == [1]
        assert await _found(store, "u2", "hello nope") == [5000]
        assert await _found(store, "u1", "sorrowfully") == [5001]
        assert await _found(store, "u2", "sentinel") == [2]
