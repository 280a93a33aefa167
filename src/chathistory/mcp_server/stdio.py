"""``chathistory mcp``: MCP over stdin / stdout for the one user the operator names.

The store is opened (and migrated, unless ``CHATHISTORY_MIGRATE_ON_START`` is off) before the
first message is read, with the service's limits; standard output carries only the protocol
(the SDK points file descriptor 1 at standard error while it serves), so logs and errors go to
standard error. The server stops when the client closes its end.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chathistory.config import Settings
from chathistory.mcp_server.tools import Caller, build_server
from chathistory.schemas import check_user_id
from chathistory.store import ChatHistory


async def serve_stdio(
    user_id: str, *, database_url: str, allow_delete: bool, settings: Settings
) -> None:
    """Serve the tools for ``user_id`` over stdio until the client disconnects."""
    check_user_id(user_id)
    engine_options: dict[str, Any] = settings.engine_options()
    async with ChatHistory.open(
        database_url,
        migrate=settings.migrate_on_start,
        max_content_chars=settings.max_content_chars,
        max_batch_messages=settings.max_batch_messages,
        max_response_bytes=settings.max_response_bytes,
        stream_timeout=timedelta(seconds=settings.stream_timeout_seconds),
        **engine_options,
    ) as store:
        caller = Caller(store=store, user_id=user_id)
        server = build_server(lambda _ctx: caller, allow_delete=allow_delete)
        await server.run_stdio_async()


__all__ = ["serve_stdio"]
