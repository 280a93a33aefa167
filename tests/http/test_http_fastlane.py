"""The fast lane of the hot reads and appends answers exactly as the routes do, and leaves
everything else to them; ``fast_lane`` alone decides which path answers; the verifier's memory
of tokens ends with the token."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
import jwt
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from chathistory import ChatHistory
from chathistory.config import Settings
from chathistory.http import HTTPProblem, JWTVerifier, create_app
from chathistory.http import auth as auth_module
from chathistory.http.middleware import FastLane
from tests.fixtures.http import SECRET


def token(sub: str, **claims: Any) -> str:
    """A token of its own (a fresh ``jti``): its first request verifies it."""
    payload = {"sub": sub, "exp": int(time.time()) + 300, "jti": uuid.uuid4().hex} | claims
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class Counted:
    """Counts the requests the fast lane passes on to the FastAPI app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.passed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.passed += 1
        await self.app(scope, receive, send)


def count_passed(app: FastAPI) -> Counted:
    app.middleware_stack = app.build_middleware_stack()
    layer: Any = app.middleware_stack
    while not isinstance(layer, FastLane):
        layer = layer.app
    layer.app = Counted(layer.app)
    return layer.app


class Lane(NamedTuple):
    http: httpx.AsyncClient
    """A client of the app with its fast lane."""
    counted: Counted
    """What that app's lane passed on to FastAPI."""
    app: FastAPI
    routes: httpx.AsyncClient
    """A client of an app on the same store without the lane: FastAPI answers everything."""


@pytest.fixture
async def lane(store: ChatHistory, asgi_client: Callable[..., httpx.AsyncClient]) -> Lane:
    app = create_app(Settings(jwt_secret=SECRET, jwt_jwks_url=None), store=store)
    counted = count_passed(app)
    without = create_app(
        Settings(jwt_secret=SECRET, jwt_jwks_url=None, fast_lane=False), store=store
    )
    return Lane(
        asgi_client(app, raise_app_exceptions=False),
        counted,
        app,
        asgi_client(without, raise_app_exceptions=False),
    )


def same(route: httpx.Response, fast: httpx.Response) -> None:
    assert fast.status_code == route.status_code, (route.text, fast.text)
    assert fast.content == route.content
    without_id = [(k, v) for k, v in route.headers.items() if k != "x-request-id"]
    assert [(k, v) for k, v in fast.headers.items() if k != "x-request-id"] == without_id
    assert fast.headers["x-request-id"]


