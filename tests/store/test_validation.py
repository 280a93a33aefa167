"""Bad input gets a typed ValidationError naming the field, and nothing stored changes.
Good input, however odd, comes back exactly as it went in."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from chathistory import ChatHistory, MessageCreate, ValidationError
from chathistory.db import create_engine

UNICODE = [
    "emoji 👩‍👩‍👧‍👦 🇫🇷 🤖",
    "CJK 漢字かなカナ한국어",
    "RTL مرحبا بالعالم שלום",
    "combining e\u0301 a\u0308 \u1e9b\u0323 Z\u0351\u0359",
    "zero width \u200b\u200d\ufeff and BOM",
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈",
    "line\r\nbreaks\ttabs\x01\x1f control",
    'quotes "\'` backslash \\ json {"a": [1]}',
    "",
]


def call(id: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": "f", "arguments": arguments}}


@pytest.mark.parametrize("text", UNICODE)
async def test_unicode_round_trip(store: ChatHistory, user: str, text: str) -> None:
    conv = await store.create_conversation(
        user, title=text[:255], metadata={text[:64] or "k": text}
    )
    message = await store.add_message(user, conv.id, "user", text, metadata={"k": text})
    stored = await store.get_message(user, conv.id, message.id)
    assert stored.content == text
    assert stored.metadata == {"k": text}
    fetched = await store.get_conversation(user, conv.id)
    assert fetched.title == text[:255]
    assert fetched.metadata == {text[:64] or "k": text}


async def test_long_content_round_trip(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    text = ("0123456789🙂漢" * 8334)[:100_000]
    assert len(text) == 100_000
    message = await store.add_message(user, conv.id, "user", text)
    assert (await store.get_message(user, conv.id, message.id)).content == text
    with pytest.raises(ValidationError) as info:
        await store.add_message(user, conv.id, "user", text + "x")
    assert info.value.errors[0].loc == ("content",)
    assert info.value.errors[0].type == "too_long"
    assert (await store.get_conversation(user, conv.id)).message_count == 1


async def test_content_limit_is_configurable(backend_url: str, user: str) -> None:
    async with ChatHistory.open(backend_url, migrate=False, max_content_chars=10) as small:
        conv = await small.create_conversation(user)
        await small.add_message(user, conv.id, "user", "x" * 10)
        with pytest.raises(ValidationError):
            await small.add_message(user, conv.id, "user", "x" * 11)
        with pytest.raises(ValidationError):  # tool call arguments count too
            await small.add_message(
                user, conv.id, "assistant", None, tool_calls=[call("c", "{" + " " * 20 + "}")]
            )


async def test_nested_tool_calls_and_parts_round_trip(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    arguments = json.dumps(
        {"deep": {"list": [1, 2.5, None, True, {"ü": "🙂"}], "s": "a\\nb"}, "n": -0.0}
    )
    assistant = await store.add_message(
        user,
        conv.id,
        "assistant",
        [{"type": "text", "text": "calling"}],
        tool_calls=[call("call_1", arguments), call("call_2", "not json at all")],
    )
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
    ]
    question = await store.add_message(user, conv.id, "user", parts)
    got = await store.get_chat_history(user, conv.id)
    assert got[0].tool_calls == [call("call_1", arguments), call("call_2", "not json at all")]
    assert got[0].content == [{"type": "text", "text": "calling"}]
    assert got[1].content == parts
    assert got[0].id == assistant.id
    assert got[1].id == question.id
    assert got[0].to_openai() == {
        "role": "assistant",
        "content": [{"type": "text", "text": "calling"}],
        "tool_calls": [call("call_1", arguments), call("call_2", "not json at all")],
    }


UNSTORABLE = ["nul \x00 inside", "lone high \ud800", "lone low \udfff x", "\x00"]


@pytest.mark.parametrize("bad", UNSTORABLE)
async def test_unstorable_text_is_rejected_everywhere(
    store: ChatHistory, user: str, bad: str
) -> None:
    conv = await store.create_conversation(user, title="kept")
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call("c")])
    attempts: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
        ({"role": "user", "content": bad}, ("content",)),
        ({"role": "user", "content": [{"type": "text", "text": bad}]}, ("content",)),
        ({"role": "user", "content": "ok", "name": bad}, ("name",)),
        ({"role": "user", "content": "ok", "metadata": {"k": bad}}, ("metadata",)),
        ({"role": "user", "content": "ok", "metadata": {bad: "v"}}, ("metadata",)),
        ({"role": "tool", "content": "ok", "tool_call_id": bad}, ("tool_call_id",)),
        (
            {"role": "assistant", "content": None, "tool_calls": [call(bad)]},
            ("tool_calls", 0, "id"),
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [call("d", bad)]},
            ("tool_calls", 0, "function", "arguments"),
        ),
    ]
    for message, loc in attempts:
        with pytest.raises(ValidationError) as info:
            await store.add_messages(user, conv.id, [message])
        assert info.value.errors[0].loc == loc, message
        assert info.value.errors[0].type in ("unstorable_text", "value_error", "string_unicode")
    with pytest.raises(ValidationError):
        await store.create_conversation(user, title=bad)
    with pytest.raises(ValidationError):
        await store.create_conversation(user, metadata={"k": bad})
    with pytest.raises(ValidationError):
        await store.update_conversation(user, conv.id, title=bad)
    after = await store.get_conversation(user, conv.id)
    assert (after.title, after.message_count) == ("kept", 1)
    assert len((await store.list_conversations(user)).data) == 1


BAD_MESSAGES: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
    ({"role": "robot", "content": "x"}, ("role",)),
    ({"role": "User", "content": "x"}, ("role",)),
    ({"content": "x"}, ("role",)),
    ({"role": "user"}, ("content",)),
    ({"role": "user", "content": None}, ("content",)),
    ({"role": "assistant", "content": None}, ("content",)),
    ({"role": "user", "content": 42}, ("content",)),
    ({"role": "user", "content": {"text": "x"}}, ("content",)),
    ({"role": "user", "content": []}, ("content",)),
    ({"role": "user", "content": [{"text": "no type"}]}, ("content",)),
    ({"role": "user", "content": [{"type": "text"}]}, ("content",)),
    ({"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}, ("content",)),
    (
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        ("content",),
    ),
    # What each role may hold is what Chat Completions takes for it (SPEC 13).
    ({"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}, ("content",)),
    ({"role": "user", "content": [{"type": "input_text", "text": "x"}]}, ("content",)),
    (
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "hd"}}],
        },
        ("content",),
    ),
    (
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "A"}}]},
        ("content",),
    ),
    ({"role": "user", "content": [{"type": "file", "file": {"file_id": 7}}]}, ("content",)),
    ({"role": "user", "content": [{"type": "file", "file": "file-1"}]}, ("content",)),
    (
        {"role": "assistant", "content": "x", "annotations": [{"type": "file_citation"}]},
        ("annotations", 0, "type"),
    ),
    (
        {
            "role": "assistant",
            "content": "x",
            "annotations": [
                {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 1}}
            ],
        },
        ("annotations", 0, "url_citation", "title"),
    ),
    (
        {
            "role": "assistant",
            "content": "x",
            "annotations": [
                {
                    "type": "url_citation",
                    "url_citation": {"start_index": "0", "end_index": 1, "title": "", "url": ""},
                }
            ],
        },
        ("annotations", 0, "url_citation", "start_index"),
    ),
    ({"role": "tool", "content": "x"}, ("tool_call_id",)),
    ({"role": "user", "content": "x", "tool_call_id": "c"}, ("tool_call_id",)),
    ({"role": "user", "content": "x", "tool_calls": [call("c")]}, ("tool_calls",)),
    ({"role": "assistant", "content": None, "tool_calls": []}, ("tool_calls",)),
    ({"role": "assistant", "content": None, "tool_calls": [call("c"), call("c")]}, ("tool_calls",)),
    (
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
        ("tool_calls", 0, "function"),
    ),
    (
        {"role": "assistant", "content": None, "tool_calls": [{**call("c"), "type": "code"}]},
        ("tool_calls", 0, "type"),
    ),
    (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**call("c"), "function": {"name": "f"}}],
        },
        ("tool_calls", 0, "function", "arguments"),
    ),
    ({"role": "user", "content": "x", "name": ""}, ("name",)),
    ({"role": "user", "content": "x", "name": "n" * 65}, ("name",)),
    (
        {"role": "user", "content": "x", "metadata": {f"k{n}": "v" for n in range(17)}},
        ("metadata",),
    ),
    ({"role": "user", "content": "x", "metadata": {"k" * 65: "v"}}, ("metadata",)),
    ({"role": "user", "content": "x", "metadata": {"": "v"}}, ("metadata",)),
    ({"role": "user", "content": "x", "metadata": {"k": "v" * 513}}, ("metadata",)),
    ({"role": "user", "content": "x", "metadata": {"k": 1}}, ("metadata", "k")),
    ({"role": "user", "content": "x", "metadata": ["k"]}, ("metadata",)),
    ({"role": "user", "content": "x", "id": "not-a-uuid"}, ("id",)),
    ({"role": "user", "content": "x", "colour": "red"}, ("colour",)),
    ({"role": "user", "content": "x", "seq": 5}, ("seq",)),
]


@pytest.mark.parametrize(("message", "loc"), BAD_MESSAGES)
async def test_bad_messages(
    store: ChatHistory, user: str, message: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    conv = await store.create_conversation(user)
    with pytest.raises(ValidationError) as info:
        await store.add_messages(user, conv.id, [message])
    assert loc in [e.loc for e in info.value.errors], info.value.errors
    assert (await store.get_conversation(user, conv.id)).message_count == 0


async def test_boundary_values_are_accepted(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(
        user, title="t" * 255, metadata={f"{n:0>64}": "v" * 512 for n in range(16)}
    )
    message = await store.add_message(
        user, conv.id, "user", "x", name="n" * 64, metadata={"k" * 64: "v" * 512}
    )
    assert message.name == "n" * 64
    assert (await store.get_conversation(user, conv.id)).title == "t" * 255
    with pytest.raises(ValidationError):
        await store.create_conversation(user, title="t" * 256)


def test_openai_sdk_dump_is_accepted() -> None:
    # What openai's ChatCompletionMessage.model_dump() gives for a tool-calling turn.
    dumped = {
        "content": None,
        "refusal": None,
        "role": "assistant",
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [call("call_abc", '{"city":"Paris"}')],
    }
    message = MessageCreate.model_validate(dumped)
    assert message.stored_tool_calls() == [call("call_abc", '{"city":"Paris"}')]
    # SPEC 13: a non-empty refusal is an assistant's answer, stored whole; only an assistant
    # message may carry one.
    assert MessageCreate.model_validate({**dumped, "refusal": "I can't"}).refusal == "I can't"
    with pytest.raises(Exception, match="only allowed on an assistant message"):
        MessageCreate.model_validate({"role": "user", "content": "x", "refusal": "no"})


async def test_every_openai_part_and_annotation_is_kept_whole(
    store: ChatHistory, user: str
) -> None:
    conv = await store.create_conversation(user)
    parts = [
        {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": detail}}
        for detail in ("auto", "low", "high", "original")
    ] + [
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a"}},
        {"type": "text", "text": "x", "prompt_cache_breakpoint": {"mode": "explicit"}},
    ]
    citation = {
        "type": "url_citation",
        "url_citation": {"start_index": 0, "end_index": 3, "title": "T", "url": "https://x"},
        "added_later": {"kept": True},  # a key OpenAI may add is stored as given
    }
    await store.add_messages(
        user,
        conv.id,
        [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": "abc", "annotations": [citation]},
        ],
    )
    question, answer = await store.get_chat_history(user, conv.id)
    assert question.content == parts and answer.annotations == [citation]


async def test_database_rejects_rows_that_break_the_model(backend_url: str, user: str) -> None:
    """The constraints hold even for writes that bypass the store."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from chathistory.models import conversations, messages, utcnow

    engine = create_engine(backend_url)
    try:
        conv_id = uuid.uuid4()
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=conv_id,
                    user_id=user,
                    metadata={},
                    created_at=now,
                    updated_at=now,
                    message_count=0,
                )
            )
        base = {
            "id": uuid.uuid4(),
            "user_id": user,
            "conversation_id": conv_id,
            "seq": 1,
            "role": "user",
            "content": "x",
            "metadata": {},
            "created_at": now,
        }
        bad_rows = [
            {**base, "role": "robot"},
            {**base, "seq": 0},
            {**base, "role": "tool"},
            {**base, "tool_call_id": "c"},
            {**base, "tool_calls": [call("c")]},
            {**base, "content": None},
            {**base, "user_id": "someone-else"},  # composite FK: not that user's conversation
        ]
        for row in bad_rows:
            with pytest.raises(IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(insert(messages).values(row))
        async with engine.begin() as conn:
            await conn.execute(insert(messages).values(base))
        with pytest.raises(IntegrityError):  # (conversation_id, seq) is unique
            async with engine.begin() as conn:
                await conn.execute(insert(messages).values({**base, "id": uuid.uuid4()}))
    finally:
        await engine.dispose()


async def test_values_json_cannot_hold(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    bad_contents = [
        [{"type": "text", "text": "x", "n": float("nan")}],
        [{"type": "text", "text": "x", "n": float("inf")}],
        [{"type": "text", "text": "x", "deep": deep}],
    ]
    for content in bad_contents:
        with pytest.raises(ValidationError) as info:
            await store.add_message(user, conv.id, "user", content)
        assert info.value.errors[0].loc[0] == "content"
    ok: Any = "x"
    for _ in range(20):
        ok = [ok]
    stored = await store.add_message(
        user, conv.id, "user", [{"type": "text", "text": "y", "d": ok}]
    )
    assert (await store.get_message(user, conv.id, stored.id)).content == stored.content
    assert (await store.get_conversation(user, conv.id)).message_count == 1


@pytest.mark.parametrize("changes", [[1], "xy", 5])
async def test_update_needs_an_object(store: ChatHistory, user: str, changes: Any) -> None:
    conv = await store.create_conversation(user, title="t")
    with pytest.raises(ValidationError):
        await store.update_conversation(user, conv.id, changes)
    assert (await store.get_conversation(user, conv.id)).title == "t"
