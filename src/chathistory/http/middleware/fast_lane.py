"""The service's two hot paths without FastAPI's per-request machinery (SPEC section 6: the
service close to its bare-ASGI floor).

:class:`FastLane` is a pure ASGI middleware of :func:`~chathistory.http.app.create_app`'s app,
inside the request-id and body-limit middleware. It answers a request itself only when it can
answer exactly as the route would, and then with the route's own answer: both call the one
function of :mod:`chathistory.http.answers` that makes the store call and renders the status,
headers and body (the lane sends those bytes as they are, the route returns them as a
response). It takes a request when all of these hold:

- ``GET`` or ``POST`` on ``/api/{user_id}/conversations/{conversation_id}/messages``, the id a
  canonical UUID, no ``root_path``, no dependency overrides;
- a bearer token that verifies (the route's own verifier, which remembers a token it verified
  with the shared secret until it expires), whose ``sub`` is the path's user;
- ``GET``: a query of at most ``limit`` (1 to 100, plain digits) and ``order`` (``asc`` or
  ``desc``), each once;
- ``POST``: a body sent as ``application/json`` that is a JSON object or array.

Anything else goes on to the FastAPI app unchanged (a body read here is replayed), so every
refusal the route makes before calling the store (401, 403, 415, 400, 422 of a parameter) is
the route's own. What the store raises is rendered by :func:`problem_response`, as the route
class renders it; a bug propagates to the app's 500 handler as from a route.

``CHATHISTORY_FAST_LANE=false`` (:attr:`~chathistory.config.Settings.fast_lane`) leaves it out
of the app: every request then goes through FastAPI.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import deque
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chathistory.http.answers import Answer, add_messages_answer, list_messages_answer
from chathistory.http.auth import JWTVerifier
from chathistory.http.problems import problem_from_exception, problem_response
from chathistory.http.requests import strict_json_loads
from chathistory.store import MAX_PAGE
from chathistory.store.reading import Order

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_LIMIT: Final = re.compile(rb"[1-9][0-9]{0,2}")
_ORDERS: Final[dict[bytes, Order]] = {b"asc": "asc", b"desc": "desc"}
_JSON_TYPES: Final = frozenset({"application/json", "application/json; charset=utf-8"})


class FastLane:
    """Answer the hot reads and appends of messages directly (see the module)."""

    def __init__(self, app: ASGIApp, *, verifier: JWTVerifier, retry_after_seconds: int) -> None:
        self.app = app
        self.verifier = verifier
        self.retry_after_seconds = retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")  # "", "api", user, "conversations", id, "messages"
        if (
            len(parts) != 6
            or parts[1] != "api"
            or parts[3] != "conversations"
            or parts[5] != "messages"
            or not parts[2]
            or not _UUID.fullmatch(parts[4])
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        host = scope.get("app")
        store = getattr(getattr(host, "state", None), "store", None)
        if store is None or getattr(host, "dependency_overrides", None):
            await self.app(scope, receive, send)
            return
        user_id = parts[2]
        if not await self._owner(scope, user_id):
            await self.app(scope, receive, send)
            return
        conversation_id = uuid.UUID(parts[4])
        if scope["method"] == "GET":
            query = _list_query(scope["query_string"])
            if query is None:
                await self.app(scope, receive, send)
                return
            limit, order = query
            try:
                answer = await list_messages_answer(
                    store, user_id, conversation_id, limit=limit, order=order
                )
            except Exception as exc:
                await self._problem(exc, scope, receive, send)
                return
            await _send(send, answer)
            return
        if _content_type(scope) not in _JSON_TYPES:
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        sent = _json_body(await _read_body(receive, received))
        if sent is None:
            await self.app(scope, _replaying(received, receive), send)
            return
        try:
            answer = await add_messages_answer(store, scope, user_id, conversation_id, sent)
        except Exception as exc:
            await self._problem(exc, scope, receive, send)
            return
        await _send(send, answer)

    async def _owner(self, scope: Scope, user_id: str) -> bool:
        """Whether the request carries a bearer token of ``user_id`` that verifies (read as
        FastAPI's ``HTTPBearer`` reads it: the first Authorization header), by the route's own
        verifier: a token it remembers costs a lookup, another one its verification. A token
        that does not verify goes on to the route, which refuses it in its own words."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, param = value.decode("latin-1").partition(" ")
                token = param.strip()
                if not token or scheme.lower() != "bearer":
                    return False
                principal = self.verifier.remembered(token)
                if principal is None:
                    try:
                        principal = await self.verifier.verify(token)
                    except Exception:  # the route verifies it again, and answers
                        return False
                return principal.owns(user_id)
        return False

    async def _problem(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        problem = problem_from_exception(exc)
        if problem is None:
            raise exc
        response = problem_response(problem, retry_after_seconds=self.retry_after_seconds)
        await response(scope, receive, send)


def _list_query(query_string: bytes) -> tuple[int, Order] | None:
    """``limit`` and ``order`` of a plain query, or ``None`` for any other query."""
    limit: int = MAX_PAGE
    order: Order = "asc"
    if not query_string:
        return limit, order
    seen: set[bytes] = set()
    for pair in query_string.split(b"&"):
        name, equals, value = pair.partition(b"=")
        if not equals or name in seen:
            return None
        seen.add(name)
        if name == b"limit" and _LIMIT.fullmatch(value) and int(value) <= MAX_PAGE:
            limit = int(value)
        elif name == b"order" and value in _ORDERS:
            order = _ORDERS[value]
        else:
            return None
    return limit, order


def _content_type(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1").lower())
    return None


async def _read_body(receive: Receive, received: list[Message]) -> bytes | None:
    """The whole body (``None`` if the client went away first); every message received is
    kept in ``received``, for a replay."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json_body(body: bytes | None) -> Any:
    """The JSON object or array sent, else ``None`` (the route says what is wrong)."""
    if not body:
        return None
    try:
        sent = strict_json_loads(body)
    except json.JSONDecodeError:
        return None
    return sent if isinstance(sent, dict | list) else None


def _replaying(received: list[Message], receive: Receive) -> Receive:
    pending = deque(received)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


async def _send(send: Send, answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})


__all__ = ["FastLane"]
