"""The MCP server (SPEC 12), driven by the official SDK's own client over both transports:
``chathistory mcp`` as a subprocess over stdio, and ``/mcp`` of the real app over streamable
HTTP (in process through an ASGI transport, and once as ``chathistory serve`` on a real port).
The tools run against the real databases of conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from fastapi import FastAPI
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from chathistory import ChatHistory
from chathistory.config import Settings
from chathistory.db import create_engine
from chathistory.http import create_app
from tests.fixtures.http import SECRET
from tests.http.test_http_serve import serving

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


# -- stdio: `chathistory mcp --user USER` ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def stdio_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend the stdio server runs on here."""
    return str(request.getfixturevalue(f"{request.param}_store_url"))


@pytest.fixture
async def stdio_backend(stdio_url: str) -> AsyncIterator[tuple[str, ChatHistory]]:
    """The database URL for the subprocess, and a store on it for the test itself."""
    url = stdio_url
    store = ChatHistory(create_engine(url), owns_engine=True)
    try:
        yield url, store
    finally:
        await store.close()


async def test_stdio_serves_the_tools_for_its_user(
    tmp_path: Path, stdio_backend: tuple[str, ChatHistory], user: str, other_user: str
) -> None:
    url, store = stdio_backend
    async with stdio_session(tmp_path, url, user) as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "chathistory"
        tools = (await session.list_tools()).tools
        assert {tool.name for tool in tools} == READ_AND_WRITE  # no deleting tools by default
        for tool in tools:
            assert tool.input_schema["type"] == "object"
            assert tool.output_schema is not None and tool.description
        await exercise_tools(session, user)
        await check_tool_errors(session)
        await check_isolation(session, store, user, other_user)
    assert [c.user_id for c in (await store.list_conversations(user, archived="any")).data] == [
        user
    ] * 4  # what the session created is in the store, as the user's


async def test_stdio_allow_delete(
    tmp_path: Path, stdio_backend: tuple[str, ChatHistory], user: str, other_user: str
) -> None:
    url, store = stdio_backend
    async with stdio_session(tmp_path, url, user, "--allow-delete") as session:
        await check_deleting(session, store, user)
        await check_isolation(session, store, user, other_user)


def test_stdio_refuses_a_bad_user(tmp_path: Path, sqlite_store_url: str) -> None:
    command = ["-m", "chathistory.cli", "mcp", "--user", "", "--database-url", sqlite_store_url]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "user_id" in done.stderr and done.stdout == ""


# -- streamable HTTP at /mcp --------------------------------------------------------------------


async def test_http_serves_the_tools_for_the_token_subject(
    store: ChatHistory, user: str, other_user: str
) -> None:
    app = create_app(settings(), store=store)
    async with http_session(app, token(user)) as session:
        assert await tool_names(session) == READ_AND_WRITE
        await exercise_tools(session, user)
        await check_tool_errors(session)
        await check_isolation(session, store, user, other_user)


async def test_http_allow_delete(store: ChatHistory, user: str, other_user: str) -> None:
    app = create_app(settings(mcp_allow_delete=True), store=store)
    async with http_session(app, token(user)) as session:
        await check_deleting(session, store, user)
        await check_isolation(session, store, user, other_user)


async def test_http_modern_protocol(sqlite_store_url: str, user: str) -> None:
    """The SDK's high-level client negotiates the newest protocol version (``server/discover``,
    no initialize handshake): the user still comes from the token."""
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        app = create_app(settings(), store=store)
        async with http_client(app, token(user)) as http:
            transport = streamable_http_client(f"{BASE_URL}/mcp", http_client=http)
            async with Client(transport) as client:
                created = await client.call_tool("create_conversation", {"title": "new"})
                assert not created.is_error and created.structured_content is not None
                assert created.structured_content["user_id"] == user
                missing = await client.call_tool("get_messages", {"conversation_id": MISSING})
                assert missing.is_error


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


