"""The HTTP API's messages: append (single, batch, idempotent, atomic), tool pairing, pages
by cursor, the context window (every backend, both paths of the hot requests)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from chathistory import ChatHistory
from tests.support.api import PROBLEM_JSON, bearer, locs, new_conversation, problem


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