async def twice(
    lane: Lane, method: str, path: str, user: str, **kw: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The same request through the route (the app without the lane), then the fast lane."""
    headers = bearer(token(user)) | kw.pop("headers", {})
    route = await lane.routes.request(method, path, headers=headers, **kw)
    before = lane.counted.passed
    fast = await lane.http.request(method, path, headers=headers, **kw)
    assert lane.counted.passed == before, "the fast lane passed it on"
    return route, fast


async def conversation(http: httpx.AsyncClient, user: str) -> str:
    created = await http.post(f"/api/{user}/conversations", json={}, headers=bearer(token(user)))
    assert created.status_code == 201
    return str(created.json()["id"])


async def test_reads_answer_as_the_route(lane: Lane, user: str) -> None:
    http = lane.http
    conv = await conversation(http, user)
    path = f"/api/{user}/conversations/{conv}/messages"
    for query in ("", "?order=desc&limit=2", "?limit=100&order=asc"):
        route, fast = await twice(lane, "GET", path + query, user)
        same(route, fast)  # an empty page
    sent = [{"role": "user", "content": f"m{n} é ✓"} for n in range(3)]
    assert (await http.post(path, json=sent, headers=bearer(token(user)))).status_code == 201
    for query in ("", "?order=desc&limit=2", "?limit=1"):
        route, fast = await twice(lane, "GET", path + query, user)
        same(route, fast)
        assert route.json()["data"]


async def test_appends_answer_as_the_route(lane: Lane, user: str) -> None:
    http, counted = lane.http, lane.counted
    conv = await conversation(http, user)
    path = f"/api/{user}/conversations/{conv}/messages"
    single = {"id": str(uuid.uuid4()), "role": "user", "content": "hello"}
    batch = [
        {"id": str(uuid.uuid4()), "role": "user", "content": "a"},
        {"id": str(uuid.uuid4()), "role": "assistant", "content": "b"},
    ]
    for body in (single, batch):
        stored, replayed = await twice(lane, "POST", path, user, json=body)
        assert (stored.status_code, replayed.status_code) == (201, 200)
        if body is single:  # the new message's path; a batch's resource is the list itself
            assert stored.headers["location"] == f"{path}/{single['id']}"
        else:
            assert "location" not in stored.headers
        assert "location" not in replayed.headers
        route, fast = await twice(lane, "POST", path, user, json=body)
        same(route, fast)  # replays, 200
        assert replayed.content == route.content
    mine = bearer(token(user))
    fresh = {"role": "user", "content": "new"}
    by_route = await lane.routes.post(path, json=fresh, headers=mine)
    passed = counted.passed
    by_lane = await http.post(path, json=fresh, headers=mine)
    assert counted.passed == passed
    assert (by_route.status_code, by_lane.status_code) == (201, 201)
    assert by_lane.headers["content-type"] == by_route.headers["content-type"]
    names = [
        [name for name in answer.headers if name != "x-request-id"]
        for answer in (by_route, by_lane)
    ]
    assert names[0] == names[1] == ["content-length", "content-type", "location"]
    for answer in (by_route, by_lane):
        assert answer.headers["location"] == f"{path}/{answer.json()['id']}"
    assert by_lane.json().keys() == by_route.json().keys()
    assert by_lane.json()["seq"] == by_route.json()["seq"] + 1


async def test_errors_of_the_store_are_the_routes(lane: Lane, user: str) -> None:
    http = lane.http
    conv = await conversation(http, user)
    path = f"/api/{user}/conversations/{conv}/messages"
    missing = f"/api/{user}/conversations/{uuid.uuid4()}/messages"
    taken = {"id": str(uuid.uuid4()), "role": "user", "content": "first"}
    assert (await http.post(path, json=taken, headers=bearer(token(user)))).status_code == 201
    cases: list[tuple[str, str, Any, int]] = [
        ("GET", missing, None, 404),
        ("POST", missing, {"role": "user", "content": "x"}, 404),
        ("POST", path, {"role": "nobody", "content": "x"}, 422),
        ("POST", path, [{"role": "user", "content": "x"}, {"role": "tool"}], 422),
        ("POST", path, [], 422),
        ("POST", path, taken | {"content": "changed"}, 409),
    ]
    for method, where, body, status in cases:
        kw = {} if body is None else {"json": body}
        route, fast = await twice(lane, method, where, user, **kw)
        assert route.status_code == status, route.text
        assert route.headers["content-type"] == "application/problem+json"
        same(route, fast)


async def test_a_bug_is_the_apps_500(
    lane: Lane,
    store: ChatHistory,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http = lane.http
    conv = await conversation(http, user)
    path = f"/api/{user}/conversations/{conv}/messages"

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "list_messages", broken)
    mine = bearer(token(user)) | {"X-Request-ID": "bug-2"}
    route, fast = await twice(lane, "GET", path, user, headers=mine)
    for response in (route, fast):
        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"
        assert response.headers["x-request-id"] == "bug-2"
    assert fast.content == route.content


async def test_what_the_lane_leaves_to_the_routes(lane: Lane, user: str, other_user: str) -> None:
    http, counted, app = lane.http, lane.counted, lane.app
    conv = await conversation(http, user)
    path = f"/api/{user}/conversations/{conv}/messages"
    warm = bearer(token(user))
    assert (await http.get(path, headers=warm)).status_code == 200
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", path + "?limit=0", {}, 422),
        ("GET", path + "?limit=101", {}, 422),
        ("GET", path + "?limit=050", {}, 200),
        ("GET", path + "?order=sideways", {}, 422),
        ("GET", path + "?limit=5&limit=6", {}, 200),
        ("GET", path + "?cursor=nonsense", {}, 400),
        ("GET", path + f"?after={uuid.uuid4()}", {}, 400),
        ("GET", path + "?unknown=1", {}, 200),
        ("GET", path.upper().replace("/API/", "/api/", 1), {}, 404),
        ("GET", path + "/", {}, 404),
        ("PUT", path, {}, 405),
        ("POST", path, {"content": b"{nope", "headers": json_type}, 400),
        ("POST", path, {"content": b"", "headers": json_type}, 422),
        ("POST", path, {"content": b'"text"', "headers": json_type}, 422),
        ("POST", path, {"content": b'{"role": "user"}', "headers": {}}, 415),
        (
            "POST",
            path,
            {"content": b'{"role": "user"}', "headers": {"Content-Type": "text/json"}},
            415,
        ),
        ("GET", f"/api/{other_user}/conversations/{conv}/messages", {}, 403),
    ]
    for method, where, kw, status in cases:
        passed = counted.passed
        headers = warm | kw.pop("headers", {})
        response = await http.request(method, where, headers=headers, **kw)
        assert response.status_code == status, (method, where, response.text)
        assert counted.passed == passed + 1, (method, where)
    for bad in ("Basic abc", "Bearer", "bearer   ", ""):
        response = await http.get(path, headers={"Authorization": bad})
        assert response.status_code == 401
    app.dependency_overrides[object] = object  # any override: the routes decide everything
    passed = counted.passed
    assert (await http.get(path, headers=warm)).status_code == 200
    assert counted.passed == passed + 1


async def test_a_remembered_token_ends_with_its_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = JWTVerifier(secret=SECRET, leeway_seconds=0)
    expiring = jwt.encode({"sub": "u", "exp": int(time.time()) + 1}, SECRET, algorithm="HS256")
    principal = await verifier.verify(expiring)
    assert verifier.remembered(expiring) is principal
    assert await verifier.verify(expiring) is principal
    expires = jwt.decode(expiring, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    assert verifier.remembered(expiring) is None
    with pytest.raises(HTTPProblem) as refused:
        await verifier.verify(expiring)
    assert refused.value.status == 401
    assert refused.value.detail == "the token has expired"
    # Bounded: the least recently used token goes first.
    monkeypatch.setattr(auth_module, "VERIFIED_TOKENS", 2)
    tokens = [jwt.encode({"sub": f"u{n}", "exp": int(time.time()) + 60}, SECRET) for n in range(3)]
    for value in tokens:
        await verifier.verify(value)
    assert verifier.remembered(tokens[0]) is None
    assert verifier.remembered(tokens[1]) is not None
    assert verifier.remembered(tokens[2]) is not None


async def test_a_tokens_first_request_takes_the_lane(
    lane: Lane, user: str, other_user: str
) -> None:
    """The lane verifies a token it has not seen with the route's verifier (no FastAPI
    routing for a user's first turn on a worker); one that does not verify, or is not the
    path's user's, goes on to the route, which refuses it."""
    http, counted = lane.http, lane.counted
    conv = await conversation(http, user)
    path = f"/api/{user}/conversations/{conv}/messages"
    before = counted.passed
    assert (await http.get(path, headers=bearer(token(user)))).status_code == 200
    sent = await http.post(
        path, json={"role": "user", "content": "hi"}, headers=bearer(token(user))
    )
    assert sent.status_code == 201
    assert counted.passed == before
    forged = jwt.encode({"sub": user, "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    for headers, status in ((bearer(forged), 401), (bearer(token(other_user)), 403)):
        assert (await http.get(path, headers=headers)).status_code == status
    assert counted.passed == before + 2


# -- the setting: which path answers, and that both answer alike --------------------------------


class Routed:
    """The whole app, noting for each HTTP request the operation FastAPI's router gave it
    (``scope["route"]``, which only Starlette's router sets), ``None`` when no route saw it:
    the fast lane answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.operations: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.operations.append(getattr(scope.get("route"), "operation_id", None))


def routed_app(store: ChatHistory, *, fast_lane: bool) -> Routed:
    settings = Settings(jwt_secret=SECRET, jwt_jwks_url=None, fast_lane=fast_lane)
    return Routed(create_app(settings, store=store))


def hot_requests(user: str, conv: str) -> list[tuple[str, str, Any, int]]:
    """Requests the lane takes when it is on: reads, appends (new, replayed, one, a batch) and
    what the store refuses (404, 409, 422)."""
    path = f"/api/{user}/conversations/{conv}/messages"
    missing = f"/api/{user}/conversations/{uuid.uuid4()}/messages"
    one = {"id": str(uuid.uuid4()), "role": "user", "content": "hé ✓"}
    batch = [{"id": str(uuid.uuid4()), "role": "assistant", "content": "b"}]
    return [
        ("GET", path, None, 200),
        ("POST", path, one, 201),
        ("POST", path, one, 200),
        ("POST", path, batch, 201),
        ("POST", path, batch, 200),
        ("GET", path + "?order=desc&limit=1", None, 200),
        ("GET", missing, None, 404),
        ("POST", missing, {"role": "user", "content": "x"}, 404),
        ("POST", path, one | {"content": "changed"}, 409),
        ("POST", path, {"role": "nobody", "content": "x"}, 422),
        ("POST", path, [], 422),
    ]


async def test_the_setting_alone_chooses_the_path(
    store: ChatHistory, user: str, fast_lane: bool, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    """With ``fast_lane`` on, the lane answers every hot request, a token's first or not;
    with it off, FastAPI's routes do. Any other request is the routes' either way."""
    app = routed_app(store, fast_lane=fast_lane)
    http = asgi_client(app, raise_app_exceptions=False)
    again = bearer(token(user))
    conv = await conversation(http, user)
    assert app.operations == ["createConversation"]
    for method, path, body, status in hot_requests(user, conv):
        for headers in (bearer(token(user)), again):  # a token never seen, one remembered
            kw = {} if body is None else {"json": body}
            response = await http.request(method, path, headers=headers, **kw)
            if status == 201 and headers is again:
                status = 200  # the same append again: a replay
            assert response.status_code == status, (method, path, response.text)
            operation = {"GET": "listMessages", "POST": "addMessages"}[method]
            assert app.operations[-1] == (None if fast_lane else operation), (method, path)
    assert (await http.get(f"/api/{user}/conversations/{conv}", headers=again)).status_code == 200
    assert app.operations[-1] == "getConversation"


async def test_both_paths_answer_alike(
    store: ChatHistory, user: str, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    """The same request, through FastAPI then through the lane (two apps on one store),
    answers with the same status, headers and bytes; an append that stores, whose id and
    clock are its own, alike but for them."""
    via_route, via_lane = routed_app(store, fast_lane=False), routed_app(store, fast_lane=True)
    route_http = asgi_client(via_route, raise_app_exceptions=False)
    lane_http = asgi_client(via_lane, raise_app_exceptions=False)
    mine = bearer(token(user))
    convs = [await conversation(route_http, user) for _ in range(2)]
    renames = {convs[1]: convs[0]}  # the lane's ids to the route's, gathered as they come
    for method, path, body, status in hot_requests(user, convs[0]):
        kw = {} if body is None else {"json": body}
        if status == 201:  # stores: each path stores its own, in a conversation of its own
            other = path.replace(convs[0], convs[1])
            route = await route_http.request(method, path, headers=mine, **kw)
            fast = await lane_http.request(method, other, headers=mine, **_fresh(kw))
            alike_but_ids(route, fast, renames)
        else:  # changes nothing: the very same request twice
            route = await route_http.request(method, path, headers=mine, **kw)
            fast = await lane_http.request(method, path, headers=mine, **kw)
            same(route, fast)
        assert route.status_code == status, (method, path, route.text)
        assert via_route.operations[-1] is not None and via_lane.operations[-1] is None
    messages = f"/api/{user}/conversations/{convs[0]}/messages"
    pages = [await http.get(messages, headers=mine) for http in (route_http, lane_http)]
    same(*pages)
    assert len(pages[0].json()["data"]) == 2


def _fresh(kw: dict[str, Any]) -> dict[str, Any]:
    """The same body with new message ids."""
    sent = kw["json"]
    if isinstance(sent, dict):
        return {"json": sent | {"id": str(uuid.uuid4())}}
    return {"json": [m | {"id": str(uuid.uuid4())} for m in sent]}


def alike_but_ids(route: httpx.Response, fast: httpx.Response, ids: dict[str, str]) -> None:
    """Equal once the lane's answer has the route's message ids, timestamps and conversation
    (``ids``: the lane's ids to the route's, this answer's added to it)."""
    sent, got = route.json(), fast.json()
    mine = sent["data"] if sent.get("object") == "list" else [sent]
    theirs = got["data"] if got.get("object") == "list" else [got]
    for field in ("id", "created_at"):
        ids |= {str(b[field]): str(a[field]) for a, b in zip(mine, theirs, strict=True)}

    def renamed(value: str) -> str:
        for old, new in ids.items():
            value = value.replace(old, new)
        return value

    assert fast.status_code == route.status_code
    assert renamed(fast.text) == route.text
    names = [k for k in route.headers if k != "x-request-id"]
    assert [k for k in fast.headers if k != "x-request-id"] == names
    for name in names:
        if name != "content-length":  # a timestamp's digits may differ in number
            assert renamed(fast.headers[name]) == route.headers[name], name
    for answer in (route, fast):
        assert int(answer.headers["content-length"]) == len(answer.content)
