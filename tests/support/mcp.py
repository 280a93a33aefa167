"""Helpers of the MCP tests (``tests/mcp/``): the SDK's client over both transports, and
what both transports must do."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import jwt
from fastapi import FastAPI
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from chathistory import ChatHistory
from chathistory.config import Settings
from tests.fixtures.http import SECRET

BASE_URL = "http://127.0.0.1:8000"
READ_AND_WRITE = {
    "list_conversations",
    "get_messages",
    "search_messages",
    "get_context_window",
    "create_conversation",
    "add_message",
    "rename_conversation",
}
DELETING = {"delete_conversation", "clear_conversation"}
MISSING = str(uuid.UUID(int=0))


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET, "jwt_jwks_url": None, "cors_origins": ""}
    return Settings(**(values | overrides))


# -- the two transports -----------------------------------------------------------------------


@asynccontextmanager
async def stdio_session(
    tmp_path: Path, database_url: str, user: str, *args: str, **env: str
) -> AsyncIterator[ClientSession]:
    """``chathistory mcp --user USER`` as a subprocess, connected and initialized."""
    command = ["-m", "chathistory.cli", "mcp", "--user", user, "--database-url", database_url]
    server = StdioServerParameters(
        command=sys.executable, args=[*command, *args], cwd=tmp_path, env=env
    )
    with (tmp_path / "mcp-stderr.log").open("w") as errlog:
        async with stdio_client(server, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def http_client(app: FastAPI, auth: str | None) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client of ``app`` in process, with the app's lifespan running (the MCP session
    manager runs in it)."""
    headers = {"Authorization": f"Bearer {auth}"} if auth is not None else {}
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=headers
        ) as http:
            yield http


