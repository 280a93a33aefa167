"""uvicorn's HTTP/1.1 protocols with a bound on the request head (``max_header_bytes``).

uvicorn's httptools protocol buffers a request line and headers of any size: 30 MB of small
headers from an unauthenticated client grew the server by 400 MB. :class:`LimitedHttpToolsProtocol`
feeds the parser at most one byte past the limit at a time and answers
``431 Request Header Fields Too Large`` as soon as the bytes of a head (or of trailers) in the
making pass the limit, so an unfinished head costs at most the limit plus one byte; a head (and
trailer section) the parser completes is measured exactly, so none over the limit reaches the
app. A pipelined request that starts in the same read as the end of the previous one may buffer
up to twice the limit before it is cut. :class:`LimitedH11Protocol` (when httptools is not
installed) gets the same from h11's own bound, with a 431 instead of uvicorn's 400.

Slow clients are bounded too (uvicorn has no such bound): a connection's first request head
must arrive whole within ``header_timeout_seconds`` of the connection opening, a later one within
that time of its first byte (an idle keep-alive connection is closed after uvicorn's
``timeout_keep_alive``), and a body within ``body_timeout_seconds`` of its head; otherwise the
answer is ``408 Request Timeout`` (a connection that sent nothing is just closed). Sending a byte
now and then does not extend either. Each worker process serves at most ``max_connections``
connections at once: one more is answered ``503`` with ``Retry-After`` at once, without reading
its request, and closed.

After a 431, 408 or 503 the server sends its FIN at once and reads and discards whatever the
client is still sending until the client closes (at most :data:`LINGER_SECONDS`), so the answer
is not lost to a TCP reset. The head limit is uvicorn's ``h11_max_incomplete_event_size`` (what
:func:`uvicorn_options` sets), so it reaches every worker process with uvicorn's config; the
timeouts and the connection cap are read from the ``CHATHISTORY_*`` environment
(:class:`~chathistory.config.Settings`), which every worker process inherits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from http import HTTPStatus
from typing import Any, Final, NamedTuple

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

logger = logging.getLogger("uvicorn.error")

DEFAULT_MAX_HEADER_BYTES: Final = 32 * 1024
#: How long a rejected connection is drained (its input discarded) before it is closed.
LINGER_SECONDS: Final = 2.0

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is part of uvicorn[standard]
    HTTPTOOLS = False
else:
    HTTPTOOLS = True


def _limit(config: Config) -> int:
    return config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES


class ClientLimits(NamedTuple):
    header_timeout: float
    body_timeout: float
    max_connections: int
    retry_after: int


@functools.cache
def client_limits() -> ClientLimits:
    """The slow-client and connection bounds of this process, from the environment."""
    from chathistory.config import Settings

    settings = Settings()
    return ClientLimits(
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.max_connections,
        settings.retry_after_seconds,
    )


def _problem(
    status: HTTPStatus,
    detail: str,
    code: str,
    default_headers: list[tuple[bytes, bytes]],
    *extra: bytes,
) -> bytes:
    """A whole ``application/problem+json`` response that closes the connection."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": status.phrase,
            "status": int(status),
            "detail": detail,
            "code": code,
        }
    ).encode("ascii")
    head = [f"HTTP/1.1 {int(status)} {status.phrase}".encode("ascii")]
    head += [name + b": " + value for name, value in default_headers]
    head += [
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode("ascii"),
        *extra,
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _response_431(limit: int, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    return _problem(
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        f"the request line and headers are larger than {limit} bytes",
        "headers_too_large",
        default_headers,
    )


class _Rejecting:
    """What both protocols add: the 431, the timeouts of slow clients, the connection cap,
    and the lingering close after a refusal."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server_state: ServerState
    cycle: Any
    _head_limit: int
    _rejected: bool = False
    _linger: asyncio.TimerHandle | None = None
    _limits: ClientLimits
    _phase: str = "idle"  # "head" (a request head in the making), "body" (its body), "idle"
    _began: bool = False  # whether a byte of the request in the making has come
    _deadline: asyncio.TimerHandle | None = None

    def _guard(self) -> None:
        """On a new connection: refuse it over the cap, else time its first request head."""
        self._limits = limits = client_limits()
        if len(self.server_state.connections) > limits.max_connections:
            logger.warning("Over %d connections: 503.", limits.max_connections)
            response = _problem(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the server has {limits.max_connections} connections open, its most; "
                "retry shortly",
                "too_many_connections",
                self.server_state.default_headers,
                b"retry-after: " + str(limits.retry_after).encode("ascii"),
            )
            self._refuse(response, new_head=True)
            return
        self._expect("head")

    def _expect(self, phase: str) -> None:
        """Enter ``phase``; a head or a body must be whole before its timeout."""
        if phase == self._phase:
            return
        self._phase = phase
        self._end_deadline()
        if phase == "head":
            self._deadline = self.loop.call_later(self._limits.header_timeout, self._timed_out)
        elif phase == "body":
            self._deadline = self.loop.call_later(self._limits.body_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        if self._rejected or self.transport.is_closing():
            return
        head = self._phase == "head"
        if head and not self._began:
            self.transport.close()  # nothing of a request came: nothing to answer
            return
        what, seconds = (
            ("request line and headers", self._limits.header_timeout)
            if head
            else ("request body", self._limits.body_timeout)
        )
        logger.warning("The %s did not arrive within %g s: 408.", what, seconds)
        response = _problem(
            HTTPStatus.REQUEST_TIMEOUT,
            f"the {what} did not arrive within {seconds:g} seconds",
            "request_timeout",
            self.server_state.default_headers,
        )
        self._refuse(response, new_head=head)

    def _reject(self, *, new_head: bool) -> None:
        """Answer 431 unless another response is under way on the connection, then close."""
        if self._rejected:
            return
        logger.warning("Request head over %d bytes: 431.", self._head_limit)
        response = _response_431(self._head_limit, self.server_state.default_headers)
        self._refuse(response, new_head=new_head)

    def _refuse(self, response: bytes, *, new_head: bool) -> None:
        """Answer ``response`` unless another response is under way on the connection (then
        just close), and close after a lingering drain."""
        if self._rejected:
            return
        self._rejected = True
        self._end_deadline()
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the app reading this request's body sees a disconnect
            cycle.message_event.set()
        elif cycle is not None and not (cycle.response_complete and new_head):
            self.transport.close()  # mid-response: no way to answer
            return
        self.transport.write(response)
        if not self.transport.can_write_eof():  # pragma: no cover - TCP can
            self.transport.close()
            return
        self.transport.write_eof()  # FIN after the answer; keep reading so no RST discards it
        self.transport.resume_reading()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def eof_received(self) -> None:
        if self._rejected:
            self.transport.close()  # the client is done sending: the answer has gone out

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_linger()
        self._end_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _end_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _end_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request whose head is over the limit."""


if HTTPTOOLS:

    class LimitedHttpToolsProtocol(_Rejecting, HttpToolsProtocol):
        """httptools, with each request's line, headers and trailers bounded.

        Bytes are fed to the parser at most one past the limit at a time. A run of pieces with
        no body byte and no end of a request in them (a head or trailers in the making) may
        not pass the limit; a completed head, and the trailers, are measured exactly when the
        parser hands them over.
        """

        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._head_limit = _limit(config)
            self._non_body = 0  # bytes fed since the last body byte or end of a request
            self._in_head = True
            self._piece_body = 0
            self._piece_completed = False
            self._too_large = False
            self._too_large_head = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._guard()

        def data_received(self, data: bytes) -> None:
            if self._rejected:
                return  # draining after a refusal
            if self._phase == "idle":
                self._expect("head")  # any byte starts the clock (blank lines included)
            limit = self._head_limit
            while data:
                step = limit - self._non_body + 1
                piece, data = (data, b"") if len(data) <= step else (data[:step], data[step:])
                self._piece_body = 0
                self._piece_completed = False
                super().data_received(piece)
                if self._rejected or self.transport.is_closing():
                    return  # answered: a 431 (from a parser callback), or a 400
                if self.transport.get_protocol() is not self:
                    return  # upgraded
                if self._piece_completed or self._piece_body:
                    # Where in the piece the body or the request ended is unknown: count afresh
                    # (so a pipelined request may buffer up to twice the limit, never more).
                    self._non_body = 0
                else:
                    self._non_body += len(piece)
                if self._non_body > limit:
                    self._reject(new_head=self._in_head)
                    return

        def _check_fields(self, *, head: bool) -> None:
            size = sum(len(name) + len(value) + 4 for name, value in self.headers) + 2
            if head:
                size += len(self.parser.get_method()) + len(self.url) + 12
            if size > self._head_limit:
                self._too_large = True
                self._too_large_head = head
                raise _HeadTooLarge

        def on_message_begin(self) -> None:
            self._in_head = True
            self._began = True
            self._expect("head")
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._check_fields(head=True)
            self._in_head = False
            self._expect("body")
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._piece_body += len(body)
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._check_fields(head=False)  # uvicorn adds the trailers to the headers
            self._in_head = True
            self._piece_completed = True
            self._expect("idle")
            self._began = False
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._reject(new_head=self._too_large_head)
            else:
                super().send_400_response(msg)


class _BoundedConnection(h11.Connection):
    """h11 bounds incomplete events; this also bounds a head (or trailer section) that arrived
    whole in one read, and remembers whether an error was a head too large."""

    def __init__(self, limit: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limit)
        self.limit = limit
        self.too_large = False
        self.in_head = True

    def next_event(self) -> Any:
        self.in_head = self.their_state is h11.IDLE
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.too_large = exc.error_status_hint == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            raise
        if isinstance(event, h11.Request):
            size = len(event.method) + len(event.target) + 12 + _fields_size(event.headers)
        elif isinstance(event, h11.EndOfMessage):
            size = _fields_size(event.headers)
        else:
            return event
        if size > self.limit:
            self.too_large = True
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


def _fields_size(headers: Any) -> int:
    """Bytes of a header section as sent, less any optional whitespace around values."""
    return sum(len(name) + len(value) + 4 for name, value in headers.raw_items()) + 2


class LimitedH11Protocol(_Rejecting, H11Protocol):
    """h11, answering 431 (not 400) to a head over the limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_limit = _limit(config)
        self.conn = self._bounded = _BoundedConnection(self._head_limit)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard()

    def data_received(self, data: bytes) -> None:
        if not self._rejected:  # else: draining after a refusal
            if self._phase == "idle":
                self._expect("head")  # any byte starts the clock (blank lines included)
            super().data_received(data)
            self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._rejected:
            self._track()

    def _track(self) -> None:
        """The phase of the request in the making, from h11's state."""
        if self.transport.is_closing():
            return
        state = self._bounded.their_state
        if state is h11.SEND_BODY:
            self._began = True
            self._expect("body")
        elif state is h11.IDLE:
            if self._bounded.trailing_data[0]:  # part of a head
                self._began = True
                self._expect("head")
        else:  # the request is whole (or the connection is done)
            self._expect("idle")
            self._began = False

    def send_400_response(self, msg: str) -> None:
        if self._bounded.too_large:
            self._reject(new_head=self._bounded.in_head)
        else:
            super().send_400_response(msg)


def uvicorn_options(max_header_bytes: int) -> dict[str, Any]:
    """The ``uvicorn.run`` options that bound request heads to ``max_header_bytes``."""
    protocol = "LimitedHttpToolsProtocol" if HTTPTOOLS else "LimitedH11Protocol"
    return {
        "http": f"{__name__}:{protocol}",
        "h11_max_incomplete_event_size": max_header_bytes,
    }


__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "ClientLimits",
    "LimitedH11Protocol",
    "client_limits",
    "uvicorn_options",
]
