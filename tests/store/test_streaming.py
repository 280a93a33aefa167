"""SPEC 10: streaming turns — an in-progress assistant message updated as it streams, on every
backend, through the library and the HTTP API; and a server killed mid-stream."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import openai
import pytest
from sqlalchemy import update

from chathistory import (
    ChatHistory,
    ConflictError,
    MessageNotFoundError,
    NotFoundError,
    ValidationError,
)
from chathistory.models import messages
from chathistory.schemas.streaming import MessageUpdate
from tests.fixtures.http import asgi_client
from tests.http.test_http_serve import SECRET, serving
from tests.support.api import bearer, problem

M = messages.c
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


async def _streaming(store: ChatHistory, user: str, **fields: Any) -> tuple[uuid.UUID, Any]:
    conv = await store.create_conversation(user)
    await store.add_message(user, conv.id, "user", "Plan two days in Lisbon")
    [message] = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "", "status": "in_progress", **fields}]
    )
    return conv.id, message


async def _age(store: ChatHistory, user: str, message_id: uuid.UUID, minutes: int) -> None:
    """Move a message's last update into the past, without waiting for it."""
    past = datetime.now(UTC) - timedelta(minutes=minutes)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(messages)
            .where(M.user_id == user, M.id == message_id)
            .values(created_at=past, updated_at=past)
        )


async def test_two_hundred_appends_store_their_concatenation(store: ChatHistory, user: str) -> None:
    conv, message = await _streaming(store, user)
    assert (message.status, message.content, message.updated_at) == (
        "in_progress",
        "",
        message.created_at,
    )
    pieces = [f"{i} Alfama, Belém é ótimo; " if i % 7 else f"\U0001f600{i}\n" for i in range(200)]
    latest = message
    for piece in pieces:
        latest = await store.update_message(user, conv, message.id, {"append_text": piece})
    # The next turn arrives while the answer still streams: both keep their places.
    [next_turn] = await store.add_messages(user, conv, [{"role": "user", "content": "And food?"}])
    finished = await store.update_message(
        user, conv, message.id, {"append_text": "The end.", "status": "completed"}
    )
    text = "".join(pieces) + "The end."
    stored = await store.get_message(user, conv, message.id)
    assert stored == finished
    assert (stored.content, stored.status, stored.seq, stored.id) == (
        text,
        "completed",
        message.seq,
        message.id,
    )
    assert stored.created_at == message.created_at
    assert stored.updated_at >= latest.updated_at >= message.created_at
    assert stored.token_count == store.tokens.count_message(
        {"role": "assistant", "content": text, "name": None, "tool_calls": None}
    )
    history = await store.get_chat_history(user, conv)
    assert [m.id for m in history][-2:] == [message.id, next_turn.id]
    assert (await store.get_conversation(user, conv)).message_count == 3
    # Search sees the final text, once.
    hits = await store.search_messages(user, "Belém", conversation_id=conv)
    assert [hit.message.id for hit in hits.data] == [message.id]
    # Finished: never changes again, and the refusal changes nothing.
    for change in ({"append_text": "more"}, {"status": "in_progress"}, {"status": "completed"}):
        with pytest.raises(ConflictError, match="completed"):
            await store.update_message(user, conv, message.id, change)
    assert await store.get_message(user, conv, message.id) == stored


async def test_updates_take_keyword_arguments_like_update_conversation(
    store: ChatHistory, user: str
) -> None:
    """update_message takes a mapping, a MessageUpdate and/or keyword arguments (a keyword
    wins over the same key of the mapping), as update_conversation does."""
    conv, message = await _streaming(store, user)
    grown = await store.update_message(user, conv, message.id, append_text="Lis")
    assert grown.content == "Lis"
    both = await store.update_message(
        user, conv, message.id, {"append_text": "bon", "status": "completed"}, status="in_progress"
    )
    assert (both.content, both.status) == ("Lisbon", "in_progress")
    called = await store.update_message(user, conv, message.id, tool_calls=[CALL], content=None)
    assert (called.content, called.tool_calls) == (None, [CALL])
    with pytest.raises(ValidationError):
        await store.update_message(user, conv, message.id)  # nothing to change
    done = await store.update_message(user, conv, message.id, MessageUpdate(status="completed"))
    assert done.status == "completed"


