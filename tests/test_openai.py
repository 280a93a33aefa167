"""OpenAI interop: messages in OpenAI's documented shapes go in and come back identical."""

from __future__ import annotations

from typing import Any

from chathistory import ChatHistory

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