async def test_http_needs_a_valid_bearer_token(sqlite_store_url: str, user: str) -> None:
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        app = create_app(settings(), store=store)
        async with http_client(app, None) as http:
            for auth in (None, "Bearer not-a-jwt", f"Basic {token(user)}"):
                headers = MCP_HEADERS | ({"Authorization": auth} if auth else {})
                response = await http.post("/mcp", json=INITIALIZE, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["x-request-id"]
            expired = jwt.encode({"sub": user, "exp": 1}, SECRET, algorithm="HS256")
            response = await http.post(
                "/mcp",
                json=INITIALIZE,
                headers=MCP_HEADERS | {"Authorization": f"Bearer {expired}"},
            )
            assert response.status_code == 401 and "expired" in response.json()["detail"]
            response = await http.post(
                "/mcp",
                json=INITIALIZE,
                headers=MCP_HEADERS | {"Authorization": f"Bearer {token(user)}"},
            )
            assert response.status_code == 200
            assert response.json()["result"]["serverInfo"]["name"] == "chathistory"
            assert "/mcp" not in (await http.get("/openapi.json")).json()["paths"]


async def test_http_checks_host_and_origin(sqlite_store_url: str, user: str) -> None:
    """DNS rebinding protection: only the allowed Host values (any port of localhost and
    127.0.0.1 by default, the configured ones otherwise) and same-origin or CORS origins."""
    auth = MCP_HEADERS | {"Authorization": f"Bearer {token(user)}"}
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        app = create_app(settings(cors_origins="https://app.example.com"), store=store)
        async with http_client(app, None) as http:
            for host, status in [
                ("127.0.0.1:8000", 200),
                ("localhost", 200),
                ("[::1]:9", 200),
                ("LOCALHOST:80", 200),
                ("chat.example.com", 421),
                ("attacker.example:8000", 421),
                # Parsed and compared exactly, not as a prefix:
                ("localhost:8101@evil.example", 421),
                ("localhost:8101.evil.example", 421),
                ("localhost:8101/x", 421),
                ("localhost:", 421),
                ("localhost:99999", 421),
                ("localhost.evil.example", 421),
                ("[::1]:9@evil.example", 421),
                ("127.0.0.1:80:81", 421),
            ]:
                headers = auth | {"Host": host}
                response = await http.post("/mcp", json=INITIALIZE, headers=headers)
                assert response.status_code == status, host
            for origin, status in [
                ("https://app.example.com", 200),
                ("http://localhost:5173", 200),
                ("https://evil.example", 403),
                ("http://localhost:5173@evil.example", 403),
                ("http://localhost:5173.evil.example", 403),
                ("https://app.example.com.evil.example", 403),
                ("https://app.example.com:8443", 403),
                ("http://localhost:5173/path", 403),
                ("file://localhost", 403),
                ("null", 403),
            ]:
                headers = auth | {"Origin": origin}
                response = await http.post("/mcp", json=INITIALIZE, headers=headers)
                assert response.status_code == status, origin
                if status != 200:
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["code"] == "invalid_origin"
            # The API itself does not check Host.
            assert (await http.get("/healthz", headers={"Host": "chat.example.com"})).is_success

        configured = settings(mcp_allowed_hosts="chat.example.com, chat.example.com:*")
        app = create_app(configured, store=store)
        async with http_client(app, None) as http:
            for host, status in [("chat.example.com", 200), ("127.0.0.1:8000", 421)]:
                headers = auth | {"Host": host}
                response = await http.post("/mcp", json=INITIALIZE, headers=headers)
                assert response.status_code == status, host
            response = await http.post(
                "/mcp", json=INITIALIZE, headers=auth | {"Origin": "https://chat.example.com"}
            )
            assert response.status_code == 421  # the Host of this client is 127.0.0.1:8000

        app = create_app(settings(mcp_allowed_hosts="*"), store=store)
        async with http_client(app, None) as http:
            headers = auth | {"Host": "anything.example"}
            response = await http.post("/mcp", json=INITIALIZE, headers=headers)
            assert response.status_code == 200


async def test_http_mcp_serves_post_only(sqlite_store_url: str, user: str) -> None:
    """Stateless: no server-sent-event stream to open (GET) and no session to end (DELETE),
    so nothing is held open; both are a 405 naming POST, with or without a token."""
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        app = create_app(settings(), store=store)
        async with http_client(app, None) as http:
            for auth in ({}, {"Authorization": f"Bearer {token(user)}"}):
                headers = auth | {"Accept": "text/event-stream", "Mcp-Session-Id": "x"}
                for method in ("GET", "DELETE", "PUT"):
                    response = await http.request(method, "/mcp", headers=headers)
                    assert response.status_code == 405, (method, response.text)
                    assert response.headers["allow"] == "POST"
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["code"] == "method_not_allowed"
            headers = MCP_HEADERS | {"Authorization": f"Bearer {token(user)}"}
            assert (await http.post("/mcp", json=INITIALIZE, headers=headers)).status_code == 200


async def test_http_cors_preflight_for_mcp(sqlite_store_url: str, user: str) -> None:
    origin = "https://app.example.com"
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        app = create_app(settings(cors_origins=origin), store=store)
        async with http_client(app, None) as http:
            preflight = await http.options(
                "/mcp",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type, "
                    "mcp-protocol-version, mcp-session-id",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == origin
            allowed = preflight.headers["access-control-allow-headers"].lower()
            for header in ("authorization", "mcp-protocol-version", "mcp-session-id"):
                assert header in allowed
            headers = MCP_HEADERS | {"Authorization": f"Bearer {token(user)}", "Origin": origin}
            response = await http.post("/mcp", json=INITIALIZE, headers=headers)
            assert response.status_code == 200
            exposed = response.headers["access-control-expose-headers"].lower()
            assert "mcp-session-id" in exposed and "www-authenticate" in exposed


async def test_http_mcp_is_not_served_without_authentication(sqlite_store_url: str) -> None:
    """With the development switch there is no token, so no user for MCP: not served (the
    stdio server, `chathistory mcp --user`, is the local way)."""
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        config = settings(jwt_secret=None, insecure_no_auth=True)
        app = create_app(config, store=store)
        async with http_client(app, None) as http:
            response = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
            assert response.status_code == 404


async def test_http_mcp_without_the_lifespan_is_a_503(sqlite_store_url: str, user: str) -> None:
    async with ChatHistory.open(sqlite_store_url, migrate=False) as store:
        app = create_app(settings(), store=store)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            headers = MCP_HEADERS | {"Authorization": f"Bearer {token(user)}"}
            response = await http.post("/mcp", json=INITIALIZE, headers=headers)
            assert response.status_code == 503 and "not running" in response.json()["detail"]


# -- /mcp of `chathistory serve`, a real process on a real port ---------------------------------


async def test_http_mcp_of_a_real_server(tmp_path: Path, user: str) -> None:
    env = {"CHATHISTORY_JWT_SECRET": SECRET, "CHATHISTORY_MCP_ALLOW_DELETE": "true"}
    with serving(tmp_path, **env) as (base_url, _):
        headers = {"Authorization": f"Bearer {token(user)}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with streamable_http_client(f"{base_url}/mcp", http_client=http) as streams:
                async with ClientSession(*streams) as session:
                    await session.initialize()
                    assert await tool_names(session) == READ_AND_WRITE | DELETING
                    created = await call(session, "create_conversation", {"title": "real"})
                    assert created["user_id"] == user
                    await call(session, "delete_conversation", {"conversation_id": created["id"]})
            response = await http.post(
                f"{base_url}/mcp", json=INITIALIZE, headers=MCP_HEADERS | {"Host": "evil.example"}
            )
            assert response.status_code == 421


# -- results within the byte budget, sent once ----------------------------------------------------


async def test_http_search_results_stay_within_the_byte_budget(
    sqlite_store_url: str, user: str
) -> None:
    """Search hits over MCP are sent as structured content and as compact JSON text, each
    within half the store's byte budget, so the whole JSON-RPC response stays within it."""
    budget = 10_000
    async with ChatHistory.open(
        sqlite_store_url, migrate=False, max_response_bytes=budget
    ) as store:
        conversation = await store.create_conversation(user)
        for n in range(6):  # each about 2,100 bytes: two fit in half the budget
            text = f"needle {n} " + "filler " * 300 + f"tail{n}end"
            await store.add_message(user, conversation.id, "user", text)
        app = create_app(settings(), store=store)
        async with http_session(app, token(user)) as session:  # checked against the schema
            result = await session.call_tool("search_messages", {"query": "needle"})
            assert not result.is_error and result.structured_content is not None
            page = result.structured_content
            assert [hit["message"]["seq"] for hit in page["data"]] == [6, 5]
            assert page["has_more"] and page["next_cursor"]
            [as_text] = result.content
            assert as_text.type == "text"
            assert json.loads(as_text.text) == page  # the same result, for text-only clients
        async with http_client(app, token(user)) as http:
            headers = MCP_HEADERS | {"Mcp-Protocol-Version": "2025-06-18"}
            assert (await http.post("/mcp", json=INITIALIZE, headers=headers)).status_code == 200
            search = {"name": "search_messages", "arguments": {"query": "needle"}}
            response = await http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": search},
                headers=headers,
            )
            assert response.status_code == 200
            body = response.content
            assert body.count(b"tail5end") == body.count(b"tail4end") == 2
            assert b"tail3end" not in body
            # Message content within the budget; the rest is the envelope (the text copy's
            # escaped quotes, the hits' other fields), as on every page.
            assert len(body) <= 1.5 * budget, len(body)
