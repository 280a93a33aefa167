"""Bad input to the HTTP API: a clear 4xx, never a 500, nothing stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chathistory import ChatHistory
from chathistory.config import Settings
from tests.support.api import bearer, locs, names, new_conversation, problem

# -- bad input: a clear 4xx, never a 500, nothing stored ---------------------------------------

MALFORMED = (400, "malformed_json")
INVALID = (422, "validation_error")

BAD_MESSAGES = [
    pytest.param(b'{"role": "user", "content": ', *MALFORMED, None, id="malformed JSON"),
    pytest.param(b'{"role": "user", "content": "x"} x', *MALFORMED, None, id="trailing garbage"),
    pytest.param(
        b'{"role": "user", "content": "x", "metadata": {"a": NaN}}', *MALFORMED, None, id="NaN"
    ),
    pytest.param(b'{"role": "user", "content": "\xff\xfe"}', *MALFORMED, None, id="not UTF-8"),
    pytest.param(b"[" * 70 + b"]" * 70, *MALFORMED, None, id="nested too deep"),
    pytest.param(
        b'{"role": "user", "content": [{"type": "text", "text": "x", "deep": '
        + b"[" * 40
        + b"]" * 40
        + b"}]}",
        *INVALID,
        ["content"],
        id="content nested deeper than the store keeps",
    ),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, *MALFORMED, None, id="nested far too deep"),
    pytest.param(b'{"role": "wizard", "content": "x"}', *INVALID, ["role"], id="unknown role"),
    pytest.param(b'{"role": 5, "content": "x"}', *INVALID, ["role"], id="role of wrong type"),
    pytest.param(
        b'{"role": "user", "content": 5}', *INVALID, ["content"], id="content of wrong type"
    ),
    pytest.param(
        b'{"role": "tool", "content": "x"}', *INVALID, ["tool_call_id"], id="tool without call id"
    ),
    pytest.param(
        b'{"role": "user", "content": "x", "mood": "sad"}', *INVALID, ["mood"], id="unknown field"
    ),
    pytest.param(
        b'{"role": "user", "content": "a\\u0000b"}', *INVALID, ["content"], id="NUL escape"
    ),
    pytest.param(
        b'{"role": "user", "content": "a\\ud800b"}', *INVALID, ["content"], id="lone surrogate"
    ),
    pytest.param(
        b'{"role": "user", "content": "x", "metadata": {"k": "\\u0000"}}',
        *INVALID,
        ["metadata"],
        id="NUL in metadata",
    ),
    pytest.param(
        b'{"role": "user", "content": "x", "metadata": {"\\udc00": "v"}}',
        *INVALID,
        ["metadata"],
        id="surrogate key",
    ),
    pytest.param(
        b'{"role": "user", "content": "x", "\\ud800": 1}', *INVALID, None, id="surrogate field name"
    ),
    pytest.param(b'"hello"', *INVALID, None, id="string body"),
    pytest.param(b"42", *INVALID, None, id="number body"),
    pytest.param(b"null", *INVALID, None, id="null body"),
    pytest.param(b"[]", *INVALID, None, id="empty array"),
    pytest.param(b"[1, 2]", *INVALID, None, id="array of non-objects"),
]


@pytest.mark.parametrize(("raw", "status", "code", "loc"), BAD_MESSAGES)
async def test_bad_message_bodies(
    client: httpx.AsyncClient,
    store: ChatHistory,
    user: str,
    auth: dict[str, str],
    raw: bytes,
    status: int,
    code: str,
    loc: list[Any] | None,
) -> None:
    conv = await new_conversation(client, user)
    response = await client.post(
        f"/api/{user}/conversations/{conv['id']}/messages",
        content=raw,
        headers=auth | {"Content-Type": "application/json"},
    )
    body = problem(response, status, code)
    json.loads(response.content.decode("ascii"))  # problems are plain ASCII JSON
    if loc is not None:
        assert names(body, loc), body
    if status == 422:
        assert body["errors"], body
    assert await store.get_chat_history(user, uuid.UUID(conv["id"])) == []
    assert (await store.get_conversation(user, uuid.UUID(conv["id"]))).message_count == 0


async def test_authentication_comes_before_the_body(
    client: httpx.AsyncClient, user: str, other_user: str
) -> None:
    conv = await new_conversation(client, user)
    url = f"/api/{user}/conversations/{conv['id']}/messages"
    as_json = {"Content-Type": "application/json"}
    as_text = {"Content-Type": "text/plain"}
    garbage = b"{not json"
    problem(await client.post(url, content=garbage, headers=as_json), 401)
    problem(await client.post(url, content=garbage, headers=as_text), 401)
    problem(await client.post(url, content=garbage, headers=as_json | bearer(other_user)), 403)
    problem(
        await client.post(url, content=garbage, headers=as_json | bearer(user)),
        400,
        "malformed_json",
    )


async def test_oversize_content_is_422(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    response = await client.post(
        f"/api/{user}/conversations/{conv['id']}/messages",
        json={"role": "user", "content": "x" * (store.max_content_chars + 1)},
        headers=auth,
    )
    body = problem(response, 422, "validation_error")
    assert locs(body) == [["content"]]
    assert await store.get_chat_history(user, uuid.UUID(conv["id"])) == []


async def test_oversize_body_is_413_declared_or_streamed(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    url = f"/api/{user}/conversations/{conv['id']}/messages"
    limit = Settings().max_body_bytes
    big = json.dumps({"role": "user", "content": "x" * limit}).encode()
    headers = auth | {"Content-Type": "application/json"}

    declared = await client.post(url, content=big, headers=headers)
    problem(declared, 413, "body_too_large")
    assert declared.headers["x-request-id"]

    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        nonlocal chunks_sent
        for start in range(0, len(big), 64 * 1024):
            chunks_sent += 1
            yield big[start : start + 64 * 1024]

    streamed = await client.post(url, content=stream(), headers=headers)
    problem(streamed, 413, "body_too_large")
    assert await store.get_chat_history(user, uuid.UUID(conv["id"])) == []


async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    url = f"/api/{user}/conversations/{conv['id']}"
    body = b'{"role": "user", "content": "x"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = dict(auth)
        if content_type:
            headers["Content-Type"] = content_type
        posted = await client.post(f"{url}/messages", content=body, headers=headers)
        problem(posted, 415, "unsupported_media_type")
        assert posted.headers["accept-post"] == "application/json"
        patched = await client.patch(url, content=b'{"title": "x"}', headers=headers)
        problem(patched, 415, "unsupported_media_type")
        assert patched.headers["accept-patch"] == "application/json"
    ok = await client.post(
        f"{url}/messages",
        content=body,
        headers=auth | {"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201
    assert (await store.get_conversation(user, uuid.UUID(conv["id"]))).title == "x"


async def test_bad_conversation_bodies(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    url = f"/api/{user}/conversations"
    cases: list[tuple[Any, list[Any]]] = [
        ({"title": 5}, ["title"]),
        ({"title": "x" * 256}, ["title"]),
        ({"metadata": {"k": 1}}, ["metadata"]),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, ["metadata"]),
        ({"id": "not-a-uuid"}, ["id"]),
        ({"owner": "someone"}, ["owner"]),
        ([1], []),
    ]
    for payload, loc in cases:
        body = problem(await client.post(url, json=payload, headers=auth), 422, "validation_error")
        assert names(body, loc), (payload, body)
    assert (await store.list_conversations(user)).data == []

    conv = await new_conversation(client, user, title="kept")
    target = f"{url}/{conv['id']}"
    for payload in ({"title": 5}, {"metadata": None}, {"metadata": {"k": 1}}, [1], "x", 5):
        problem(await client.patch(target, json=payload, headers=auth), 422, "validation_error")
    assert (await store.get_conversation(user, uuid.UUID(conv["id"]))).title == "kept"


async def test_bad_paths_and_queries(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    base = f"/api/{user}/conversations"
    messages = f"{base}/{conv['id']}/messages"

    body = problem(await client.get(f"{base}/not-a-uuid", headers=auth), 422, "validation_error")
    assert locs(body) == [["path", "conversation_id"]]
    problem(await client.get(f"{messages}/42", headers=auth), 422, "validation_error")
    problem(await client.delete(f"{base}/{uuid.uuid4()}x", headers=auth), 422)

    for params in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}):
        body = problem(await client.get(base, params=params, headers=auth), 422)
        assert locs(body) == [["query", "limit"]]
        problem(await client.get(messages, params=params, headers=auth), 422)
    body = problem(await client.get(messages, params={"order": "sideways"}, headers=auth), 422)
    assert locs(body) == [["query", "order"]]

    conversation_cursor = (await client.get(base, headers=auth)).json()["next_cursor"]
    message_cursor = (await client.get(messages, headers=auth)).json()["next_cursor"]
    assert message_cursor is None  # no messages yet, none asked from
    await client.post(messages, json={"role": "user", "content": "x"}, headers=auth)
    message_cursor = (await client.get(messages, headers=auth)).json()["next_cursor"]
    for url, params in [
        (base, {"cursor": "garbage"}),
        (base, {"cursor": message_cursor}),  # a cursor of another list
        (messages, {"cursor": "garbage"}),
        (messages, {"cursor": conversation_cursor}),
        (messages, {"cursor": "x" * 10_000}),
        (messages, {"after": "not-a-uuid"}),
        (messages, {"before": "not-a-uuid"}),
        (messages, {"after": str(uuid.uuid4())}),  # not a message of this conversation
        (messages, {"cursor": message_cursor, "after": str(uuid.uuid4())}),
    ]:
        problem(await client.get(url, params=params, headers=auth), 400, "invalid_cursor")


async def test_user_id_rules_come_from_the_store(client: httpx.AsyncClient) -> None:
    long_user = "u" * 256
    body = problem(
        await client.get(f"/api/{long_user}/conversations", headers=bearer(long_user)),
        422,
        "validation_error",
    )
    assert locs(body) == [["user_id"]]
    nul_user = "a\x00b"
    body = problem(
        await client.get("/api/a%00b/conversations", headers=bearer(nul_user)),
        422,
        "validation_error",
    )
    assert locs(body) == [["user_id"]]


async def test_unknown_route_and_method(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    problem(await client.get("/nowhere"), 404, "not_found")
    response = await client.put(f"/api/{user}/conversations", headers=auth)
    problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
