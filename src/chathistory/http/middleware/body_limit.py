"""The bound on request bodies: :class:`BodyLimitMiddleware` (413 before reading too much)."""

from __future__ import annotations

import re
from contextlib import suppress

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chathistory.http.problems import HTTPProblem, problem_response

_DIGITS = re.compile(r"[0-9]{1,19}")


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 to a body over ``max_bytes``: at once when ``Content-Length`` says so, else
    as soon as the bytes received pass the limit (nothing beyond it is read)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPProblem:
        return HTTPProblem(
            413, f"the request body is larger than {self.max_bytes} bytes", code="body_too_large"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):
                problem = HTTPProblem(400, "the Content-Length header is not a number")
                await problem_response(problem)(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await problem_response(self._too_large())(scope, receive, send)
                return
        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded and not response_started:
                return  # whatever the app made of the interrupted read: the 413 goes instead
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        with suppress(_BodyTooLarge):  # the app let the interrupted read escape
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not response_started:
            await problem_response(self._too_large())(scope, receive, send)


__all__ = ["BodyLimitMiddleware"]
