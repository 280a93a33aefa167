"""The request id and the request log: :class:`RequestContextMiddleware`."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chathistory.http.problems import REQUEST_ID_SCOPE_KEY, loggable_path

log = logging.getLogger("chathistory.http")

REQUEST_ID_HEADER: Final = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class RequestContextMiddleware:
    """Give every request an id (a sane ``X-Request-ID`` from the client, else a new one),
    return it as ``X-Request-ID`` and log one line per request with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER.lower())
        request_id = given if given and _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                '%s "%s %s" %d %.1fms request_id=%s',
                scope.get("client", ("-",))[0] if scope.get("client") else "-",
                scope["method"],
                loggable_path(scope),
                status,
                (time.perf_counter() - started) * 1000,
                request_id,
            )


__all__ = ["REQUEST_ID_HEADER", "RequestContextMiddleware"]