async def test_content_parts_tool_calls_and_pairing(store: ChatHistory, user: str) -> None:
    conv, message = await _streaming(store, user)
    parts = await store.update_message(
        user, conv, message.id, {"content": [{"type": "text", "text": "Let me"}]}
    )
    assert parts.content == [{"type": "text", "text": "Let me"}]
    parts = await store.update_message(user, conv, message.id, {"append_text": " check."})
    assert parts.content == [{"type": "text", "text": "Let me check."}]
    # A result can answer the call only once the call is set.
    result = {"role": "tool", "tool_call_id": "call_1", "content": "22 °C"}
    with pytest.raises(ValidationError, match="answers no open tool call"):
        await store.add_messages(user, conv, [result])
    called = await store.update_message(user, conv, message.id, {"tool_calls": [CALL]})
    assert called.tool_calls == [CALL] and called.status == "in_progress"
    [answer] = await store.add_messages(user, conv, [result])
    assert answer.seq == message.seq + 1
    # The answered call cannot be taken back; an unanswered one can be replaced.
    other = {**CALL, "id": "call_2"}
    with pytest.raises(ValidationError, match="already has its result"):
        await store.update_message(user, conv, message.id, {"tool_calls": [other]})
    both = await store.update_message(user, conv, message.id, {"tool_calls": [CALL, other]})
    assert [c["id"] for c in both.tool_calls or ()] == ["call_1", "call_2"]
    third = {**CALL, "id": "call_3"}
    await store.update_message(user, conv, message.id, {"tool_calls": [CALL, third]})
    with pytest.raises(ValidationError, match="answers no open tool call"):
        await store.add_messages(user, conv, [{**result, "tool_call_id": "call_2"}])
    await store.add_messages(user, conv, [{**result, "tool_call_id": "call_3"}])
    done = await store.update_message(user, conv, message.id, {"status": "completed"})
    assert done.status == "completed"
    window = await store.get_context_window(user, conv, max_tokens=10_000)
    assert [m["role"] for m in window.messages] == ["user", "assistant", "tool", "tool"]


async def test_bad_updates_are_refused_and_change_nothing(store: ChatHistory, user: str) -> None:
    conv, message = await _streaming(store, user)
    await store.update_message(user, conv, message.id, {"append_text": "Day one"})
    before = await store.get_message(user, conv, message.id)
    limit = store.max_content_chars
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "at least one of"),
        ({"append_text": "a\x00b"}, "NUL"),
        ({"append_text": "\ud800"}, "surrogate"),
        ({"content": "x" * (limit + 1)}, "limit"),
        ({"append_text": "x" * limit}, "limit"),
        ({"content": None}, "may be null only"),
        ({"tool_calls": []}, "at least one tool call"),
        ({"tool_calls": [CALL, CALL]}, "unique"),
        ({"status": "finished"}, "status"),
        ({"content": [{"type": "image_url", "image_url": {"url": "x"}}]}, "parts"),
        ({"append_text": 5}, "append_text"),
    ]
    for change, message_text in bad:
        with pytest.raises(ValidationError, match=message_text):
            await store.update_message(user, conv, message.id, change)
    assert await store.get_message(user, conv, message.id) == before
    # Only an assistant message streams; a completed message is finished.
    with pytest.raises(ValidationError, match="only an assistant message"):
        await store.add_messages(
            user, conv, [{"role": "user", "content": "hi", "status": "in_progress"}]
        )
    [plain] = await store.add_messages(user, conv, [{"role": "user", "content": "hi"}])
    with pytest.raises(ConflictError):
        await store.update_message(user, conv, plain.id, {"append_text": "!"})
    # Unknown message, another user's conversation: not found.
    with pytest.raises(MessageNotFoundError):
        await store.update_message(user, conv, uuid.uuid4(), {"append_text": "!"})
    with pytest.raises(NotFoundError):
        await store.update_message("someone-else", conv, message.id, {"append_text": "!"})
    assert await store.get_message(user, conv, message.id) == before


