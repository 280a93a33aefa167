"""``chathistory serve`` as a real process on a real port, and the import boundary."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt

from tests.fixtures.http import SECRET

# After a graceful shutdown uvicorn re-raises the signal it caught, so a process manager sees
# "terminated by SIGTERM"; a plain 0 is fine too. Anything else is not a clean exit.
CLEAN_EXIT = (0, -signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    return env | extra


@contextmanager
def serving(cwd: Path, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``chathistory serve`` until it is ready; stop it with SIGTERM afterwards."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chathistory.cli", "serve", "--port", str(port), *args],
        cwd=cwd,
        env=_environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)  # polling a starting process, not synchronising tests
        yield base_url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise


def test_serve_on_default_sqlite_with_jwt(tmp_path: Path) -> None:
    user = "serve-user"
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    with serving(tmp_path, CHATHISTORY_JWT_SECRET=SECRET) as (base_url, process):
        assert (tmp_path / "chathistory.db").exists()  # the default URL, created and migrated
        with httpx.Client(base_url=base_url, timeout=10) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            assert http.get(f"/api/{user}/conversations").status_code == 401
            created = http.post(
                f"/api/{user}/conversations", json={"title": "served"}, headers=auth
            )
            assert created.status_code == 201
            conv = created.json()["id"]
            added = http.post(
                f"/api/{user}/conversations/{conv}/messages",
                json={"role": "user", "content": "over a real socket"},
                headers=auth | {"X-Request-ID": "serve-test-1"},
            )
            assert added.status_code == 201
            assert added.headers["x-request-id"] == "serve-test-1"
            listed = http.get(f"/api/{user}/conversations/{conv}/messages", headers=auth)
            assert [m["content"] for m in listed.json()["data"]] == ["over a real socket"]
            assert http.get("/api/someone-else/conversations", headers=auth).status_code == 403
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) in CLEAN_EXIT
        output = process.stdout.read()  # type: ignore[union-attr]
    assert "request_id=serve-test-1" in output
    assert "Application shutdown complete" in output  # the lifespan closed the store
    assert "Traceback" not in output


def test_serve_with_database_url_option_and_insecure_switch(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere.db"
    with serving(tmp_path, "--database-url", f"sqlite:///{database}", "--insecure-no-auth") as (
        base_url,
        process,
    ):
        assert database.exists()
        created = httpx.post(f"{base_url}/api/anyone/conversations", timeout=10)
        assert created.status_code == 201
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) in CLEAN_EXIT
        output = process.stdout.read()  # type: ignore[union-attr]
    assert "AUTHENTICATION IS OFF" in output
    assert not (tmp_path / "chathistory.db").exists()


def test_serve_refuses_to_start_without_auth(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "serve", "--port", str(_free_port())],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no authentication is configured" in " ".join(result.stderr.split())
    assert not (tmp_path / "chathistory.db").exists()  # refused before touching anything


def test_importing_the_library_does_not_import_fastapi() -> None:
    code = (
        "import sys, chathistory, chathistory.cli, chathistory.config; "
        "loaded = [m for m in ('fastapi', 'starlette', 'uvicorn', 'jwt') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
