"""Search's storage (issue 24): a store with search off writes no search rows on any path and
answers a search with a typed error (library, HTTP, MCP), never empty hits; the index can be
filled in when search is turned back on. On every backend (SQLite, PostgreSQL, PgBouncer,
Citus); the bench's storage scenario on PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from chathistory import ChatHistory
from chathistory.config import Settings
from chathistory.errors import SearchDisabledError
from chathistory.models import message_search
from chathistory.store import search
from tests.fixtures.http import asgi_client


async def _search_rows(store: ChatHistory, user: str) -> int:
    async with store.engine.connect() as conn:
        counted = select(func.count()).where(message_search.c.user_id == user)
        return int((await conn.execute(counted)).scalar_one())


async def _write_every_way(store: ChatHistory, user: str) -> uuid.UUID:
    """Messages with text through each path that indexes: the one-statement append, a batch
    with a tool call and its result (the general path), a streaming update, an import."""
    conv = await store.create_conversation(user, title="Trip")
    await store.add_message(user, conv.id, "user", "Lisbon harbor tram")
    await store.add_messages(
        user,
        conv.id,
        [
            {"role": "assistant", "content": "Looking up the harbor", "tool_calls": [_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "harbor ferries every hour"},
        ],
    )
    streamed = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "The harbor", "status": "in_progress"}]
    )
    await store.update_message(
        user, conv.id, streamed[0].id, append_text=" opens at nine", status="completed"
    )
    at = "2026-12-01T10:00:00Z"
    await store.import_conversation(
        {"id": str(uuid.uuid4()), "user_id": user, "created_at": at, "updated_at": at},
        [{"id": str(uuid.uuid4()), "seq": 1, "created_at": at, "role": "user", "content": _OLD}],
    )
    return conv.id


_OLD = "harbor from an export"
_CALL = {"id": "call_1", "type": "function", "function": {"name": "find", "arguments": "{}"}}


async def test_search_off_writes_no_search_rows_and_refuses_to_search(
    store: ChatHistory, user: str
) -> None:
    unindexed = ChatHistory(store.engine, search=False)
    await _write_every_way(unindexed, user)
    assert await _search_rows(store, user) == 0
    with pytest.raises(SearchDisabledError, match="search is turned off"):
        await unindexed.search_messages(user, "harbor")
    # The same rows through a store with search on: indexed on every path.
    other = f"{user}-on"
    await _write_every_way(store, other)
    assert await _search_rows(store, other) == 5
    page = await store.search_messages(other, "harbor")
    assert len(page.data) == 5


async def test_search_turned_on_later_fills_the_index_in(store: ChatHistory, user: str) -> None:
    unindexed = ChatHistory(store.engine, search=False)
    conv = await _write_every_way(unindexed, user)
    # Search on again: the messages written meanwhile are not found until filled in.
    assert (await store.search_messages(user, "harbor")).data == []
    assert await search.fill(store.engine, user_id=user, batch=2) == 5
    page = await store.search_messages(user, '"harbor opens"')
    assert [hit.message.content for hit in page.data] == ["The harbor opens at nine"]
    assert {hit.conversation.id for hit in (await store.search_messages(user, "harbor")).data} >= {
        conv
    }
    assert await search.fill(store.engine, user_id=user) == 0  # idempotent
    assert await _search_rows(store, user) == 5


async def test_a_message_updated_with_search_off_is_indexed_anew_by_fill(
    store: ChatHistory, user: str
) -> None:
    conv = await store.create_conversation(user)
    [begun] = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "Anchovy", "status": "in_progress"}]
    )
    unindexed = ChatHistory(store.engine, search=False)
    await unindexed.update_message(
        user, conv.id, begun.id, append_text=" and sardine", status="completed"
    )
    assert await _search_rows(store, user) == 0  # the old words are gone, not left stale
    assert await search.fill(store.engine, user_id=user) == 1
    [hit] = (await store.search_messages(user, "sardine")).data
    assert hit.message.content == "Anchovy and sardine"


async def test_search_off_over_http_is_a_409(store: ChatHistory, user: str) -> None:

    from chathistory.http import create_app
    from tests.support.api import bearer, problem, settings

    unindexed = ChatHistory(store.engine, search=False)
    app = create_app(settings(), store=unindexed)
    async with asgi_client(app) as http:
        conv = await unindexed.create_conversation(user)
        await unindexed.add_message(user, conv.id, "user", "Lisbon")
        answer = await http.get(f"/api/{user}/search", params={"q": "lisbon"}, headers=bearer(user))
        body = problem(answer, 409, "search_disabled")
        assert "search is turned off" in body["detail"]


async def test_search_off_over_mcp_is_a_tool_error(sqlite_store_url: str, user: str) -> None:
    from chathistory.http import create_app
    from tests.support.mcp import http_session, settings, token, tool_error

    async with ChatHistory.open(sqlite_store_url, migrate=False, search=False) as unindexed:
        app = create_app(settings(), store=unindexed)
        async with http_session(app, token(user)) as session:
            message = await tool_error(session, "search_messages", {"query": "harbor"})
            assert "search is turned off" in message


def test_the_setting_reaches_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATHISTORY_SEARCH", "false")
    assert Settings().open_options()["search"] is False
    monkeypatch.delenv("CHATHISTORY_SEARCH")
    assert Settings().open_options()["search"] is True


async def test_bench_storage_scenario_reports_sizes_and_tails(postgres_store_url: str) -> None:
    """``chathistory bench --storage`` at a tiny size: both stores' bytes per message and
    parts, each contender's append figures at 1 and 8 writers; its database is dropped."""
    import asyncpg

    from chathistory.db import parse_database_url
    from chathistory_bench.storage import LANGCHAIN, SEARCH_OFF, StorageSizes, run_storage

    sizes = StorageSizes(messages=120, per_conversation=30, users=2, appends=16, rounds=1)
    report = await run_storage(postgres_store_url, sizes, log=lambda _: None)
    storage = report.setup["storage"]
    assert storage["messages"] >= 120
    assert (
        storage["chathistory_search_off_bytes_per_message"]
        < storage["chathistory_bytes_per_message"]
    )
    parts = {p["part"] for p in storage["parts"]}
    assert {"message_search", "ix_message_search_user_id_words", "messages"} <= parts
    assert {"langchain_message_store", "idx_langchain_message_store_session_id"} <= parts
    contenders = {f.contender for f in report.figures}
    assert {LANGCHAIN, SEARCH_OFF} < contenders and len(contenders) == 4
    assert len(report.figures) == 8 and all(f.runs > 0 for f in report.figures)
    conn = await asyncpg.connect(parse_database_url(postgres_store_url).connect_args["dsn"])
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'chbench_storage_%'"
        )
    finally:
        await conn.close()
    assert left == 0
