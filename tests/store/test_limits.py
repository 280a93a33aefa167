"""Bounded work per call: what a request costs follows its own input and the documented limits,
never the length of a history (issue 9). Work is counted in statements, rows and bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from chathistory import ChatHistory, ValidationError
from chathistory.db import create_engine
from chathistory.models import open_tool_calls
from chathistory.schemas import MAX_TOOL_CALLS
from tests.fixtures.http import asgi_client


@pytest.fixture
async def small(backend_url: str) -> AsyncIterator[ChatHistory]:
    """A store with small limits: 50 messages a batch, 64 KiB a response."""
    store = ChatHistory(
        create_engine(backend_url, pool_size=2),
        owns_engine=True,
        max_batch_messages=50,
        max_response_bytes=64 * 1024,
    )
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def statements(store: ChatHistory) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


async def test_tool_results_cost_statements_per_batch_not_per_history(
    store: ChatHistory, user: str
) -> None:
    """A long history full of tool calls, then a batch of results with unknown ids: every bad
    item is reported at once, by a constant number of statements, and nothing is stored."""
    conv = await store.create_conversation(user)
    for turn in range(4):  # 2,000 assistant messages, 4,000 calls, half of them answered
        batch: list[dict[str, Any]] = []
        for n in range(250):
            ids = [f"t{turn}-{n}-a", f"t{turn}-{n}-b"]
            batch.append(
                {"role": "assistant", "content": None, "tool_calls": [call(i) for i in ids]}
            )
            batch.append({"role": "tool", "tool_call_id": ids[0], "content": "ok"})
        await store.add_messages(user, conv.id, batch)
    before = (await store.get_conversation(user, conv.id)).message_count

    unknown = [{"role": "tool", "tool_call_id": f"nope-{n}", "content": ""} for n in range(500)]
    with statements(store) as seen, pytest.raises(ValidationError) as info:
        await store.add_messages(user, conv.id, unknown)
    assert [e.loc for e in info.value.errors] == [(n, "tool_call_id") for n in range(500)]
    assert len(seen) <= 4, seen  # lock, the open-call lookup (one statement), rollback
    assert (await store.get_conversation(user, conv.id)).message_count == before

    # The answered half is closed, the other half open: one statement answers 100 of them.
    answers = [
        {"role": "tool", "tool_call_id": f"t{n % 4}-{n}-b", "content": "late"} for n in range(100)
    ]
    answers.append({"role": "tool", "tool_call_id": "t0-0-a", "content": "answered twice"})
    with pytest.raises(ValidationError) as info:
        await store.add_messages(user, conv.id, answers)
    assert [e.loc for e in info.value.errors] == [(100, "tool_call_id")]
    with statements(store) as seen:
        await store.add_messages(user, conv.id, answers[:100])
    # lock, the open-call lookup, the insert, the new current message, the search rows
    assert len(seen) <= 5, seen
    with pytest.raises(ValidationError):  # answered now
        await store.add_message(user, conv.id, "tool", "again", tool_call_id="t1-1-b")


async def test_open_tool_calls_follow_the_rules(store: ChatHistory, user: str) -> None:
    """Reuse opens an id again, answers within a batch close it, and the table holds exactly
    the calls still open (deleting the conversation takes them along)."""
    conv = await store.create_conversation(user)
    await store.add_messages(
        user,
        conv.id,
        [
            {"role": "assistant", "content": None, "tool_calls": [call("call_0"), call("x")]},
            {"role": "tool", "tool_call_id": "call_0", "content": "r"},
            {"role": "assistant", "content": None, "tool_calls": [call("call_0")]},
        ],
    )

    async def still_open() -> dict[str, int]:
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                select(open_tool_calls.c.call_id, open_tool_calls.c.seq).where(
                    open_tool_calls.c.user_id == user,
                    open_tool_calls.c.conversation_id == conv.id,
                )
            )
            return {row.call_id: row.seq for row in rows}

    assert await still_open() == {"x": 1, "call_0": 3}
    await store.add_message(user, conv.id, "tool", "r2", tool_call_id="call_0")
    assert await still_open() == {"x": 1}
    await store.clear_conversation(user, conv.id)
    assert await still_open() == {}
    with pytest.raises(ValidationError):
        await store.add_message(user, conv.id, "tool", "r", tool_call_id="x")
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call("y")])
    assert await still_open() == {"y": 1}
    await store.delete_conversation(user, conv.id)
    assert await still_open() == {}


async def test_batch_length_is_capped(small: ChatHistory, user: str) -> None:
    conv = await small.create_conversation(user)
    batch = [{"role": "user", "content": ""} for _ in range(51)]
    with pytest.raises(ValidationError) as info:
        await small.add_messages(user, conv.id, batch)
    assert info.value.errors[0].loc == ("messages",)
    assert "at most 50" in info.value.errors[0].msg
    assert (await small.get_conversation(user, conv.id)).message_count == 0
    await small.add_messages(user, conv.id, batch[:50])


async def test_message_pages_stop_at_the_byte_budget(small: ChatHistory, user: str) -> None:
    """Pages of large messages stop at max_response_bytes (at least one message each), and a
    cursor walk still returns every message exactly once."""
    conv = await small.create_conversation(user)
    big = "x" * 20_000
    await small.add_messages(user, conv.id, [{"role": "user", "content": big}] * 10)
    page = await small.list_messages(user, conv.id, limit=100)
    assert len(page.data) == 3 and page.has_more  # 3 x 20 KB in 64 KiB
    seen = [m.seq for m in page.data]
    while page.has_more:
        page = await small.list_messages(user, conv.id, limit=100, cursor=page.next_cursor)
        assert sum(len(str(m.content)) for m in page.data) <= 64 * 1024
        seen += [m.seq for m in page.data]
    assert seen == list(range(1, 11))
    newest = await small.list_messages(user, conv.id, order="desc", limit=100)
    assert [m.seq for m in newest.data] == [10, 9, 8] and newest.has_more
    assert [m.seq for m in await small.get_chat_history(user, conv.id, limit=5)] == [6, 7, 8, 9, 10]
    # One message larger than the whole budget still comes back, alone.
    await small.add_message(user, conv.id, "user", "y" * 90_000)
    alone = await small.list_messages(user, conv.id, order="desc", limit=100)
    assert [m.seq for m in alone.data] == [11] and alone.has_more


async def test_context_window_is_bounded_in_bytes(small: ChatHistory, user: str) -> None:
    """Whitespace costs few tokens: a huge token budget over large messages stops at the
    byte budget."""
    conv = await small.create_conversation(user)
    await small.add_message(user, conv.id, "system", "be brief")
    spaces = " " * 10_000
    for _ in range(4):
        await small.add_messages(user, conv.id, [{"role": "user", "content": spaces}] * 25)
    window = await small.get_context_window(user, conv.id, max_tokens=10_000_000)
    assert window.truncated
    sizes = [len(m["content"]) for m in window.messages]
    assert sum(sizes) <= 64 * 1024
    assert len(window.messages) == 1 + 6  # the system message, then 6 x 10 KB
    assert window.messages[0]["role"] == "system"

    # System messages alone over the byte budget: a clear error, not an unbounded read.
    flooded = await small.create_conversation(user)
    await small.add_messages(user, flooded.id, [{"role": "system", "content": spaces}] * 10)
    with pytest.raises(ValidationError) as info:
        await small.get_context_window(user, flooded.id, max_tokens=10_000_000)
    assert "bytes" in str(info.value)


async def test_http_limits_come_from_the_settings(backend_url: str, user: str) -> None:
    """CHATHISTORY_MAX_BATCH_MESSAGES and CHATHISTORY_MAX_RESPONSE_BYTES reach the service: a
    batch over the cap is a 422 naming `messages`, and a page stops at the byte budget."""
    import time

    import jwt

    from chathistory.config import Settings
    from chathistory.http import create_app

    secret = "limits-secret-0123456789-abcdefghijklmnop"
    settings = Settings(
        database_url=backend_url,
        jwt_secret=secret,
        migrate_on_start=False,
        max_batch_messages=5,
        max_response_bytes=64 * 1024,
    )
    app = create_app(settings)
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, secret, "HS256")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        app.router.lifespan_context(app),
        asgi_client(app, headers=headers) as http,
    ):
        conv = (await http.post(f"/api/{user}/conversations", json={})).json()["id"]
        path = f"/api/{user}/conversations/{conv}/messages"
        over = await http.post(path, json=[{"role": "user", "content": "x"}] * 6)
        assert over.status_code == 422, over.text
        assert over.json()["errors"][0]["loc"] == ["messages"]
        big = [{"role": "user", "content": "z" * 30_000}] * 5
        assert (await http.post(path, json=big)).status_code == 201
        page = (await http.get(path, params={"limit": 100})).json()
        assert len(page["data"]) == 2 and page["has_more"]
        window = (await http.get(f"{path[: -len('/messages')]}/context?max_tokens=1000000")).json()
        assert len(window["messages"]) == 2 and window["truncated"]


async def test_an_append_reads_no_history(store: ChatHistory, user: str) -> None:
    """A plain append (no ids, no tool results) reads nothing of the history, titling
    included: the first user message ever titles an untitled conversation, later ones never."""
    conv = await store.create_conversation(user)
    await store.add_messages(
        user, conv.id, [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]
    )
    with statements(store) as seen:
        await store.add_message(user, conv.id, "user", "  Plan   a trip ")
        await store.update_conversation(user, conv.id, title=None)
        await store.add_message(user, conv.id, "user", "second")
    assert not [s for s in seen if "FROM messages" in s], seen
    assert (await store.get_conversation(user, conv.id)).title is None  # cleared stays cleared
    titled = await store.create_conversation(user)
    await store.add_message(
        user, titled.id, "user", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    )
    await store.add_message(user, titled.id, "user", "text after an image")
    assert (await store.get_conversation(user, titled.id)).title is None  # the first had no text
    await store.clear_conversation(user, titled.id)
    await store.add_message(user, titled.id, "user", "after clearing")
    assert (await store.get_conversation(user, titled.id)).title == "after clearing"


async def test_tool_calls_per_message_are_capped(store: ChatHistory, user: str) -> None:
    """A message holds at most MAX_TOOL_CALLS tool calls: one more is refused before any call
    is validated (one error, however bad every call is), in an append and a streaming update."""
    conv = await store.create_conversation(user)
    most = [call(f"c{n}") for n in range(MAX_TOOL_CALLS)]
    stored = await store.add_message(user, conv.id, "assistant", None, tool_calls=most)
    assert len(stored.tool_calls or ()) == MAX_TOOL_CALLS
    flood: list[dict[str, Any]] = [{} for _ in range(24_000)]
    with pytest.raises(ValidationError) as info:
        await store.add_message(user, conv.id, "assistant", None, tool_calls=flood)
    assert [(e.loc, e.type) for e in info.value.errors] == [(("tool_calls",), "too_long")]
    assert f"at most {MAX_TOOL_CALLS}" in info.value.errors[0].msg
    streaming = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "", "status": "in_progress"}]
    )
    with pytest.raises(ValidationError) as info:
        await store.update_message(user, conv.id, streaming[0].id, tool_calls=flood)
    assert [(e.loc, e.type) for e in info.value.errors] == [(("tool_calls",), "too_long")]
    assert (await store.get_conversation(user, conv.id)).message_count == 2


async def test_tool_calls_per_batch_are_capped(small: ChatHistory, user: str) -> None:
    """A batch holds at most max_batch_messages tool calls in all, as many as messages."""
    conv = await small.create_conversation(user)
    turns = [
        {"role": "assistant", "content": None, "tool_calls": [call(f"c{n}-{k}") for k in range(9)]}
        for n in range(6)
    ]
    with pytest.raises(ValidationError) as info:
        await small.add_messages(user, conv.id, turns)
    assert [e.loc for e in info.value.errors] == [("messages",)]
    assert "54 tool calls" in info.value.errors[0].msg
    assert (await small.get_conversation(user, conv.id)).message_count == 0
    await small.add_messages(user, conv.id, turns[:5])


async def test_http_names_the_tool_calls_over_the_cap(backend_url: str, user: str) -> None:
    import time

    import jwt

    from chathistory.config import Settings
    from chathistory.http import create_app

    secret = "limits-secret-0123456789-abcdefghijklmnop"
    app = create_app(Settings(database_url=backend_url, jwt_secret=secret, migrate_on_start=False))
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, secret, "HS256")
    async with (
        app.router.lifespan_context(app),
        asgi_client(
            app,
            headers={"Authorization": f"Bearer {token}"},
        ) as http,
    ):
        conv = (await http.post(f"/api/{user}/conversations", json={})).json()["id"]
        flood = [call(f"c{n}") for n in range(MAX_TOOL_CALLS + 1)]
        over = await http.post(
            f"/api/{user}/conversations/{conv}/messages",
            json={"role": "assistant", "content": None, "tool_calls": flood},
        )
        assert over.status_code == 422, over.text
        assert [e["loc"] for e in over.json()["errors"]] == [["tool_calls"]]
        schema = (await http.get("/openapi.json")).json()["components"]["schemas"]
        assert schema["MessageCreate"]["properties"]["tool_calls"]["anyOf"][0]["maxItems"] == (
            MAX_TOOL_CALLS
        )