async def test_a_stream_left_alone_reads_as_incomplete(
    store: ChatHistory, user: str, backend_url: str
) -> None:
    conv, message = await _streaming(store, user)
    await store.update_message(user, conv, message.id, {"append_text": "Day one: Alfama"})
    await _age(store, user, message.id, minutes=11)  # past the default 10 minutes
    stored = await store.get_message(user, conv, message.id)
    assert (stored.status, stored.content) == ("incomplete", "Day one: Alfama")
    page = await store.list_messages(user, conv, order="desc", limit=1)
    assert page.data[0].status == "incomplete"
    assert (await store.get_chat_history(user, conv))[-1].status == "incomplete"
    hits = await store.search_messages(user, "Alfama")
    assert [h.message.status for h in hits.data] == ["incomplete"]
    exported = [m async for m in store.iter_messages(user, conv)]
    assert exported[-1].status == "incomplete"
    with pytest.raises(ConflictError, match="incomplete"):
        await store.update_message(user, conv, message.id, {"append_text": " and more"})
    # The context window keeps an incomplete answer as it is.
    window = await store.get_context_window(user, conv, max_tokens=1000)
    assert [m["content"] for m in window.messages] == ["Plan two days in Lisbon", "Day one: Alfama"]
    # A store with a longer timeout still sees it streaming.
    patient = ChatHistory(store.engine, stream_timeout=timedelta(hours=1))
    assert (await patient.get_message(user, conv, message.id)).status == "in_progress"


async def test_the_context_window_leaves_out_what_still_streams(
    store: ChatHistory, user: str
) -> None:
    conv, message = await _streaming(store, user, tool_calls=[CALL], content=None)
    await store.add_messages(
        user, conv, [{"role": "tool", "tool_call_id": "call_1", "content": "22"}]
    )
    window = await store.get_context_window(user, conv, max_tokens=1000)
    assert [m["role"] for m in window.messages] == ["user"]
    await store.add_messages(
        user,
        conv,
        [
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "It is", "status": "in_progress"},
        ],
    )
    window = await store.get_context_window(user, conv, max_tokens=1000)
    assert [m["content"] for m in window.messages] == ["Plan two days in Lisbon", "Thanks"]
    await store.update_message(user, conv, message.id, {"status": "incomplete"})
    window = await store.get_context_window(user, conv, max_tokens=1000)
    assert [m["role"] for m in window.messages] == ["user", "assistant", "tool", "user"]


async def test_the_http_patch_route(store: ChatHistory, user: str) -> None:
    from chathistory.http import create_app
    from tests.support.api import settings

    app = create_app(settings(), store=store)
    async with asgi_client(app) as http:
        conv, message = await _streaming(store, user)
        path = f"/api/{user}/conversations/{conv}/messages/{message.id}"
        for piece in ("Day ", "one"):
            answer = await http.patch(path, json={"append_text": piece}, headers=bearer(user))
            assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["content"], body["status"], body["object"]) == (
            "Day one",
            "in_progress",
            "message",
        )
        bad = await http.patch(path, json={"append_text": "\u0000"}, headers=bearer(user))
        assert problem(bad, 422)["errors"][0]["loc"][-1] == "append_text"
        done = await http.patch(path, json={"status": "completed"}, headers=bearer(user))
        assert done.json()["status"] == "completed"
        problem(await http.patch(path, json={"append_text": "!"}, headers=bearer(user)), 409)
        other = f"/api/someone-else/conversations/{conv}/messages/{message.id}"
        problem(await http.patch(other, json={"append_text": "!"}, headers=bearer(user)), 403)
        theirs = await http.patch(other, json={"append_text": "!"}, headers=bearer("someone-else"))
        problem(theirs, 404)
        problem(
            await http.patch(
                path, content=b"{", headers=bearer(user) | {"content-type": "application/json"}
            ),
            400,
        )
        listed = await http.get(f"/api/{user}/conversations/{conv}/messages", headers=bearer(user))
        assert listed.json()["data"][-1]["content"] == "Day one"


