"""The HTTP floor: a bare ASGI app (no framework) doing what the service's hot routes do, on raw
asyncpg, so the load scenario can measure the service next to it (SPEC section 6).

Two routes, the load client's: ``GET /api/{user}/conversations/{id}/messages?order=desc&limit=N``
(one ``SELECT``) and ``POST`` of one message to the same path (the one-statement append). Each
checks the same HS256 bearer token (PyJWT, ``sub`` must be the path's user), borrows a
connection from asyncpg's own pool, and answers the same JSON shape (a list object of message
objects, or the stored message with 201). No validation beyond what the SQL needs, no token
counting: the floor is what the service could cost at the least.

    uvicorn --factory chathistory_bench.floor_app:create_app   # CHATHISTORY_FLOOR_DSN, ..._SECRET
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from chathistory.db import decode_jsonb
from chathistory.models import uuid7
from chathistory.store import search_syntax
from chathistory_bench.floors import APPEND_SQL, MESSAGE_COLUMNS, keep_session

READ_SQL = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608 - constant columns
    " WHERE conversation_id = $1 AND user_id = $2 ORDER BY seq DESC LIMIT $3"
)
Scope = dict[str, Any]


def _json(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


def _message(row: Any) -> dict[str, Any]:
    return {"object": "message", **dict(row), "sibling_count": 1, "sibling_index": 1}


class FloorApp:
    def __init__(self, dsn: str, secret: str) -> None:
        self.dsn, self.secret = dsn, secret
        self.pool: Any = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        status, body = await self._handle(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        import asyncpg

        async def codecs(conn: Any) -> None:  # the library's jsonb decoder, as its floor's
            for kind, decoder in (("json", json.loads), ("jsonb", decode_jsonb)):
                await conn.set_type_codec(
                    kind, encoder=json.dumps, decoder=decoder, schema="pg_catalog"
                )

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=2,
                    max_size=10,
                    statement_cache_size=0,
                    init=codecs,
                    reset=keep_session,  # one round trip per request, as the service's
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Any) -> tuple[int, bytes]:
        import jwt

        parts = scope["path"].split("/")  # "", "api", user, "conversations", id, "messages"
        if len(parts) != 6 or parts[1] != "api" or parts[5] != "messages":
            return 404, b'{"detail": "not found"}'
        user, conversation = parts[2], uuid.UUID(parts[4])
        headers = dict(scope["headers"])
        token = headers.get(b"authorization", b"").removeprefix(b"Bearer ")
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return 401, b'{"detail": "bad token"}'
        if claims.get("sub") != user:
            return 403, b'{"detail": "not yours"}'
        if scope["method"] == "GET":
            query = parse_qs(scope["query_string"].decode())
            limit = int(query.get("limit", ["100"])[0])
            rows = await self.pool.fetch(READ_SQL, conversation, user, limit + 1)
            data = [_message(row) for row in rows[:limit]]
            page = {
                "object": "list",
                "data": data,
                "has_more": len(rows) > limit,
                "next_cursor": None,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
            return 200, json.dumps(page, default=_json).encode()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        sent = json.loads(body)
        now = datetime.now(UTC)
        message_id = uuid7()
        stored_row = await self.pool.fetchrow(
            APPEND_SQL,
            conversation,
            user,
            now,
            message_id,
            sent["role"],
            sent["content"],
            None,
            None,
            None,
            {},
            90,
            search_syntax.tsvector_text(sent["content"]),
        )
        if stored_row is None:
            return 404, b'{"detail": "not found"}'
        seq, parent_id = stored_row
        stored = {
            "object": "message",
            "id": message_id,
            "conversation_id": conversation,
            "user_id": user,
            "seq": seq,
            "role": sent["role"],
            "content": sent["content"],
            "name": None,
            "tool_calls": None,
            "tool_call_id": None,
            "metadata": {},
            "token_count": 90,
            "created_at": now,
            "status": "completed",
            "updated_at": now,
            "parent_id": parent_id,
            "sibling_count": 1,
            "sibling_index": 1,
        }
        return 201, json.dumps(stored, default=_json).encode()


def create_app() -> FloorApp:
    return FloorApp(os.environ["CHATHISTORY_FLOOR_DSN"], os.environ["CHATHISTORY_FLOOR_SECRET"])
