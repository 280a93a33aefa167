"""OpenAI interop: messages in OpenAI's documented shapes go in and come back identical."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chathistory import ChatHistory, ConflictError, ValidationError

SHAPES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
    {"role": "user", "content": "Hello!", "name": "alice"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this image?"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.png", "detail": "high"},
            },
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-abc123"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
            },
            {
                "id": "call_def456",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 18}'},
    {"role": "tool", "tool_call_id": "call_def456", "content": [{"type": "text", "text": "10:42"}]},
    {
        "role": "assistant",
        "content": "Let me check one more thing.",
        "tool_calls": [
            {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_x", "content": "ok"},
    {"role": "assistant", "content": "It is 18°C in Paris.", "name": "weather_bot"},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
]


async def test_openai_shapes_round_trip(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await store.add_messages(user, conv.id, SHAPES)
    back = [m.to_openai() for m in await store.get_chat_history(user, conv.id)]
    assert back == SHAPES
    window = await store.get_context_window(user, conv.id, 100_000)
    assert window.messages == SHAPES


async def test_sdk_response_message_is_accepted(store: ChatHistory, user: str) -> None:
    """``completion.choices[0].message.model_dump()`` from the openai package, as is."""
    conv = await store.create_conversation(user)
    dumped = {
        "content": None,
        "refusal": None,
        "role": "assistant",
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {
                "id": "call_1",
                "function": {"arguments": '{"q":"x"}', "name": "search"},
                "type": "function",
            }
        ],
    }
    stored = await store.add_messages(
        user, conv.id, [dumped, {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    )
    assert stored[0].to_openai() == {
        "role": "assistant",
        "content": None,
        "tool_calls": dumped["tool_calls"],
    }


def sdk_message(**fields: Any) -> dict[str, Any]:
    """What ``completion.choices[0].message.model_dump()`` gives, from the openai package."""
    from openai.types.chat import ChatCompletionMessage

    dumped: dict[str, Any] = ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": None, **fields}
    ).model_dump()
    return dumped


async def test_assistant_outputs_are_stored_whole(store: ChatHistory, user: str) -> None:
    """Refusal, web-search annotations, audio, a legacy function_call and custom tool calls,
    as the openai SDK returns them, go in and come back whole; the context window sends only
    what Chat Completions accepts as input."""
    conv = await store.create_conversation(user)
    cited = sdk_message(
        content="Lisbon has 7 hills [1].",
        annotations=[
            {
                "type": "url_citation",
                "url_citation": {
                    "start_index": 19,
                    "end_index": 22,
                    "title": "Lisbon",
                    "url": "https://example.com/lisbon",
                },
            }
        ],
    )
    refused = sdk_message(refusal="I can't help with that.")
    spoken = sdk_message(
        audio={"id": "audio_1", "data": "UklGRg==", "expires_at": 1_900_000_000, "transcript": "Hi"}
    )
    legacy = sdk_message(function_call={"name": "lookup", "arguments": '{"q": "x"}'})
    custom = sdk_message(
        tool_calls=[{"id": "ct_1", "type": "custom", "custom": {"name": "grep", "input": "foo"}}]
    )
    result = {"role": "tool", "tool_call_id": "ct_1", "content": "3 matches"}
    sent = [cited, refused, spoken, legacy, custom, result]
    stored = await store.add_messages(user, conv.id, sent)
    empty = (None, [])
    expected = [{k: v for k, v in m.items() if v not in empty or k == "content"} for m in sent]
    assert [m.to_openai() for m in stored] == expected
    back = await store.get_chat_history(user, conv.id)
    assert [m.to_openai() for m in back] == expected
    assert back[2].audio == spoken["audio"] and back[0].annotations == cited["annotations"]

    window = await store.get_context_window(user, conv.id, 100_000)
    by_role = window.messages
    assert "annotations" not in by_role[0] and by_role[0]["content"] == cited["content"]
    assert by_role[1] == {"role": "assistant", "content": None, "refusal": refused["refusal"]}
    assert by_role[2] == {"role": "assistant", "content": None, "audio": {"id": "audio_1"}}
    assert by_role[3]["function_call"] == legacy["function_call"]
    assert by_role[4]["tool_calls"] == custom["tool_calls"] and by_role[5] == result

    # Refusals and transcripts count as text; the same message without them counts less.
    plain = await store.add_message(user, conv.id, "assistant", "x")
    assert stored[1].token_count is not None and plain.token_count is not None
    assert stored[1].token_count > plain.token_count

    # Replaying the same ids is idempotent only with the same extras.
    again = await store.create_conversation(user)
    with_id = {**refused, "id": str(uuid.uuid4())}
    first = await store.add_messages(user, again.id, [with_id])
    assert (await store.add_messages(user, again.id, [with_id]))[0].id == first[0].id
    with pytest.raises(ConflictError):
        await store.add_messages(user, again.id, [{**with_id, "refusal": "Something else."}])


async def test_custom_tool_results_pair_like_function_results(
    store: ChatHistory, user: str
) -> None:
    conv = await store.create_conversation(user)
    call = {"id": "ct_9", "type": "custom", "custom": {"name": "sql", "input": "select 1"}}
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call])
    with pytest.raises(ValidationError):
        await store.add_message(user, conv.id, "tool", "r", tool_call_id="other")
    await store.add_message(user, conv.id, "tool", "1", tool_call_id="ct_9")
    with pytest.raises(ValidationError):  # answered now
        await store.add_message(user, conv.id, "tool", "again", tool_call_id="ct_9")


async def test_replaying_an_empty_refusal_is_idempotent(store: ChatHistory, user: str) -> None:
    """An empty-string refusal is a value (only null and [] are dropped): stored, read back,
    and a replay of the same message is a replay, not a conflict."""
    conv = await store.create_conversation(user)
    sent = {"id": str(uuid.uuid4()), "role": "assistant", "content": "ok", "refusal": ""}
    first = await store.add_messages_idempotent(user, conv.id, [sent])
    again = await store.add_messages_idempotent(user, conv.id, [sent])
    assert first[1] is True and again[1] is False
    assert again[0][0].to_openai() == {k: v for k, v in sent.items() if k != "id"}
