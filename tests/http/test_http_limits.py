"""The served HTTP face against hostile and unusual requests (red-team report, issue 9).

A real server process on a real port, spoken to over raw sockets: request heads over
``CHATHISTORY_MAX_HEADER_BYTES`` (431 and the connection closed, after reading at most one byte
past the limit), with both of uvicorn's HTTP/1.1 implementations; no redirect built from the
client's ``Host``; context windows for models whose tokenizer tables are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from chathistory.config import Settings
from chathistory.http.server import DEFAULT_MAX_HEADER_BYTES, uvicorn_options
from tests.fixtures.http import SECRET

LIMIT = 16 * 1024  # not the default: the setting must reach the server
USER = "limits-user"
TIMEOUT = 30.0  # a failure deadline for each socket read, never a synchronisation


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``chathistory serve`` (httptools), or uvicorn with the h11 protocol of chathistory."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    env |= {"CHATHISTORY_JWT_SECRET": SECRET, "CHATHISTORY_MAX_HEADER_BYTES": str(LIMIT)}
    if request.param == "httptools":
        command = ["-m", "chathistory.cli", "serve", "--port", str(port)]
    else:
        command = [
            *("-m", "uvicorn", "--factory", "chathistory.http.app:create_app"),
            *("--port", str(port), "--http", "chathistory.http.server:LimitedH11Protocol"),
            *("--h11-max-incomplete-event-size", str(LIMIT)),
        ]
    output = (tmp_path_factory.mktemp("serve") / "output.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=tmp_path_factory.mktemp("cwd"),
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    served = Server(port, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the server exited early"
            try:
                if httpx.get(f"{served.base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)  # polling a starting process, not synchronising tests
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        output.close()
        log = Path(output.name).read_text(errors="replace")
        assert "Traceback" not in log, log


def bearer() -> dict[str, str]:
    claims = {"sub": USER, "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(TIMEOUT)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def exchange(server: Server, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(payload)
        return read_to_eof(sock)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), headers, body)


def assert_431(response: Response) -> None:
    assert response.status == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    problem = response.json()
    assert problem["status"] == 431
    assert problem["code"] == "headers_too_large"
    assert str(LIMIT) in problem["detail"]


def head_of(size: int, *, many: bool = False, end: bool = False) -> bytes:
    """A request head of exactly ``size`` bytes (with its blank line when ``end``): one large
    header, or many small ones."""
    start = b"GET /healthz HTTP/1.1\r\nHost: limits.test\r\nConnection: close\r\n"
    tail = b"\r\n" if end else b""
    room = size - len(start) - len(tail)
    if many:
        line = b"X-Many: " + b"m" * 22 + b"\r\n"  # 32 bytes a header
        count, rest = divmod(room, len(line))
        if rest < 7:  # room for at least "X-L: " and its line end
            count, rest = count - 1, rest + len(line)
        body = line * count + b"X-L: " + b"l" * (rest - 7) + b"\r\n"
    else:
        body = b"X-Large: " + b"a" * (room - 11) + b"\r\n"
    head = start + body + tail
    assert len(head) == size
    return head


# -- item 8: request heads are bounded ----------------------------------------------------------


@pytest.mark.parametrize("many", [False, True], ids=["one-large-header", "many-headers"])
def test_an_unfinished_head_one_byte_over_the_limit_is_answered_431(
    server: Server, many: bool
) -> None:
    """The client sends LIMIT + 1 bytes of a head and nothing else: the server answers 431 and
    closes (without the limit it would wait for the rest, buffering whatever comes)."""
    payload = head_of(LIMIT + 1, many=many)
    assert b"\r\n\r\n" not in payload
    assert_431(parse(exchange(server, payload)))  # read to EOF: the server closed


@pytest.mark.parametrize("many", [False, True], ids=["one-large-header", "many-headers"])
def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_not(
    server: Server, many: bool
) -> None:
    served = parse(exchange(server, head_of(LIMIT, many=many, end=True)))
    assert served.status == 200
    assert served.json() == {"status": "ok"}
    assert_431(parse(exchange(server, head_of(LIMIT + 1, many=many, end=True))))


def test_a_flood_of_header_bytes_is_read_and_dropped(server: Server) -> None:
    """30 MB of headers (the report's attack): answered after LIMIT + 1 bytes; the rest is read
    and discarded, so the server does not grow."""
    flood = 30 * 1024 * 1024
    exchange(server, head_of(LIMIT + 1))  # warm the code path up before measuring
    before = server.rss_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head_of(LIMIT + 1))
        answer = b""
        while b"}" not in answer:  # the 431 arrives before any more bytes are sent
            chunk = sock.recv(65536)
            assert chunk, "closed without an answer"
            answer += chunk
        assert_431(parse(answer))
        sent = 0
        block = b"X-Flood: " + b"f" * 65526 + b"\r\n"
        try:
            while sent < flood:
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass  # the server closed after lingering: also fine
        with_rest = answer
        with contextlib.suppress(ConnectionResetError):  # the server closed after lingering
            with_rest += read_to_eof(sock)
    assert with_rest == answer  # nothing but the one answer
    grown = server.rss_bytes() - before
    assert grown < 16 * 1024 * 1024, f"the server grew by {grown} bytes"
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200


def test_trailers_over_the_limit_are_answered_431(server: Server) -> None:
    """Trailers are headers too: a chunked body whose trailer section never ends is cut off
    after at most twice the limit (here the app was already waiting for the body)."""
    token = bearer()["Authorization"].encode()
    payload = (
        f"POST /api/{USER}/conversations HTTP/1.1\r\nHost: limits.test\r\n".encode()
        + b"Authorization: "
        + token
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"2\r\n{}\r\n0\r\nX-Trailer: "
        + b"t" * (2 * LIMIT + 2)
    )
    assert_431(parse(exchange(server, payload)))


def test_pipelined_requests_are_measured_one_by_one(server: Server) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: limits.test\r\n\r\n"
    count = 4 * LIMIT // len(one)
    last = b"GET /healthz HTTP/1.1\r\nHost: limits.test\r\nConnection: close\r\n\r\n"
    answers = exchange(server, one * count + last)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == count + 1
    assert b"HTTP/1.1 431" not in answers


def test_a_body_in_tiny_chunks_is_not_a_large_head(server: Server) -> None:
    """Chunk framing of a body (here more bytes than the limit) is not counted as headers."""
    metadata = {f"note{i}": "c" * 500 for i in range(10)}
    body = json.dumps({"title": "tiny chunks", "metadata": metadata}).encode()
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    assert len(chunks) - len(body) > LIMIT
    token = bearer()["Authorization"].encode()
    payload = (
        f"POST /api/{USER}/conversations HTTP/1.1\r\nHost: limits.test\r\n".encode()
        + b"Authorization: "
        + token
        + b"\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n"
    )
    created = parse(exchange(server, payload))
    assert created.status == 201, created.body
    assert created.json()["metadata"] == metadata


def test_requests_with_headers_under_the_limit_work(server: Server) -> None:
    headers = bearer() | {"X-Padding": "p" * (LIMIT // 2)}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        created = http.post(f"/api/{USER}/conversations", json={"title": "t"}, headers=headers)
        assert created.status_code == 201
        got = http.get(f"/api/{USER}/conversations/{created.json()['id']}", headers=headers)
        assert got.status_code == 200


def test_the_header_limit_setting() -> None:
    assert Settings().max_header_bytes == DEFAULT_MAX_HEADER_BYTES == 32 * 1024
    options = uvicorn_options(20_000)
    assert options["h11_max_incomplete_event_size"] == 20_000
    assert options["http"] == "chathistory.http.server:LimitedHttpToolsProtocol"
    with pytest.raises(ValueError):
        Settings(max_header_bytes=100)


# -- item 10: no redirect to a client-supplied host -------------------------------------------


@pytest.mark.parametrize(
    "path", ["/healthz/", f"/api/{USER}/conversations/", f"/api/{USER}/", "/readyz/"]
)
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(
    server: Server, path: str
) -> None:
    response = httpx.get(
        f"{server.base_url}{path}",
        headers=bearer() | {"Host": "evil.example"},
        follow_redirects=False,
        timeout=10,
    )
    assert not response.is_redirect
    assert "location" not in response.headers
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "evil.example" not in response.text


# -- item 3: context windows for models without installed tokenizer tables -------------------


@pytest.mark.parametrize(
    ("model", "encoding", "exact"),
    [
        ("gpt2", "gpt2", False),
        ("text-davinci-003", "p50k_base", False),
        ("code-davinci-002", "p50k_base", False),
        ("some-local-model", "o200k_base", True),
        ("gpt-4o", "o200k_base", True),
    ],
)
def test_context_for_any_model_is_served(
    server: Server, model: str, encoding: str, exact: bool
) -> None:
    with httpx.Client(base_url=server.base_url, headers=bearer(), timeout=10) as http:
        conv = http.post(f"/api/{USER}/conversations", json={}).json()["id"]
        added = http.post(
            f"/api/{USER}/conversations/{conv}/messages",
            json=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello world " * 50},
                {"role": "assistant", "content": "hi"},
            ],
        )
        assert added.status_code == 201
        context = http.get(
            f"/api/{USER}/conversations/{conv}/context", params={"max_tokens": 60, "model": model}
        )
    assert context.status_code == 200, context.text
    window = context.json()
    assert (window["encoding"], window["exact"]) == (encoding, exact)
    assert [m["role"] for m in window["messages"]] == ["system", "assistant"]
    assert window["truncated"] and window["token_count"] <= 60
