"""Slow clients against the real server (``chathistory serve`` with httptools, and uvicorn with
chathistory's h11 protocol) over raw sockets: a head or body that does not arrive in time is a
408 and the connection is closed, trickling bytes does not extend the time, an idle connection
is closed, and connections over the cap are answered 503 at once."""

from __future__ import annotations

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

from tests.fixtures.http import SECRET

USER = "slow-user"
HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
MAX_CONNECTIONS = 4
PACE = 0.2  # how long a trickling client waits for the server's answer before its next byte
TIMEOUT = 30.0  # a failure deadline for each socket read, never a synchronisation


@dataclass
class Server:
    port: int
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    env |= {
        "CHATHISTORY_JWT_SECRET": SECRET,
        "CHATHISTORY_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "CHATHISTORY_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "CHATHISTORY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "CHATHISTORY_RETRY_AFTER_SECONDS": "3",
    }
    if request.param == "httptools":
        command = ["-m", "chathistory.cli", "serve", "--port", str(port)]
    else:
        command = [
            *("-m", "uvicorn", "--factory", "chathistory.http.app:create_app"),
            *("--port", str(port), "--http", "chathistory.http.server:LimitedH11Protocol"),
        ]
    log = tmp_path_factory.mktemp("serve") / "output.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=tmp_path_factory.mktemp("cwd"),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)  # polling a starting process, not synchronising tests
        yield Server(port, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def read_response(sock: socket.socket) -> bytes:
    """One response with a ``content-length``, the connection left open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    _, headers, _ = parse(raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
    while len(raw.partition(b"\r\n\r\n")[2]) < int(headers["content-length"]):
        raw += sock.recv(65536)
    return raw


def trickle(sock: socket.socket, data: bytes) -> tuple[int, bytes]:
    """Send ``data`` a byte at a time, each after waiting up to :data:`PACE` for the server
    to answer; how many bytes went out before it did, and everything it sent."""
    sock.settimeout(PACE)
    sent = 0
    answer = b""
    for byte in data:
        sock.sendall(bytes([byte]))
        sent += 1
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        break
    sock.settimeout(TIMEOUT)
    return sent, answer + read_to_eof(sock)


def bearer() -> str:
    claims = {"sub": USER, "exp": int(time.time()) + 300}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def head(method: str, path: str, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_head(length: int) -> bytes:
    return head(
        "POST",
        f"/api/{USER}/conversations",
        f"Authorization: Bearer {bearer()}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    )


def assert_408(raw: bytes, what: str) -> None:
    status, headers, body = parse(raw)
    assert status == 408, raw
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert body["code"] == "request_timeout"
    assert body["detail"] == f"the {what} did not arrive within {HEADER_TIMEOUT} seconds"


def test_an_unfinished_head_is_a_408_and_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        assert_408(read_to_eof(sock), "request line and headers")


def test_a_head_sent_byte_by_byte_is_cut_however_steady(server: Server) -> None:
    slow = head("GET", "/healthz", *(f"X-Pad-{i}: {'x' * 40}" for i in range(20)))
    with connect(server) as sock:
        sent, answer = trickle(sock, slow)
    assert_408(answer, "request line and headers")
    assert sent < len(slow)  # cut before the head was whole, though a byte kept coming


def test_a_body_that_never_finishes_is_a_408_and_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(post_head(100) + b'{"title": ')
        assert_408(read_to_eof(sock), "request body")


def test_a_body_sent_byte_by_byte_is_cut_however_steady(server: Server) -> None:
    body = json.dumps({"title": "x" * 400}).encode()
    with connect(server) as sock:
        sock.sendall(post_head(len(body)))
        sent, answer = trickle(sock, body)
    assert_408(answer, "request body")
    assert sent < len(body)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert read_to_eof(sock) == b""


def test_keep_alive_requests_are_served_in_time(server: Server) -> None:
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(head("GET", "/healthz"))
            status, _, body = parse(read_response(sock))
            assert (status, body) == (200, {"status": "ok"})


def healthz(server: Server) -> tuple[int, dict[str, str], Any]:
    with connect(server) as sock:
        sock.sendall(head("GET", "/healthz", "Connection: close"))
        return parse(read_to_eof(sock))


def test_connections_over_the_cap_are_refused_and_the_slow_ones_do_not_hold_it(
    server: Server,
) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = connect(server)
            held.append(sock)
            sock.sendall(head("GET", "/healthz"))  # served: the server has this connection
            assert parse(read_response(sock))[0] == 200
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and holds it
            if len(held) == MAX_CONNECTIONS - 1:
                assert healthz(server)[0] == 200  # the last free connection
        status, headers, body = healthz(server)
        assert status == 503
        assert headers["retry-after"] == "3"
        assert body["code"] == "too_many_connections"
        for sock in held:  # the server lets none of them hold their connection
            assert_408(read_to_eof(sock), "request line and headers")
    finally:
        for sock in held:
            sock.close()
    # Served again once the server has seen the slow ones go (it may take a moment to count).
    for _ in range(100):
        status = healthz(server)[0]
        if status == 200:
            break
        assert status == 503
    assert status == 200
