"""LangChain integration: a ``BaseChatMessageHistory`` over the store (extra ``langchain``).

    from langchain_core.runnables.history import RunnableWithMessageHistory
    from chathistory.integrations.langchain import ChatHistoryMessageHistory

    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: ChatHistoryMessageHistory(store, user_id, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )

A session id is any non-empty string LangChain passes. A UUID names the conversation itself;
any other string names the conversation ``session_conversation_id(session_id)``: a UUID derived
from it (``uuid5`` in :data:`SESSION_NAMESPACE`), so the same string always finds the same
conversation of the user. The conversation is created by the first message added to it (an
unknown one reads as empty). An empty session id, or one that is neither a string nor a UUID,
is a :class:`ValueError` naming it.

Messages convert through LangChain's own OpenAI converters, so Human/AI/System/Tool messages and
AI tool calls map to the store's OpenAI-format rows and back. A LangChain message ``id`` that is a
UUID becomes the stored message id (so re-adding it is an idempotent replay); stored messages come
back with their UUID as ``id``.

The async methods run on the caller's event loop. The sync ones (``messages``,
``add_messages``, ``clear``), which LangChain calls from plain threads, hand the work to the event
loop the store lives on: the loop running when the history was created, or the background loop of
:func:`open_store_in_background` for programs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    convert_to_messages,
    convert_to_openai_messages,
)

from chathistory.errors import ConversationNotFoundError
from chathistory.schemas import MessageRead
from chathistory.store import ChatHistory

T = TypeVar("T")

SESSION_NAMESPACE: Final = uuid.UUID("6f0d3c52-8f0e-5b1a-9c4e-2a7d1e5b3c90")
"""The namespace of the conversation ids derived from session ids (:func:`uuid.uuid5`)."""


def session_conversation_id(session_id: uuid.UUID | str) -> uuid.UUID:
    """The conversation a LangChain session id names: a UUID (or its text) is that
    conversation; any other non-empty string the UUID derived from it, the same every time."""
    if isinstance(session_id, uuid.UUID):
        return session_id
    if not isinstance(session_id, str) or not session_id.strip():
        raise ValueError(
            f"session id {session_id!r} cannot name a conversation: give a non-empty string "
            "or a UUID"
        )
    try:
        return uuid.UUID(session_id)
    except ValueError:
        return uuid.uuid5(SESSION_NAMESPACE, session_id)


class ChatHistoryMessageHistory(BaseChatMessageHistory):
    """The messages of one conversation of one user, as LangChain sees them."""

    def __init__(
        self,
        store: ChatHistory,
        user_id: str,
        conversation_id: uuid.UUID | str,
        *,
        limit: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.store = store
        self.user_id = user_id
        self.conversation_id = session_conversation_id(conversation_id)
        self.limit = limit
        self._loop = loop or _running_loop()

    # -- async -----------------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        try:
            stored = await self.store.get_chat_history(
                self.user_id, self.conversation_id, limit=self.limit
            )
        except ConversationNotFoundError:
            return []  # a session not used yet
        return [to_langchain(message) for message in stored]

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if not messages:
            return
        batch = [from_langchain(m) for m in messages]
        try:
            await self.store.add_messages(self.user_id, self.conversation_id, batch)
        except ConversationNotFoundError:
            # The session's first messages: its conversation starts here.
            await self.store.get_or_create_conversation(self.user_id, self.conversation_id)
            await self.store.add_messages(self.user_id, self.conversation_id, batch)

    async def aclear(self) -> None:
        with contextlib.suppress(ConversationNotFoundError):  # a session not used yet
            await self.store.clear_conversation(self.user_id, self.conversation_id)

    # -- sync ------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return self._run(self.aget_messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._run(self.aadd_messages(messages))

    def clear(self) -> None:
        self._run(self.aclear())

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        if _running_loop() is not None:
            work.close()
            raise RuntimeError(
                "a sync method of ChatHistoryMessageHistory was called inside a running event "
                "loop: use aget_messages / aadd_messages / aclear there"
            )
        if self._loop is None or not self._loop.is_running():
            work.close()
            raise RuntimeError(
                "the store's event loop is not running: create the history inside the loop the "
                "store was opened on, or open the store with open_store_in_background()"
            )
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()


def from_langchain(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as the store's OpenAI-format message dict."""
    (converted,) = convert_to_openai_messages([message])
    out: dict[str, Any] = dict(converted)
    if isinstance(message, AIMessage) and message.tool_calls and out.get("content") == "":
        out["content"] = None  # what OpenAI itself sends for a tool-calling turn
    if isinstance(out.get("content"), list):
        out["content"] = [
            {"type": "text", "text": part} if isinstance(part, str) else part
            for part in out["content"]
        ]
    if message.id:
        with contextlib.suppress(ValueError):  # not a UUID: the store assigns one
            out["id"] = uuid.UUID(message.id)
    return out


def to_langchain(message: MessageRead) -> BaseMessage:
    """A stored message as the LangChain message it came from."""
    openai = message.to_openai()
    if openai["role"] == "assistant" and openai["content"] is None:
        openai["content"] = ""
    (converted,) = convert_to_messages([dict(openai)])  # a TypedDict is no dict[str, Any]
    converted.id = str(message.id)
    return converted


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class BackgroundStore:
    """A store living on an event loop in a daemon thread, for synchronous programs."""

    def __init__(self, database: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        opening = ChatHistory.open(database, **options)
        self.store: ChatHistory = asyncio.run_coroutine_threadsafe(
            _awaited(opening), self.loop
        ).result()

    def history(
        self, user_id: str, conversation_id: uuid.UUID | str, *, limit: int | None = None
    ) -> ChatHistoryMessageHistory:
        return ChatHistoryMessageHistory(
            self.store, user_id, conversation_id, limit=limit, loop=self.loop
        )

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a store coroutine on the background loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def open_store_in_background(database: str, **options: Any) -> BackgroundStore:
    """Open a store for synchronous code (its own event loop runs in a daemon thread)."""
    return BackgroundStore(database, **options)


async def _awaited(opening: Any) -> ChatHistory:
    store: ChatHistory = await opening
    return store
