"""The HTTP API's conversations: create, read, update, delete, list (every backend, both
paths of the hot requests)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from chathistory import ChatHistory
from tests.support.api import new_conversation, problem

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
