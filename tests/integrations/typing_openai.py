"""Checked by mypy, never run: what the library hands out in OpenAI's chat format is the
``openai`` SDK's ``ChatCompletionMessageParam`` without a cast (SPEC section 13).

``mypy`` (as configured in pyproject.toml) type-checks this file with the package; a change
that makes ``to_openai()`` or a context window's ``messages`` incompatible with the SDK fails
the lint step.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from chathistory import ChatHistory, MessageRead
from chathistory.schemas import ContextWindow
from chathistory.schemas.openai import ChatMessage


def send(messages: Iterable[ChatCompletionMessageParam]) -> int:
    return sum(1 for _ in messages)


def send_list(messages: list[ChatCompletionMessageParam]) -> int:
    return len(messages)


def one_message(store_message: MessageRead) -> None:
    param: ChatCompletionMessageParam = store_message.to_openai()
    send_list([store_message.to_openai()])
    send([param])


def a_window(window: ContextWindow) -> None:
    send(window.messages)
    send_list([*window.messages])
    first: ChatMessage = window.messages[0]
    if first["role"] == "assistant":  # narrowed by role, as the SDK's union is
        send_list([first])


async def a_whole_turn(store: ChatHistory, client: AsyncOpenAI, conversation: uuid.UUID) -> None:
    page = await store.list_messages("user-1", conversation)
    send_list([m.to_openai() for m in page.data])
    window = await store.get_context_window("user-1", conversation, max_tokens=4000)
    await client.chat.completions.create(model="gpt-4o", messages=window.messages)
    await client.chat.completions.create(
        model="gpt-4o", messages=[m.to_openai() for m in page.data]
    )
