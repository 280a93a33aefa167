"""The app around the routes: request ids, health, Location, the router in a host app, the
database unavailable, the OpenAPI document, logging and bugs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header

from chathistory import ChatHistory
from chathistory.db import create_engine
from chathistory.http import HTTPProblem, Principal, build_router, create_app
from tests.fixtures.http import asgi_client
from tests.support.api import PROBLEM_JSON, bearer, problem, settings


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
        ("POST", "/api/{user_id}/conversations/{conversation_id}/items"),
        ("GET", "/api/{user_id}/conversations/{conversation_id}/items"),
        ("GET", "/api/{user_id}/conversations/{conversation_id}/items/{item_id}"),
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
