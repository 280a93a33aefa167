"""Items and chat messages, each as the other (SPEC 15's two views), with no database: items
built by the ``openai`` SDK's own types, chat forms validated by the store's own rules
(:class:`~chathistory.schemas.MessageCreate`)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from openai.types.responses import (
    ResponseCustomToolCall,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseInputItemParam,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_compaction_item import ResponseCompactionItem
from openai.types.responses.response_reasoning_item import Summary
from pydantic import TypeAdapter

from chathistory.errors import ValidationError
from chathistory.schemas import MessageCreate
from chathistory.schemas.items import chat_message, item_type, message_id_of, message_items

INPUT_ITEM = TypeAdapter(ResponseInputItemParam)


def chat(item: dict[str, Any]) -> dict[str, Any] | None:
    """The chat form of ``item``, checked to be a message the store takes."""
    message = chat_message(item)
    if message is not None:
        MessageCreate.model_validate(message)
    return message


def test_an_assistant_output_message_is_its_text() -> None:
    item = ResponseOutputMessage(
        id="msg_1",
        type="message",
        role="assistant",
        status="completed",
        content=[
            ResponseOutputText(type="output_text", text="Hello", annotations=[]),
            ResponseOutputText(type="output_text", text="there", annotations=[]),
        ],
    ).model_dump()
    assert chat(item) == {"role": "assistant", "content": "Hello\nthere"}


def test_a_refusal_part_is_the_assistants_refusal() -> None:
    item = ResponseOutputMessage(
        id="msg_2",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputRefusal(type="refusal", refusal="I can't help with that.")],
    ).model_dump()
    assert chat(item) == {
        "role": "assistant",
        "content": None,
        "refusal": "I can't help with that.",
    }


@pytest.mark.parametrize(
    ("item", "role"),
    [
        ({"role": "developer", "content": "Be brief."}, "system"),
        ({"role": "system", "content": "Be brief."}, "system"),
        ({"type": "message", "role": "user", "content": "Be brief."}, "user"),
    ],
)
def test_short_form_messages_and_the_developer_role(item: dict[str, Any], role: str) -> None:
    assert item_type(item) == "message"
    assert chat(item) == {"role": role, "content": "Be brief."}


def test_a_users_parts_become_chat_parts() -> None:
    item = {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
            {"type": "input_image", "file_id": "file_only", "detail": "auto"},  # no url: left out
            {"type": "input_file", "file_id": "file_1", "filename": "a.pdf"},
        ],
    }
    INPUT_ITEM.validate_python(item)
    assert chat(item) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.png", "detail": "low"},
            },
            {"type": "file", "file": {"file_id": "file_1", "filename": "a.pdf"}},
        ],
    }


def test_function_calls_and_outputs_are_tool_calls_and_tool_messages() -> None:
    call = ResponseFunctionToolCall(
        type="function_call",
        id="fc_1",
        call_id="call_1",
        name="weather",
        arguments='{"city":"Oslo"}',
        status="completed",
    ).model_dump()
    assert chat(call) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }
    output = {"type": "function_call_output", "call_id": "call_1", "output": "12 °C"}
    INPUT_ITEM.validate_python(output)
    assert chat(output) == {"role": "tool", "tool_call_id": "call_1", "content": "12 °C"}
    parts = output | {
        "output": [{"type": "input_text", "text": "12"}, {"type": "input_text", "text": "°C"}]
    }
    assert chat(parts) == {"role": "tool", "tool_call_id": "call_1", "content": "12\n°C"}


def test_custom_tool_calls_are_custom_chat_tool_calls() -> None:
    call = ResponseCustomToolCall(
        type="custom_tool_call", id="ctc_1", call_id="call_2", name="sql", input="SELECT 1"
    ).model_dump()
    assert chat(call) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}
        ],
    }


@pytest.mark.parametrize(
    "item",
    [
        ResponseReasoningItem(
            type="reasoning",
            id="rs_1",
            summary=[Summary(type="summary_text", text="thinking")],
            encrypted_content="gAAAAB...",
        ).model_dump(),
        ResponseFunctionWebSearch.model_validate(
            {
                "type": "web_search_call",
                "id": "ws_1",
                "status": "completed",
                "action": {"type": "search", "query": "weather"},
            }
        ).model_dump(),
        ResponseCompactionItem.model_validate(
            {"type": "compaction", "id": "cmp_1", "encrypted_content": "gAAAAB..."}
        ).model_dump(),
        {"type": "a_type_from_a_newer_sdk", "anything": [1, {"x": None}]},
        {"type": "message", "role": "user", "content": [{"type": "input_image", "file_id": "f"}]},
    ],
    ids=["reasoning", "web_search_call", "compaction", "unknown", "no_chat_content"],
)
def test_items_without_a_chat_form_are_in_no_chat_view(item: dict[str, Any]) -> None:
    assert chat(item) is None


@pytest.mark.parametrize(
    ("item", "loc"),
    [
        ("a string", ()),
        ({"type": 3}, ("type",)),
        ({"content": "no type, no role"}, ("type",)),
        ({"role": "tool", "content": "x"}, ("role",)),
        ({"type": "message", "role": "user", "content": 3}, ("content",)),
        ({"type": "function_call", "call_id": "c", "name": "f"}, ("arguments",)),
        ({"type": "function_call_output", "output": "x"}, ("call_id",)),
    ],
)
def test_bad_items_name_what_is_wrong(item: Any, loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        chat_message(item, loc=("items", 0))
    assert caught.value.errors[0].loc == ("items", 0, *loc)


def message(**fields: Any) -> SimpleNamespace:
    base = {"id": uuid.uuid4(), "content": None, "tool_calls": None, "tool_call_id": None}
    return SimpleNamespace(**(base | {"refusal": None, "status": "completed"} | fields))


def test_a_chat_way_assistant_turn_reads_as_a_message_and_its_calls() -> None:
    turn = message(
        role="assistant",
        content="Checking.",
        tool_calls=[
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_b", "type": "custom", "custom": {"name": "g", "input": "raw"}},
        ],
    )
    text, first, second = message_items(turn)
    assert ResponseOutputMessage.model_validate(text).content[0].text == "Checking."  # type: ignore[union-attr]
    assert ResponseFunctionToolCall.model_validate(first).call_id == "call_a"
    assert ResponseCustomToolCall.model_validate(second).input == "raw"
    assert {message_id_of(item["id"]) for item in (text, first, second)} == {turn.id}
    # and back: each item's chat form is a part of the turn
    assert chat(text) == {"role": "assistant", "content": "Checking."}
    assert [chat(item)["tool_calls"][0] for item in (first, second)] == turn.tool_calls  # type: ignore[index]


def test_chat_way_messages_read_as_input_items_the_sdk_accepts() -> None:
    for m in (
        message(role="system", content="Be brief."),
        message(
            role="user",
            content=[
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        ),
        message(role="assistant", content=None, refusal="No."),
        message(role="tool", content="42", tool_call_id="call_a"),
    ):
        for item in message_items(m):
            INPUT_ITEM.validate_python(item)
            assert message_id_of(item["id"]) == m.id


@pytest.mark.parametrize(
    "item_id", ["msg_", "msg_xyz", "fc_" + "0" * 32, "fc_" + "g" * 32 + "_1", "rs_123", ""]
)
def test_other_ids_name_no_chat_way_message(item_id: str) -> None:
    assert message_id_of(item_id) is None
