"""The MCP server over streamable HTTP (SPEC 12): ``/mcp`` of the real app, in process through
an ASGI transport and once as ``chathistory serve`` on a real port, driven by the official
SDK's client: tools per token subject, authentication, host and origin checks, the byte
budget."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import jwt
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from chathistory import ChatHistory
from chathistory.http import create_app
from tests.fixtures.http import SECRET
from tests.http.test_http_serve import serving
from tests.support.mcp import (
    BASE_URL,
    DELETING,
    MISSING,
    READ_AND_WRITE,
    call,
    check_deleting,
    check_isolation,
    check_tool_errors,
    exercise_tools,
    http_client,
    http_session,
    settings,
    token,
    tool_names,
)


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
