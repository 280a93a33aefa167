"""Concurrent writers: nothing lost, nothing duplicated, seq gapless; cursors stay stable."""

from __future__ import annotations

import asyncio
import uuid

from chathistory import ChatHistory
from chathistory.models import uuid7

WRITERS = 20
APPENDS = 50


async def _assert_gapless(
    store: ChatHistory, user: str, conversation_id: uuid.UUID, n: int
) -> None:
    history = await store.get_chat_history(user, conversation_id)
    assert [m.seq for m in history] == list(range(1, n + 1))
    assert len({m.id for m in history}) == n
    assert (await store.get_conversation(user, conversation_id)).message_count == n


async def test_concurrent_appends_to_one_conversation(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)

    async def writer(w: int) -> list[int]:
        seqs = []
        for n in range(APPENDS):
            message = await store.add_message(user, conv.id, "user", f"writer {w} message {n}")
            seqs.append(message.seq)
        return seqs

    results = await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    all_seqs = sorted(seq for seqs in results for seq in seqs)
    assert all_seqs == list(range(1, WRITERS * APPENDS + 1))
    for seqs in results:  # each writer's own messages are in the order it sent them
        assert seqs == sorted(seqs)
    await _assert_gapless(store, user, conv.id, WRITERS * APPENDS)
    history = await store.get_chat_history(user, conv.id)
    contents = {m.content for m in history}
    assert contents == {f"writer {w} message {n}" for w in range(WRITERS) for n in range(APPENDS)}


async def test_concurrent_retries_never_duplicate(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    plan = [[(uuid7(), f"w{w} n{n}") for n in range(APPENDS)] for w in range(WRITERS)]

    async def writer(messages: list[tuple[uuid.UUID, str]]) -> list[tuple[uuid.UUID, int]]:
        out = []
        for message_id, content in messages:
            stored = await store.add_message(user, conv.id, "user", content, id=message_id)
            out.append((stored.id, stored.seq))
        return out

    # Every writer runs twice at once: each append is retried while the first try is in flight.
    results = await asyncio.gather(*(writer(messages) for messages in plan for _ in range(2)))
    await _assert_gapless(store, user, conv.id, WRITERS * APPENDS)
    history = {m.id: m for m in await store.get_chat_history(user, conv.id)}
    assert set(history) == {message_id for messages in plan for message_id, _ in messages}
    for answers in results:  # both tries of an append saw the one stored row
        for message_id, seq in answers:
            assert history[message_id].seq == seq


async def test_concurrent_batches_are_atomic(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)

    async def writer(w: int) -> None:
        for n in range(10):
            await store.add_messages(
                user,
                conv.id,
                [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": f"c-{w}-{n}",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": f"c-{w}-{n}", "content": "ok"},
                ],
            )

    await asyncio.gather(*(writer(w) for w in range(8)))
    history = await store.get_chat_history(user, conv.id)
    await _assert_gapless(store, user, conv.id, 160)
    for first, second in zip(history[::2], history[1::2], strict=True):
        assert first.tool_calls is not None
        assert second.tool_call_id == first.tool_calls[0]["id"]  # each pair stays adjacent


async def test_message_cursor_walk_while_others_append(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    initial = await store.add_messages(
        user, conv.id, [{"role": "user", "content": f"start {n}"} for n in range(60)]
    )
    done = asyncio.Event()

    async def appender(w: int) -> None:
        n = 0
        while not done.is_set():
            await store.add_message(user, conv.id, "assistant", f"late {w} {n}")
            n += 1

    async def walk(order: str) -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = await store.list_messages(user, conv.id, limit=7, order=order, cursor=cursor)  # type: ignore[arg-type]
            seen += [m.id for m in page.data]
            cursor = page.next_cursor
            await asyncio.sleep(0)  # let the appenders interleave between pages
            if not page.has_more or len(seen) > 400:
                return seen

    appenders = [asyncio.create_task(appender(w)) for w in range(4)]
    try:
        ascending, descending = await asyncio.gather(walk("asc"), walk("desc"))
    finally:
        done.set()
        await asyncio.gather(*appenders)
    for seen in (ascending, descending):
        assert len(seen) == len(set(seen)), "an item came twice"
        assert {m.id for m in initial} <= set(seen), "an item that existed at the start was skipped"


async def test_conversation_cursor_walk_while_others_create(store: ChatHistory, user: str) -> None:
    initial = [await store.create_conversation(user, title=f"c{n}") for n in range(30)]
    done = asyncio.Event()

    async def creator() -> None:
        while not done.is_set():
            await store.create_conversation(user, title="late")

    async def walk() -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = await store.list_conversations(user, limit=4, cursor=cursor)
            seen += [c.id for c in page.data]
            cursor = page.next_cursor
            await asyncio.sleep(0)
            if not page.has_more:
                return seen

    creators = [asyncio.create_task(creator()) for _ in range(3)]
    try:
        seen = await walk()
    finally:
        done.set()
        await asyncio.gather(*creators)
    assert len(seen) == len(set(seen))
    assert {c.id for c in initial} <= set(seen)


async def test_many_users_concurrently_stay_isolated(store: ChatHistory) -> None:
    users = [f"iso-{uuid.uuid4()}" for _ in range(10)]

    async def session(user: str) -> None:
        conv = await store.get_or_create_conversation(user)
        for n in range(10):
            await store.add_message(user, conv.id, "user", f"{user} {n}")

    await asyncio.gather(*(session(user) for user in users))
    for user in users:
        page = await store.list_conversations(user)
        assert len(page.data) == 1
        history = await store.get_chat_history(user, page.data[0].id)
        assert [m.content for m in history] == [f"{user} {n}" for n in range(10)]