@asynccontextmanager
async def http_session(app: FastAPI, auth: str) -> AsyncIterator[ClientSession]:
    """The SDK's streamable HTTP client on ``/mcp`` of ``app``, connected and initialized."""
    async with http_client(app, auth) as http:
        async with streamable_http_client(f"{BASE_URL}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call that succeeds: its structured result (the client checked it against the
    tool's output schema)."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def tool_error(session: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    """A tool call that fails as a tool error (not a protocol error): its message."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, result.structured_content
    text = result.content[0]
    assert text.type == "text"
    return text.text


async def tool_names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


# -- what both transports must do ---------------------------------------------------------------


async def exercise_tools(session: ClientSession, user: str) -> None:
    """Every tool that reads or writes, with its structured result, on a fresh user."""
    conversation = await call(session, "create_conversation", {"title": "Lisbon", "pinned": True})
    assert conversation["object"] == "conversation"
    assert conversation["user_id"] == user and conversation["pinned"] is True
    cid = conversation["id"]
    first = await call(
        session,
        "add_message",
        {"conversation_id": cid, "role": "user", "content": "Where is the best pastel de nata?"},
    )
    assert first["object"] == "message" and first["seq"] == 1 and first["user_id"] == user
    call_ = {"id": "call_1", "type": "function", "function": {"name": "maps", "arguments": "{}"}}
    asked = await call(
        session,
        "add_message",
        {"conversation_id": cid, "role": "assistant", "content": None, "tool_calls": [call_]},
    )
    assert asked["tool_calls"] == [call_] and asked["seq"] == 2
    await call(
        session,
        "add_message",
        {"conversation_id": cid, "role": "tool", "tool_call_id": "call_1", "content": "Belem"},
    )

    page = await call(session, "get_messages", {"conversation_id": cid, "limit": 2})
    assert page["object"] == "list" and [m["seq"] for m in page["data"]] == [1, 2]
    assert page["has_more"] is True
    rest = await call(
        session, "get_messages", {"conversation_id": cid, "cursor": page["next_cursor"]}
    )
    assert [m["seq"] for m in rest["data"]] == [3] and rest["has_more"] is False
    newest = await call(session, "get_messages", {"conversation_id": cid, "order": "desc"})
    assert [m["seq"] for m in newest["data"]] == [3, 2, 1]

    hits = await call(session, "search_messages", {"query": "pastel nata"})
    assert [hit["message"]["id"] for hit in hits["data"]] == [first["id"]]
    assert hits["data"][0]["conversation"] == {"id": cid, "title": "Lisbon"}
    assert "<mark>pastel</mark>" in hits["data"][0]["snippet"]
    none = await call(session, "search_messages", {"query": "pastel", "role": "assistant"})
    assert none["data"] == []

    window = await call(session, "get_context_window", {"conversation_id": cid, "max_tokens": 500})
    assert window["object"] == "context_window" and window["truncated"] is False
    assert [m["role"] for m in window["messages"]] == ["user", "assistant", "tool"]
    assert window["messages"][0] == {"role": "user", "content": first["content"]}

    renamed = await call(session, "rename_conversation", {"conversation_id": cid, "title": "Porto"})
    assert renamed["title"] == "Porto" and renamed["id"] == cid

    archived = await call(session, "create_conversation", {"title": "old", "archived": True})
    listed = await call(session, "list_conversations", {})
    assert [c["id"] for c in listed["data"]] == [cid]
    assert listed["data"][0]["message_count"] == 3
    every = await call(session, "list_conversations", {"archived": "any", "limit": 1})
    assert len(every["data"]) == 1 and every["has_more"] is True
    more = await call(
        session,
        "list_conversations",
        {"archived": "any", "limit": 1, "cursor": every["next_cursor"]},
    )
    assert {every["data"][0]["id"], more["data"][0]["id"]} == {cid, archived["id"]}
    unpinned = await call(session, "list_conversations", {"archived": True, "pinned": False})
    assert [c["id"] for c in unpinned["data"]] == [archived["id"]]


async def check_tool_errors(session: ClientSession) -> None:
    """Bad input and a missing conversation are tool errors with a clear message; the session
    goes on."""
    cid = (await call(session, "create_conversation", {}))["id"]
    missing = await tool_error(session, "get_messages", {"conversation_id": MISSING})
    assert f"conversation {MISSING} not found" in missing
    assert "not found" in await tool_error(
        session, "add_message", {"conversation_id": MISSING, "role": "user", "content": "hi"}
    )
    not_a_uuid = await tool_error(session, "get_messages", {"conversation_id": "nope"})
    assert "conversation_id" in not_a_uuid and "UUID" in not_a_uuid
    assert "role" in await tool_error(
        session, "add_message", {"conversation_id": cid, "role": "robot", "content": "x"}
    )
    assert "tool_call_id: is required for a tool message" in await tool_error(
        session, "add_message", {"conversation_id": cid, "role": "tool", "content": "x"}
    )
    assert "limit" in await tool_error(session, "list_conversations", {"limit": 0})
    assert "cursor" in await tool_error(
        session, "get_messages", {"conversation_id": cid, "cursor": "garbage"}
    )
    assert "invalid input" in await tool_error(session, "search_messages", {"query": "-word"})
    assert "max_tokens" in await tool_error(
        session, "get_context_window", {"conversation_id": cid, "max_tokens": 0}
    )
    assert "expires_at" in await tool_error(
        session, "create_conversation", {"expires_at": "2001-01-01T00:00:00Z"}
    )
    assert "Unknown tool" in await tool_error(session, "delete_conversation", {})
    # Still serving after all that.
    assert (await call(session, "get_messages", {"conversation_id": cid}))["data"] == []


async def check_isolation(
    session: ClientSession, store: ChatHistory, user: str, other_user: str
) -> None:
    """Nothing in a tool's arguments reaches another user's data: it is simply not found."""
    theirs = await store.create_conversation(other_user, title="bob's secrets")
    await store.add_message(other_user, theirs.id, "user", "zanzibar treasure map")
    bob = str(theirs.id)
    for tool, arguments in [
        ("get_messages", {"conversation_id": bob}),
        ("get_context_window", {"conversation_id": bob, "max_tokens": 100}),
        ("add_message", {"conversation_id": bob, "role": "user", "content": "mine now"}),
        ("rename_conversation", {"conversation_id": bob, "title": "pwned"}),
        ("search_messages", {"query": "zanzibar", "conversation_id": bob}),
    ]:
        assert f"conversation {bob} not found" in await tool_error(session, tool, arguments)
    if "delete_conversation" in await tool_names(session):
        for tool in DELETING:
            message = await tool_error(session, tool, {"conversation_id": bob})
            assert f"conversation {bob} not found" in message
    # A user named in the arguments is not an argument of any tool: ignored.
    listed = await call(session, "list_conversations", {"user_id": other_user, "archived": "any"})
    assert all(c["user_id"] == user for c in listed["data"])
    assert bob not in {c["id"] for c in listed["data"]}
    hits = await call(session, "search_messages", {"query": "zanzibar"})
    assert hits["data"] == []
    created = await call(session, "create_conversation", {"user_id": other_user})
    assert created["user_id"] == user
    # Bob's conversation is as it was.
    kept = await store.get_conversation(other_user, theirs.id)
    assert kept.title == "bob's secrets" and kept.message_count == 1


async def check_deleting(session: ClientSession, store: ChatHistory, user: str) -> None:
    assert await tool_names(session) == READ_AND_WRITE | DELETING
    cid = (await call(session, "create_conversation", {"title": "to go"}))["id"]
    await call(session, "add_message", {"conversation_id": cid, "role": "user", "content": "a"})
    await call(session, "add_message", {"conversation_id": cid, "role": "user", "content": "b"})
    cleared = await call(session, "clear_conversation", {"conversation_id": cid})
    assert cleared == {"object": "conversation.cleared", "id": cid, "messages_deleted": 2}
    assert (await store.get_conversation(user, uuid.UUID(cid))).message_count == 0
    deleted = await call(session, "delete_conversation", {"conversation_id": cid})
    assert deleted == {"object": "conversation.deleted", "id": cid, "deleted": True}
    assert "not found" in await tool_error(session, "delete_conversation", {"conversation_id": cid})
    assert (await call(session, "list_conversations", {"archived": "any"}))["data"] == []