def test_a_server_killed_mid_stream_keeps_the_partial_answer(tmp_path: Path) -> None:
    """SIGKILL the service between two updates: what was stored stays, and once the stream
    timeout has passed (a second server with a timeout shorter than the time since the kill)
    it reads as incomplete and can no longer change."""
    user = "streamer"
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    with serving(tmp_path, CHATHISTORY_JWT_SECRET=SECRET) as (base_url, process):
        with httpx.Client(base_url=base_url, timeout=10) as http:
            conv = http.post(f"/api/{user}/conversations", json={}, headers=auth).json()["id"]
            started = http.post(
                f"/api/{user}/conversations/{conv}/messages",
                json={"role": "assistant", "content": "", "status": "in_progress"},
                headers=auth,
            ).json()
            path = f"/api/{user}/conversations/{conv}/messages/{started['id']}"
            for piece in ("Day one: ", "Alfama, ", "the castle"):
                assert http.patch(path, json={"append_text": piece}, headers=auth).is_success
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=20) == -signal.SIGKILL
    with serving(
        tmp_path, CHATHISTORY_JWT_SECRET=SECRET, CHATHISTORY_STREAM_TIMEOUT_SECONDS="600"
    ) as (base_url, _):
        with httpx.Client(base_url=base_url, timeout=10) as http:
            still = http.get(path, headers=auth).json()
            assert (still["content"], still["status"]) == (
                "Day one: Alfama, the castle",
                "in_progress",
            )
    stopped_at = datetime.now(UTC)
    with serving(
        tmp_path, CHATHISTORY_JWT_SECRET=SECRET, CHATHISTORY_STREAM_TIMEOUT_SECONDS="0.001"
    ) as (base_url, _):
        assert datetime.now(UTC) - stopped_at > timedelta(seconds=0.001)
        with httpx.Client(base_url=base_url, timeout=10) as http:
            gone = http.get(path, headers=auth).json()
            assert (gone["content"], gone["status"]) == (
                "Day one: Alfama, the castle",
                "incomplete",
            )
            assert http.patch(path, json={"append_text": "!"}, headers=auth).status_code == 409


async def test_concurrent_updates_each_keep_their_text(store: ChatHistory, user: str) -> None:
    conv, message = await _streaming(store, user)
    pieces = [f"<{i}>" for i in range(20)]
    await asyncio.gather(
        *(store.update_message(user, conv, message.id, {"append_text": p}) for p in pieces)
    )
    stored = await store.get_message(user, conv, message.id)
    assert sorted(re.findall(r"<\d+>", str(stored.content))) == sorted(pieces)
    assert len(str(stored.content)) == sum(map(len, pieces))


def _guide_example() -> Callable[..., Any]:
    """The streaming example of the library guide (docs/library.md), run as written."""
    guide = (Path(__file__).parents[2] / "docs" / "library.md").read_text()
    after = guide.split("<!-- streaming-example -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/library.md", "exec"), namespace)
    return cast(Callable[..., Any], namespace["stream_answer"])


def _openai(words: list[str], *, cut_after: int | None = None) -> openai.AsyncOpenAI:
    """The openai SDK, talking to a chat completions endpoint that streams ``words`` as
    server-sent events (and drops the connection after ``cut_after`` of them)."""

    async def events() -> AsyncIterator[bytes]:
        for index, word in enumerate(words):
            if index == cut_after:
                raise httpx.ReadError("connection reset by peer")
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        assert sent["stream"] is True and sent["messages"][-1]["role"] == "user"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())

    transport = httpx.MockTransport(answer)
    return openai.AsyncOpenAI(
        api_key="test",
        base_url="http://llm.test/v1",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport),
    )


async def test_the_guide_example_streams_from_the_openai_sdk(store: ChatHistory, user: str) -> None:
    stream_answer = _guide_example()
    words = [f"word{i} " for i in range(120)]
    conv = await store.create_conversation(user)
    await store.add_message(user, conv.id, "user", "Tell me a long story")
    done = await stream_answer(store, _openai(words), user, conv.id)
    assert (done.content, done.status) == ("".join(words), "completed")
    # The stream breaks after 50 words: those are stored, marked incomplete, and it raises.
    cut = await store.create_conversation(user)
    await store.add_message(user, cut.id, "user", "Again")
    with pytest.raises(openai.APIConnectionError):
        await stream_answer(store, _openai(words, cut_after=50), user, cut.id)
    [_, partial] = await store.get_chat_history(user, cut.id)
    assert (partial.content, partial.status) == ("".join(words[:50]), "incomplete")
