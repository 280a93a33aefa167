"""The HTTP API through the real app (httpx ASGITransport), on every backend, each test that
takes ``client`` through both paths of the hot requests: the fast lane's and FastAPI's."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, Header

from chathistory import ChatHistory
from chathistory.config import Settings
from chathistory.db import create_engine
from chathistory.http import HTTPProblem, Principal, build_router, create_app
from tests.fixtures.http import SECRET, asgi_client

PROBLEM_JSON = "application/problem+json"


def bearer(sub: str) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "jwt_jwks_url": None,
        "jwt_issuer": None,
        "jwt_audience": None,
        "insecure_no_auth": False,
        "retry_after_seconds": 7,
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def client(store: ChatHistory, fast_lane: bool) -> AsyncIterator[httpx.AsyncClient]:
    """The service on ``store``, with its fast lane and without (every test, both paths)."""
    app = create_app(settings(fast_lane=fast_lane), store=store)
    async with asgi_client(app) as http:
        yield http


@pytest.fixture
def auth(user: str) -> dict[str, str]:
    return bearer(user)


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem response and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in body["errors"]]


def names(body: dict[str, Any], field: list[Any]) -> bool:
    """Whether some error of a 422 problem is located at ``field`` or inside it."""
    return any(loc[: len(field)] == field for loc in locs(body))


async def new_conversation(http: httpx.AsyncClient, user: str, **fields: Any) -> dict[str, Any]:
    response = await http.post(f"/api/{user}/conversations", json=fields, headers=bearer(user))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# -- conversations ---------------------------------------------------------------------------


async def test_conversation_lifecycle(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    created = await client.post(
        f"/api/{user}/conversations", json={"title": "Trip", "metadata": {"a": "1"}}, headers=auth
    )
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    assert created.headers["x-request-id"]
    conv = created.json()
    assert conv["user_id"] == user
    assert conv["title"] == "Trip"
    assert conv["metadata"] == {"a": "1"}
    assert conv["message_count"] == 0
    assert uuid.UUID(conv["id"]).version == 7
    url = f"/api/{user}/conversations/{conv['id']}"

    fetched = await client.get(url, headers=auth)
    assert fetched.status_code == 200
    assert fetched.json() == conv

    renamed = await client.patch(url, json={"title": "Lisbon"}, headers=auth)
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Lisbon"
    assert renamed.json()["metadata"] == {"a": "1"}  # left out: unchanged
    assert renamed.json()["updated_at"] >= conv["updated_at"]

    retagged = await client.patch(url, json={"metadata": {"b": "2"}}, headers=auth)
    assert retagged.json()["metadata"] == {"b": "2"}
    assert retagged.json()["title"] == "Lisbon"

    cleared = await client.patch(url, json={"title": None}, headers=auth)
    assert cleared.json()["title"] is None
    unchanged = await client.patch(url, json={}, headers=auth)
    assert unchanged.status_code == 200
    assert unchanged.json() == cleared.json()

    deleted = await client.delete(url, headers=auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    problem(await client.get(url, headers=auth), 404, "not_found")
    problem(await client.delete(url, headers=auth), 404, "not_found")
    problem(await client.patch(url, json={"title": "x"}, headers=auth), 404, "not_found")


async def test_create_conversation_without_body(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    response = await client.post(f"/api/{user}/conversations", headers=auth)
    assert response.status_code == 201
    assert response.json()["title"] is None
    assert response.json()["metadata"] == {}


async def test_create_conversation_idempotent(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    given = str(uuid.uuid4())
    first = await client.post(
        f"/api/{user}/conversations", json={"id": given, "title": "T"}, headers=auth
    )
    assert first.status_code == 201
    assert first.json()["id"] == given
    again = await client.post(
        f"/api/{user}/conversations", json={"id": given, "title": "T"}, headers=auth
    )
    assert again.status_code == 200
    assert again.json() == first.json()
    problem(
        await client.post(
            f"/api/{user}/conversations", json={"id": given, "title": "Other"}, headers=auth
        ),
        409,
        "conflict",
    )
    page = await store.list_conversations(user)
    assert [c.id for c in page.data] == [uuid.UUID(given)]


async def test_messages_single_batch_and_get(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    base = f"/api/{user}/conversations/{conv['id']}/messages"

    one = await client.post(base, json={"role": "user", "content": "Hello   there"}, headers=auth)
    assert one.status_code == 201
    message = one.json()
    assert message["seq"] == 1
    assert message["role"] == "user"
    assert message["content"] == "Hello   there"
    assert message["conversation_id"] == conv["id"]
    assert message["user_id"] == user
    for key in ("name", "tool_calls", "tool_call_id"):
        assert message[key] is None

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    batch = await client.post(
        base,
        json=[
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "It is 42."}],
                "metadata": {"model": "m"},
            },
        ],
        headers=auth,
    )
    assert batch.status_code == 201, batch.text
    listed = batch.json()
    assert listed["object"] == "list"
    assert [m["seq"] for m in listed["data"]] == [2, 3, 4]
    assert listed["data"][0]["tool_calls"] == [call]
    assert listed["data"][1]["tool_call_id"] == "call_1"
    assert listed["data"][2]["content"] == [{"type": "text", "text": "It is 42."}]

    got = await client.get(f"{base}/{message['id']}", headers=auth)
    assert got.status_code == 200
    assert got.json() == message
    problem(await client.get(f"{base}/{uuid.uuid4()}", headers=auth), 404, "not_found")

    after = (await client.get(f"/api/{user}/conversations/{conv['id']}", headers=auth)).json()
    assert after["message_count"] == 4
    assert after["title"] == "Hello there"  # the first user message, whitespace collapsed
    assert after["updated_at"] > conv["updated_at"]


async def test_message_append_is_idempotent(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    base = f"/api/{user}/conversations/{conv['id']}/messages"
    message = {"id": str(uuid.uuid4()), "role": "user", "content": "once"}

    first = await client.post(base, json=message, headers=auth)
    assert first.status_code == 201
    replay = await client.post(base, json=message, headers=auth)
    assert replay.status_code == 200
    assert replay.json() == first.json()
    problem(
        await client.post(base, json=message | {"content": "changed"}, headers=auth),
        409,
        "conflict",
    )

    batch = [
        {"id": str(uuid.uuid4()), "role": "assistant", "content": "a"},
        {"id": str(uuid.uuid4()), "role": "user", "content": "b"},
    ]
    stored = await client.post(base, json=batch, headers=auth)
    assert stored.status_code == 201
    replayed = await client.post(base, json=batch, headers=auth)
    assert replayed.status_code == 200
    assert replayed.json() == stored.json()

    history = await store.get_chat_history(user, uuid.UUID(conv["id"]))
    assert [m.content for m in history] == ["once", "a", "b"]


async def test_batch_is_atomic(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    response = await client.post(
        f"/api/{user}/conversations/{conv['id']}/messages",
        json=[
            {"role": "user", "content": "fine"},
            {"role": "wizard", "content": "bad"},
            {"role": "tool", "content": "no call id"},
        ],
        headers=auth,
    )
    body = problem(response, 422, "validation_error")
    assert [1, "role"] in locs(body)
    assert [2, "tool_call_id"] in locs(body)
    assert await store.get_chat_history(user, uuid.UUID(conv["id"])) == []


async def test_tool_result_must_answer_an_open_call(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    response = await client.post(
        f"/api/{user}/conversations/{conv['id']}/messages",
        json={"role": "tool", "tool_call_id": "call_nobody_made", "content": "x"},
        headers=auth,
    )
    body = problem(response, 422, "validation_error")
    assert locs(body) == [["tool_call_id"]]
    assert await store.get_chat_history(user, uuid.UUID(conv["id"])) == []


# -- lists -------------------------------------------------------------------------------------


async def test_conversation_list_cursor_walk(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    made = [await new_conversation(client, user, title=f"c{i}") for i in range(5)]
    url = f"/api/{user}/conversations"

    first = await client.get(url, headers=auth)
    assert first.status_code == 200
    assert first.json()["object"] == "list"
    assert [c["id"] for c in first.json()["data"]] == [c["id"] for c in reversed(made)]
    assert first.json()["has_more"] is False

    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get(url, params=params, headers=auth)).json()
        seen += [c["id"] for c in page["data"]]
        pages.append(len(page["data"]))
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert pages == [2, 2, 1]
    assert seen == [c["id"] for c in reversed(made)]
    assert cursor is not None  # present whenever data is: a client can poll on from here


async def test_message_list_cursor_after_before(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    base = f"/api/{user}/conversations/{conv['id']}/messages"
    sent = await client.post(
        base,
        json=[{"role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(7)],
        headers=auth,
    )
    ids = [m["id"] for m in sent.json()["data"]]

    everything = (await client.get(base, headers=auth)).json()
    assert [m["id"] for m in everything["data"]] == ids
    assert everything["first_id"] == ids[0]
    assert everything["last_id"] == ids[-1]
    assert everything["has_more"] is False

    last_cursor: dict[str, str] = {}
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        walked: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "order": order}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(base, params=params, headers=auth)).json()
            walked += [m["id"] for m in page["data"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        assert walked == expected
        last_cursor[order] = cursor

    after = (await client.get(base, params={"after": ids[2], "limit": 2}, headers=auth)).json()
    assert [m["id"] for m in after["data"]] == ids[3:5]
    assert after["has_more"] is True
    before = (await client.get(base, params={"before": ids[4], "limit": 2}, headers=auth)).json()
    assert [m["id"] for m in before["data"]] == ids[2:4]
    desc_after = (
        await client.get(base, params={"after": ids[4], "order": "desc"}, headers=auth)
    ).json()
    assert [m["id"] for m in desc_after["data"]] == ids[3::-1]
    both = (await client.get(base, params={"after": ids[1], "before": ids[5]}, headers=auth)).json()
    assert [m["id"] for m in both["data"]] == ids[2:5]

    # Polling: the cursor of the last page stays usable and returns what arrives later.
    tail = (await client.get(base, params={"cursor": last_cursor["asc"]}, headers=auth)).json()
    assert tail["data"] == []
    assert tail["first_id"] is None
    assert tail["last_id"] is None
    assert tail["next_cursor"] == last_cursor["asc"]
    problem(  # a cursor remembers its order
        await client.get(base, params={"cursor": last_cursor["desc"]}, headers=auth),
        400,
        "invalid_cursor",
    )
    end = (await client.get(base, params={"limit": 100}, headers=auth)).json()["next_cursor"]
    await client.post(base, json={"role": "user", "content": "new"}, headers=auth)
    polled = (await client.get(base, params={"cursor": end}, headers=auth)).json()
    assert [m["content"] for m in polled["data"]] == ["new"]


# -- isolation and erasure ---------------------------------------------------------------------


async def test_another_users_data_is_not_found(
    client: httpx.AsyncClient, store: ChatHistory, user: str, other_user: str
) -> None:
    theirs = await new_conversation(client, other_user, title="secret")
    message = (
        await client.post(
            f"/api/{other_user}/conversations/{theirs['id']}/messages",
            json={"role": "user", "content": "private"},
            headers=bearer(other_user),
        )
    ).json()
    mine = bearer(user)
    base = f"/api/{user}/conversations/{theirs['id']}"
    missing = f"/api/{user}/conversations/{uuid.uuid4()}"
    for path in (base, missing):
        bodies = [
            problem(await client.get(path, headers=mine), 404, "not_found"),
            problem(await client.patch(path, json={"title": "x"}, headers=mine), 404),
            problem(
                await client.post(
                    f"{path}/messages", json={"role": "user", "content": "x"}, headers=mine
                ),
                404,
            ),
            problem(await client.get(f"{path}/messages", headers=mine), 404),
            problem(await client.get(f"{path}/messages/{message['id']}", headers=mine), 404),
            problem(await client.delete(path, headers=mine), 404),
        ]
        assert all(b["code"] == "not_found" for b in bodies)
    # Their row is untouched and was never listed for us.
    kept = await store.get_conversation(other_user, uuid.UUID(theirs["id"]))
    assert kept.title == "secret"
    assert kept.message_count == 1
    assert (await client.get(f"/api/{user}/conversations", headers=mine)).json()["data"] == []


async def test_delete_user_data(
    client: httpx.AsyncClient, store: ChatHistory, user: str, other_user: str
) -> None:
    for _ in range(2):
        conv = await new_conversation(client, user)
        await client.post(
            f"/api/{user}/conversations/{conv['id']}/messages",
            json={"role": "user", "content": "x"},
            headers=bearer(user),
        )
    theirs = await new_conversation(client, other_user)

    response = await client.delete(f"/api/{user}", headers=bearer(user))
    assert response.status_code == 204
    assert (await store.list_conversations(user)).data == []
    assert (await store.get_conversation(other_user, uuid.UUID(theirs["id"]))).id
    again = await client.delete(f"/api/{user}", headers=bearer(user))
    assert again.status_code == 204
    problem(await client.delete(f"/api/{other_user}", headers=bearer(user)), 403, "forbidden")


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


async def test_request_id(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x"})
    assert echoed.headers["x-request-id"] == "abc-123.x"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    for insane in ("has spaces", "x" * 200, 'quote"s'):
        replaced = await client.get("/healthz", headers={"X-Request-ID": insane})
        assert replaced.headers["x-request-id"] != insane
    unauthorized = await client.get("/api/u/conversations", headers={"X-Request-ID": "r-401"})
    assert unauthorized.headers["x-request-id"] == "r-401"


async def test_health_needs_no_auth(client: httpx.AsyncClient) -> None:
    live = await client.get("/healthz")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


async def test_a_201_names_what_it_created_in_location(
    client: httpx.AsyncClient, user: str
) -> None:
    """A create's ``Location`` is the new resource's path, which answers it; a replay (200)
    and a batch (whose resource is the list it joined) carry none."""
    for owner in (user, f"{user} é+%"):  # percent-encoded in the path, as the client sent it
        me = bearer(owner)
        created = await client.post(f"/api/{owner}/conversations", json={}, headers=me)
        assert created.status_code == 201
        conv = created.json()["id"]
        location = created.headers["location"]
        assert location == f"{httpx.URL(f'/api/{owner}/conversations').raw_path.decode()}/{conv}"
        fetched = await client.get(location, headers=me)
        assert fetched.status_code == 200 and fetched.json() == created.json()
        again = await client.post(f"/api/{owner}/conversations", json={"id": conv}, headers=me)
        assert again.status_code == 200 and "location" not in again.headers

        messages = f"{location}/messages"
        one = {"id": str(uuid.uuid4()), "role": "user", "content": "hi"}
        added = await client.post(messages, json=one, headers=me)
        assert added.status_code == 201
        assert added.headers["location"] == f"{messages}/{one['id']}"
        fetched = await client.get(added.headers["location"], headers=me)
        assert fetched.status_code == 200 and fetched.json() == added.json()
        replayed = await client.post(messages, json=one, headers=me)
        assert replayed.status_code == 200 and "location" not in replayed.headers
        batch = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        added = await client.post(messages, json=batch, headers=me)
        assert added.status_code == 201 and "location" not in added.headers


async def test_location_keeps_the_mount_and_proxy_prefix(store: ChatHistory, user: str) -> None:
    host = FastAPI()
    host.mount("/service", create_app(settings(), store=store))
    async with asgi_client(host, root_path="/proxy", base_url="http://host") as http:
        created = await http.post(
            f"/proxy/service/api/{user}/conversations", json={}, headers=bearer(user)
        )
        assert created.status_code == 201, created.text
        conv = created.json()["id"]
        assert created.headers["location"] == f"/proxy/service/api/{user}/conversations/{conv}"


# -- the router in a host application -----------------------------------------------------


async def test_router_mounts_in_a_host_app(store: ChatHistory, user: str) -> None:
    """A host app brings its own store and auth; the routes still answer with problems."""

    async def host_store() -> ChatHistory:
        return store

    async def host_auth(x_user: Annotated[str | None, Header()] = None) -> Principal:
        if x_user is None:
            raise HTTPProblem(401, "who are you?", headers={"WWW-Authenticate": "Session"})
        return Principal(subject=x_user)

    host = FastAPI()
    host.include_router(build_router(get_store=host_store, authenticate=host_auth, prefix="/chat"))
    async with asgi_client(host, base_url="http://host") as http:
        me = {"X-User": user}
        created = await http.post(f"/chat/{user}/conversations", json={"title": "t"}, headers=me)
        assert created.status_code == 201
        listed = await http.get(f"/chat/{user}/conversations", headers=me)
        assert [c["id"] for c in listed.json()["data"]] == [created.json()["id"]]
        refused = await http.get(f"/chat/{user}/conversations")
        problem(refused, 401)
        assert refused.headers["www-authenticate"] == "Session"
        problem(await http.get(f"/chat/{user}/conversations/x", headers=me), 422)
        problem(await http.get(f"/chat/{user}/conversations/{uuid.uuid4()}", headers=me), 404)
        problem(await http.get("/chat/someone/conversations", headers=me), 403)
        problem(
            await http.post(
                f"/chat/{user}/conversations",
                content=b"{",
                headers=me | {"Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
        )


# -- the database unavailable (not per backend) ------------------------------------------------


async def test_unreachable_database_is_503_with_retry_after() -> None:
    engine = create_engine(
        "postgresql://nobody:pw@127.0.0.1:1/none", connect_timeout=2, pool_timeout=2
    )
    store = ChatHistory(engine, owns_engine=True)
    app = create_app(settings(retry_after_seconds=9), store=store)
    try:
        async with asgi_client(app) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            problem(ready, 503, "unavailable")
            assert ready.headers["retry-after"] == "9"
            listed = await http.get("/api/u/conversations", headers=bearer("u"))
            problem(listed, 503, "unavailable")
            assert listed.headers["retry-after"] == "9"
    finally:
        await store.close()


# -- the OpenAPI document ----------------------------------------------------------------------


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == {
        ("POST", "/api/{user_id}/conversations"),
        ("GET", "/api/{user_id}/conversations"),
        ("GET", "/api/{user_id}/conversations/{conversation_id}"),
        ("PATCH", "/api/{user_id}/conversations/{conversation_id}"),
        ("DELETE", "/api/{user_id}/conversations/{conversation_id}"),
        ("POST", "/api/{user_id}/conversations/{conversation_id}/messages"),
        ("GET", "/api/{user_id}/conversations/{conversation_id}/messages"),
        ("GET", "/api/{user_id}/conversations/{conversation_id}/messages/{message_id}"),
        ("PATCH", "/api/{user_id}/conversations/{conversation_id}/messages/{message_id}"),
        ("GET", "/api/{user_id}/conversations/{conversation_id}/context"),
        ("GET", "/api/{user_id}/search"),
        ("DELETE", "/api/{user_id}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }
    schemas = document["components"]["schemas"]
    for (method, path), operation in operations.items():
        assert operation["operationId"]
        assert operation["summary"]
        responses = operation["responses"]
        for status, answer in responses.items():
            content = answer.get("content", {})
            if status.startswith(("4", "5")):
                assert list(content) == [PROBLEM_JSON], (method, path, status)
                assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
                assert content[PROBLEM_JSON]["example"]["status"] == int(status)
            elif status != "204":
                media = content["application/json"]
                assert "schema" in media
                assert "example" in media or "examples" in media, (method, path, status)
        if path.startswith("/api/"):
            assert operation["security"] == [{"HTTPBearer": []}]
            assert {"401", "403", "404", "422", "503"} <= set(responses)
        if method in ("POST", "PATCH"):
            assert {"400", "413", "415"} <= set(responses)
            assert operation["requestBody"]["content"]["application/json"]["examples"]
    # Message examples keep their nulls, and validate as the schema says.
    message = operations[
        ("GET", "/api/{user_id}/conversations/{conversation_id}/messages/{message_id}")
    ]
    example = message["responses"]["200"]["content"]["application/json"]["example"]
    assert set(example) == set(schemas["MessageRead"]["properties"])
    assert example["tool_calls"] is None
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# -- logging and bugs (not per backend) --------------------------------------------------------


@pytest.fixture
async def sqlite_client(
    sqlite_store_url: str,
) -> AsyncIterator[tuple[ChatHistory, httpx.AsyncClient]]:
    store = ChatHistory(create_engine(sqlite_store_url), owns_engine=True)
    app = create_app(settings(), store=store)
    try:
        async with asgi_client(app, raise_app_exceptions=False) as http:
            yield store, http
    finally:
        await store.close()


async def test_each_request_is_logged_once_with_its_id(
    sqlite_client: tuple[ChatHistory, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    _store, http = sqlite_client
    with caplog.at_level(logging.INFO, logger="chathistory.http"):
        await http.get("/api/a%0Afake%20line/conversations", headers={"X-Request-ID": "log-1"})
    lines = [r.getMessage() for r in caplog.records if "request_id=log-1" in r.getMessage()]
    assert len(lines) == 1
    assert '"GET /api/a%0Afake%20line/conversations" 401 ' in lines[0]
    assert "\n" not in lines[0]


async def test_a_bug_is_a_500_problem_with_the_request_id(
    sqlite_client: tuple[ChatHistory, httpx.AsyncClient],
    user: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, http = sqlite_client

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "list_conversations", broken)
    with caplog.at_level(logging.ERROR, logger="chathistory.http"):
        response = await http.get(
            f"/api/{user}/conversations", headers=bearer(user) | {"X-Request-ID": "bug-1"}
        )
    body = problem(response, 500, "internal_error")
    assert "bug-1" in body["detail"]
    assert "a bug" not in body["detail"]  # internals stay in the log
    assert response.headers["x-request-id"] == "bug-1"
    assert "bug-1" in caplog.text
    assert "RuntimeError: a bug" in caplog.text


async def test_context_window_endpoint(
    client: httpx.AsyncClient, store: ChatHistory, user: str, auth: dict[str, str]
) -> None:
    conv = await store.create_conversation(user)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    sent = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "old " * 200},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
        {"role": "assistant", "content": "done"},
    ]
    await store.add_messages(user, conv.id, sent)
    path = f"/api/{user}/conversations/{conv.id}/context"
    whole = await client.get(path, params={"max_tokens": 100_000}, headers=auth)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["messages"] == sent
    assert body["truncated"] is False
    assert body["token_count"] <= 100_000
    small = (await client.get(path, params={"max_tokens": 60}, headers=auth)).json()
    assert small["messages"] == [sent[0], *sent[2:]]
    assert small["truncated"] is True
    assert small["token_count"] <= 60
    gpt4 = await client.get(path, params={"max_tokens": 1000, "model": "gpt-4"}, headers=auth)
    assert gpt4.json()["encoding"] == "cl100k_base"
    for bad in ({"max_tokens": 0}, {"max_tokens": "x"}, {}, {"max_tokens": 5}):
        answer = await client.get(path, params=bad, headers=auth)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    missing = await client.get(
        f"/api/{user}/conversations/{uuid.uuid4()}/context",
        params={"max_tokens": 100},
        headers=auth,
    )
    assert missing.status_code == 404
    stranger = await client.get(path, params={"max_tokens": 100}, headers=bearer("stranger"))
    assert stranger.status_code == 403
