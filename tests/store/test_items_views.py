"""One history, two views (SPEC 15), checked against a model in memory: random mixes of
messages appended the chat way and items added in turns; the chat view must be valid OpenAI
chat and say what the model says, the item view must hold every item as given, in order."""

from __future__ import annotations

import uuid
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam

from chathistory import ChatHistory

CHAT = pydantic.TypeAdapter(list[ChatCompletionMessageParam])

# A step: ("chat_user",), ("chat_tools", calls), ("item_user", short), ("item_turn", reasoning,
# text, calls, text_after): one model response as items, its outputs in the same batch.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("chat_user")),
        st.tuples(st.just("chat_tools"), st.integers(0, 2)),
        st.tuples(st.just("item_user"), st.booleans()),
        st.tuples(
            st.just("item_turn"), st.booleans(), st.booleans(), st.integers(0, 3), st.booleans()
        ),
    ),
    min_size=1,
    max_size=12,
)


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize("backend_url", ["sqlite", "postgres"], indirect=True)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
async def test_the_two_views_agree_with_a_model(store: ChatHistory, steps: Any) -> None:
    user = f"prop-{uuid.uuid4()}"
    conv = (await store.create_conversation(user)).id
    chat: list[tuple[str, Any, list[str]]] = []  # (role, content, call ids) expected
    given_items: list[dict[str, Any] | str] = []  # an item as given, or a derived item's type
    counter = 0
    for step in steps:
        counter += 1
        kind = step[0]
        if kind == "chat_user":
            await store.add_message(user, conv, "user", f"u{counter}")
            chat.append(("user", f"u{counter}", []))
            given_items.append("message")
        elif kind == "chat_tools":
            ids = [f"k{counter}_{i}" for i in range(step[1])]
            batch: list[dict[str, Any]] = [
                {"role": "assistant", "content": f"a{counter}"}
                if not ids
                else {"role": "assistant", "content": None, "tool_calls": [_call(i) for i in ids]}
            ]
            batch += [{"role": "tool", "tool_call_id": i, "content": f"r{i}"} for i in ids]
            await store.add_messages(user, conv, batch)
            chat.append(("assistant", f"a{counter}" if not ids else None, ids))
            chat += [("tool", f"r{i}", []) for i in ids]
            given_items += ["function_call"] * len(ids) or ["message"]
            given_items += ["function_call_output"] * len(ids)
        elif kind == "item_user":
            item: dict[str, Any] = (
                {"role": "user", "content": f"u{counter}"}
                if step[1]
                else {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": f"u{counter}"}],
                }
            )
            await store.add_items(user, conv, [item])
            chat.append(("user", f"u{counter}", []))
            given_items.append(item)
        else:
            _, reasoning, text, calls, text_after = step
            ids = [f"c{counter}_{i}" for i in range(calls)]
            turn: list[dict[str, Any]] = []
            if reasoning:
                turn.append({"type": "reasoning", "id": f"rs_{counter}", "summary": []})
            message = {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": f"t{counter}", "annotations": []}],
            }
            if text and not text_after:
                turn.append(message)
            turn += [
                {"type": "function_call", "call_id": i, "name": "f", "arguments": "{}"} for i in ids
            ]
            if text and text_after:
                turn.append(message)
            turn += [{"type": "function_call_output", "call_id": i, "output": f"o{i}"} for i in ids]
            if not turn:
                continue
            await store.add_items(user, conv, turn)
            if text or ids:
                chat.append(("assistant", f"t{counter}" if text else None, ids))
            chat += [("tool", f"o{i}", []) for i in ids]
            given_items += turn

    history = await store.get_chat_history(user, conv)
    assert [(m.role, m.content, [c["id"] for c in m.tool_calls or ()]) for m in history] == chat
    window = await store.get_context_window(user, conv, 100_000)
    CHAT.validate_python(window.messages)
    assert len(window.messages) == len(chat)
    newest = await store.get_chat_history(user, conv, limit=2)
    assert [m.id for m in newest] == [m.id for m in history[-2:]]

    items: list[dict[str, Any]] = []
    page = await store.list_items(user, conv, limit=3)
    items += page.data
    while page.has_more:
        page = await store.list_items(user, conv, limit=3, after=page.last_id)
        items += page.data
    backwards: list[dict[str, Any]] = []
    page = await store.list_items(user, conv, limit=4, order="desc")
    backwards += page.data
    while page.has_more:
        page = await store.list_items(user, conv, limit=4, order="desc", after=page.last_id)
        backwards += page.data
    assert backwards == items[::-1]
    assert len({item["id"] for item in items}) == len(items)
    assert len(items) == len(given_items)
    for got, expected in zip(items, given_items, strict=True):
        if isinstance(expected, str):
            assert got["type"] == expected
        elif "id" in expected:
            assert got == expected
        else:
            assert got["id"].startswith("item_")
            assert {k: v for k, v in got.items() if k != "id"} == expected
