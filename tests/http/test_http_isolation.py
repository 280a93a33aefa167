"""The HTTP API keeps users apart: another user's data is not found; a user's data erased
whole."""

from __future__ import annotations

import uuid

import httpx

from chathistory import ChatHistory
from tests.support.api import bearer, new_conversation, problem

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
