"""The HTTP API's items (SPEC 15): add, list, get, over the same store as the messages."""

from __future__ import annotations

import httpx

from tests.support.api import PROBLEM_JSON, bearer, new_conversation


async def test_items_add_list_get(
    client: httpx.AsyncClient, user: str, auth: dict[str, str]
) -> None:
    conv = await new_conversation(client, user)
    base = f"/api/{user}/conversations/{conv['id']}"
    await client.post(f"{base}/messages", json={"role": "user", "content": "hi"}, headers=auth)
    items = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "r"},
    ]
    added = await client.post(f"{base}/items", json={"items": items}, headers=auth)
    assert added.status_code == 201, added.text
    stored = added.json()["data"]
    assert stored[:2] == items[:2]
    assert stored[2]["id"].startswith("item_")
    again = await client.post(f"{base}/items", json={"items": items[:2]}, headers=auth)
    assert again.status_code == 201 and again.json()["data"] == stored[:2]

    listed = await client.get(f"{base}/items", params={"limit": 2}, headers=auth)
    assert listed.status_code == 200
    page = listed.json()
    assert [i["type"] for i in page["data"]] == ["message", "reasoning"]
    assert page["has_more"] is True and page["last_id"] == "rs_1"
    rest = await client.get(
        f"{base}/items", params={"after": page["last_id"], "order": "asc"}, headers=auth
    )
    assert [i["id"] for i in rest.json()["data"]] == ["fc_1", stored[2]["id"]]

    one = await client.get(f"{base}/items/fc_1", headers=auth)
    assert one.status_code == 200 and one.json() == items[1]
    missing = await client.get(f"{base}/items/nope", headers=auth)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM_JSON)

    history = await client.get(f"{base}/messages", headers=auth)
    assert [m["role"] for m in history.json()["data"]] == ["user", "assistant", "tool"]


async def test_items_bad_input(client: httpx.AsyncClient, user: str, auth: dict[str, str]) -> None:
    conv = await new_conversation(client, user)
    base = f"/api/{user}/conversations/{conv['id']}/items"
    for body in (
        {"items": [{"no": "type"}]},
        {"items": [{"type": "function_call_output", "call_id": "x", "output": "r"}]},
        {"items": []},
        [{"type": "x"}],
    ):
        answer = await client.post(base, json=body, headers=auth)
        assert answer.status_code == 422, (body, answer.text)
    stored = await client.post(base, json={"items": [{"type": "x", "id": "x_1"}]}, headers=auth)
    assert stored.status_code == 201
    conflict = await client.post(base, json={"items": [{"type": "y", "id": "x_1"}]}, headers=auth)
    assert conflict.status_code == 409
    other = await client.get(base, headers=bearer("someone-else"))
    assert other.status_code == 403
    openapi = (await client.get("/openapi.json")).json()
    assert "/api/{user_id}/conversations/{conversation_id}/items/{item_id}" in openapi["paths"]
