"""Browser and typed clients (SPEC 13): CORS, a 405 that names the path's real methods, the
``object`` of every object, and ``py.typed``."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import jwt
import pytest

from chathistory import ChatHistory
from chathistory.config import Settings
from chathistory.http import create_app
from tests.fixtures.http import SECRET, asgi_client

ORIGIN = "https://app.example"


def auth(user: str) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 300}, SECRET, "HS256")
    return {"Authorization": f"Bearer {token}"}


async def client_for(store: ChatHistory, fast_lane: bool, **settings: str) -> httpx.AsyncClient:
    app = create_app(
        Settings(jwt_secret=SECRET, fast_lane=fast_lane, **settings),  # type: ignore[arg-type]
        store=store,
    )
    return asgi_client(app)


@pytest.fixture
async def browser(store: ChatHistory, fast_lane: bool) -> AsyncIterator[httpx.AsyncClient]:
    origins = f"{ORIGIN}, https://other.example"
    async with await client_for(store, fast_lane, cors_origins=origins) as http:
        yield http


async def test_preflight_and_exposed_headers(browser: httpx.AsyncClient, user: str) -> None:
    path = f"/api/{user}/conversations"
    preflight = await browser.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert {"GET", "POST", "PATCH", "DELETE"} <= {
        m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")
    }
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("authorization", "content-type", "x-request-id"))

    created = await browser.post(path, json={}, headers={"Origin": ORIGIN, **auth(user)})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == ORIGIN
    exposed = created.headers["access-control-expose-headers"].lower()
    assert all(h in exposed for h in ("x-request-id", "retry-after", "location"))
    # An error answer carries CORS too, so the browser lets the app read the problem.
    missing = await browser.get(f"{path}/{uuid.uuid4()}", headers={"Origin": ORIGIN, **auth(user)})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == ORIGIN


async def test_other_origins_get_no_cors(browser: httpx.AsyncClient, user: str) -> None:
    response = await browser.get(
        f"/api/{user}/conversations", headers={"Origin": "https://evil.example", **auth(user)}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await browser.options(
        f"/api/{user}/conversations",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_no_cors_by_default_and_405_names_the_real_methods(
    store: ChatHistory, user: str, fast_lane: bool
) -> None:
    async with await client_for(store, fast_lane) as http:
        conv = (await http.post(f"/api/{user}/conversations", json={}, headers=auth(user))).json()
        cases = {
            f"/api/{user}/conversations": ("PUT", "GET, POST"),
            f"/api/{user}/conversations/{conv['id']}": ("POST", "GET, PATCH, DELETE"),
            f"/api/{user}/conversations/{conv['id']}/messages": ("DELETE", "GET, POST"),
            f"/api/{user}": ("GET", "DELETE"),
        }
        for path, (method, allow) in cases.items():
            response = await http.request(method, path, headers=auth(user))
            assert response.status_code == 405, (path, response.text)
            assert response.headers["allow"] == allow, path
        preflight = await http.options(
            f"/api/{user}/conversations",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 405
        assert "access-control-allow-origin" not in preflight.headers


async def test_every_object_says_what_it_is(store: ChatHistory, user: str, fast_lane: bool) -> None:
    async with await client_for(store, fast_lane) as http:
        headers = auth(user)
        conv = (await http.post(f"/api/{user}/conversations", json={}, headers=headers)).json()
        assert conv["object"] == "conversation"
        path = f"/api/{user}/conversations/{conv['id']}"
        one = (
            await http.post(
                f"{path}/messages", json={"role": "user", "content": "hi"}, headers=headers
            )
        ).json()
        assert one["object"] == "message"
        batch = (
            await http.post(
                f"{path}/messages", json=[{"role": "assistant", "content": "yo"}], headers=headers
            )
        ).json()
        assert batch["object"] == "list" and batch["data"][0]["object"] == "message"
        listed = (await http.get(f"/api/{user}/conversations", headers=headers)).json()
        assert listed["object"] == "list" and listed["data"][0]["object"] == "conversation"
        window = (await http.get(f"{path}/context?max_tokens=100", headers=headers)).json()
        assert window["object"] == "context_window"
    conv_id = uuid.UUID(conv["id"])
    stored = await store.get_message(user, conv_id, uuid.UUID(one["id"]))
    assert stored.object == "message" and "object" not in stored.to_openai()
    assert (await store.get_conversation(user, conv_id)).object == "conversation"


def test_the_package_is_typed() -> None:
    assert resources.files("chathistory").joinpath("py.typed").is_file()
