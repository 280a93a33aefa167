"""The LangChain integration: every message type round-trips, sync and async."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from chathistory import ChatHistory
from chathistory.integrations.langchain import (
    SESSION_NAMESPACE,
    ChatHistoryMessageHistory,
    open_store_in_background,
    session_conversation_id,
)

CONVERSATION: list[BaseMessage] = [
    SystemMessage("You are terse."),
    HumanMessage("Weather in Paris and Rome? 🇫🇷"),
    HumanMessage(
        [
            {"type": "text", "text": "and this"},
            {"type": "image_url", "image_url": {"url": "data:,x"}},
        ]
    ),
    AIMessage(
        "",
        tool_calls=[
            {"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"},
            {
                "name": "weather",
                "args": {"city": "Rome", "n": [1, 2]},
                "id": "call_2",
                "type": "tool_call",
            },
        ],
    ),
    ToolMessage("sunny", tool_call_id="call_1"),
    ToolMessage("rain", tool_call_id="call_2"),
    AIMessage("Paris: sunny. Rome: rain."),
]


def _essence(message: BaseMessage) -> tuple[object, ...]:
    tool_calls = getattr(message, "tool_calls", None) or []
    return (
        message.type,
        message.content,
        [(c["name"], c["args"], c["id"]) for c in tool_calls],
        getattr(message, "tool_call_id", None),
    )


async def test_async_round_trip(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    history = ChatHistoryMessageHistory(store, user, conv.id)
    await history.aadd_messages(CONVERSATION)
    back = await history.aget_messages()
    assert [_essence(m) for m in back] == [_essence(m) for m in CONVERSATION]
    stored = await store.get_chat_history(user, conv.id)
    assert stored[3].content is None  # a tool-calling turn is stored as OpenAI sends it
    assert stored[3].tool_calls[0]["function"]["arguments"] == '{"city": "Paris"}'  # type: ignore[index]
    assert [m.id for m in back] == [str(m.id) for m in stored]
    # Re-adding a message read back (it carries its stored id) is an idempotent replay.
    await history.aadd_messages([back[-1]])
    assert len(await history.aget_messages()) == len(CONVERSATION)
    await history.aclear()
    assert await history.aget_messages() == []
    assert (await store.get_conversation(user, conv.id)).message_count == 0


def test_sync_round_trip_on_a_background_loop(tmp_path: Path) -> None:
    background = open_store_in_background(f"sqlite:///{tmp_path / 'lc.db'}")
    try:
        conv = background.run(background.store.create_conversation("u"))
        history = background.history("u", conv.id)
        history.add_messages(CONVERSATION)
        assert [_essence(m) for m in history.messages] == [_essence(m) for m in CONVERSATION]
        history.add_user_message("one more")
        assert history.messages[-1].content == "one more"
        limited = background.history("u", conv.id, limit=2)
        assert [m.content for m in limited.messages] == ["Paris: sunny. Rome: rain.", "one more"]
        history.clear()
        assert history.messages == []
    finally:
        background.close()


async def test_sync_methods_from_a_worker_thread(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    history = ChatHistoryMessageHistory(store, user, conv.id)  # bound to this running loop
    seen: list[BaseMessage] = []

    def worker() -> None:
        history.add_messages([HumanMessage("from a thread")])
        seen.extend(history.messages)

    await asyncio.to_thread(worker)
    assert [m.content for m in seen] == ["from a thread"]
    with pytest.raises(RuntimeError, match="running event loop"):
        history.messages  # noqa: B018 - the sync API inside the loop would deadlock


async def test_runnable_with_message_history(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)

    def echo(inputs: dict[str, object]) -> AIMessage:
        history = inputs["history"]
        assert isinstance(history, list)
        return AIMessage(f"seen {len(history)} earlier, you said {inputs['question']}")

    chain = RunnableWithMessageHistory(
        RunnableLambda(echo),
        lambda session_id: ChatHistoryMessageHistory(store, user, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )
    config = {"configurable": {"session_id": str(conv.id)}}
    first = await chain.ainvoke({"question": "hi"}, config=config)  # type: ignore[arg-type]
    second = await chain.ainvoke({"question": "again"}, config=config)  # type: ignore[arg-type]
    assert first.content == "seen 0 earlier, you said hi"
    assert second.content == "seen 2 earlier, you said again"
    assert (await store.get_conversation(user, conv.id)).message_count == 4


async def test_any_session_string_finds_its_conversation(store: ChatHistory, user: str) -> None:
    """What LangChain users pass as a session id: any non-empty string. The same string always
    finds the same conversation, created by its first message; a UUID is the conversation."""

    def echo(inputs: dict[str, object]) -> AIMessage:
        history = inputs["history"]
        assert isinstance(history, list)
        return AIMessage(f"seen {len(history)}")

    chain = RunnableWithMessageHistory(
        RunnableLambda(echo),
        lambda session_id: ChatHistoryMessageHistory(store, user, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )
    config = {"configurable": {"session_id": "slack:C024BE91L/1712345678.000200"}}
    first = await chain.ainvoke({"question": "hi"}, config=config)  # type: ignore[arg-type]
    second = await chain.ainvoke({"question": "again"}, config=config)  # type: ignore[arg-type]
    assert (first.content, second.content) == ("seen 0", "seen 2")
    derived = session_conversation_id("slack:C024BE91L/1712345678.000200")
    assert derived == uuid.uuid5(SESSION_NAMESPACE, "slack:C024BE91L/1712345678.000200")
    assert (await store.get_conversation(user, derived)).message_count == 4

    unused = ChatHistoryMessageHistory(store, user, "never used")
    assert await unused.aget_messages() == []
    await unused.aclear()  # nothing to clear, no error
    conv = await store.create_conversation(user)
    assert ChatHistoryMessageHistory(store, user, str(conv.id)).conversation_id == conv.id
    assert session_conversation_id(conv.id) == conv.id
    for bad in ("", "   ", None, 42):
        with pytest.raises(ValueError, match="cannot name a conversation"):
            ChatHistoryMessageHistory(store, user, bad)  # type: ignore[arg-type]


def test_background_store_is_thread_safe(tmp_path: Path) -> None:
    background = open_store_in_background(f"sqlite:///{tmp_path / 'threads.db'}")
    try:
        conv = background.run(background.store.create_conversation("u"))
        history = background.history("u", conv.id)
        threads = [
            threading.Thread(target=history.add_user_message, args=(f"m{n}",)) for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(m.content for m in history.messages) == sorted(f"m{n}" for n in range(8))
        assert uuid.UUID(history.messages[0].id or "")
    finally:
        background.close()


async def test_history_follows_the_active_branch(store: ChatHistory, user: str) -> None:
    """SPEC 11: LangChain's history is the branch the user is on, and what it adds follows it."""
    conv = await store.create_conversation(user)
    history = ChatHistoryMessageHistory(store, user, conv.id)
    await history.aadd_messages([HumanMessage("Plan a trip"), AIMessage("Lisbon?")])
    question, answer = await store.get_chat_history(user, conv.id)
    await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "Porto?", "parent_id": question.id}]
    )
    assert [m.content for m in await history.aget_messages()] == ["Plan a trip", "Porto?"]
    await store.update_conversation(user, conv.id, current_message_id=answer.id)
    await history.aadd_messages([HumanMessage("Yes, Lisbon")])
    assert [m.content for m in await history.aget_messages()] == [
        "Plan a trip",
        "Lisbon?",
        "Yes, Lisbon",
    ]
