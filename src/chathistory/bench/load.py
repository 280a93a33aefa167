"""The HTTP service under load: ``chathistory serve`` in one process, the clients in another.

The clients' process is ``python -m chathistory.bench`` (see ``__main__.py``): the load
generator must not share an event loop, or a core's worth of scheduling, with the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chathistory.bench.fixtures import CONTENT
from chathistory.bench.report import Figure, Report
from chathistory.bench.rounds import percentile
from chathistory.db import parse_database_url


@dataclass(frozen=True)
class LoadPlan:
    """The promise scenario: conversations over users, concurrent clients on loopback."""

    users: int = 1000
    conversations: int = 10_000
    messages_per_conversation: int = 60
    clients: int = 64
    seconds: float = 30.0
    read_share: float = 0.8
    workers: int = 2  # server processes: one per core of this 2-core machine

    @classmethod
    def quick(cls) -> LoadPlan:
        return cls(users=100, conversations=1000, messages_per_conversation=60, seconds=8.0)


async def _load_fixtures(raw: Any, prefix: str, plan: LoadPlan) -> dict[str, list[str]]:
    per_user = max(1, plan.conversations // plan.users)
    async with raw.acquire() as conn:
        await conn.execute(
            "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
            " message_count) SELECT gen_random_uuid(), $1 || '-' || (s % $2), 'load', '{}',"
            " now(), now(), $3 FROM generate_series(0, $4 - 1) AS s",
            prefix,
            plan.users,
            plan.messages_per_conversation,
            per_user * plan.users,
        )
        await conn.execute(
            "INSERT INTO messages (id, user_id, conversation_id, seq, role, content, metadata,"
            " token_count, created_at) SELECT gen_random_uuid(), c.user_id, c.id, s,"
            " CASE WHEN s % 2 = 0 THEN 'assistant' ELSE 'user' END, to_jsonb($2::text),"
            " '{}'::jsonb, 90, now() FROM conversations c, generate_series(1, $3) AS s"
            " WHERE c.user_id LIKE $1 || '-%'",
            prefix,
            CONTENT,
            plan.messages_per_conversation,
        )
        await conn.execute("ANALYZE conversations")
        await conn.execute("ANALYZE messages")
        rows = await conn.fetch(
            "SELECT user_id, id FROM conversations WHERE user_id LIKE $1 || '-%'", prefix
        )
    users: dict[str, list[str]] = {}
    for row in rows:
        users.setdefault(row["user_id"], []).append(str(row["id"]))
    return users


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must not spend the CPU it is
    measuring (a full client library costs more per request than the server does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, token: str, body: bytes = b"") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n"
            + ("Content-Type: application/json\r\n" if body else "")
            + "\r\n"
        )
        self.writer.write(head.encode() + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            length = 0
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer = None
            raise
        return int(status_line.split()[1])


async def load_clients(
    base_url: str, secret: str, users: dict[str, list[str]], plan: LoadPlan, seed: int = 7
) -> dict[str, Any]:
    """Run ``plan.clients`` clients for ``plan.seconds``: each one user on its own keep-alive
    connection, looping over random conversations of that user, reading the newest 50
    messages or appending one."""
    from urllib.parse import urlsplit

    import jwt

    target = urlsplit(base_url)
    rng = random.Random(seed)
    names = sorted(users)
    latencies: dict[str, list[float]] = {"read newest 50": [], "append": []}
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + plan.seconds
    body = json.dumps({"role": "user", "content": CONTENT}).encode()

    async def client(number: int) -> None:
        user = names[number % len(names)]
        token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, secret, "HS256")
        connection = _Connection(target.hostname or "127.0.0.1", target.port or 80)
        mine = random.Random(rng.random())
        while time.perf_counter() < deadline:
            conversation = mine.choice(users[user])
            path = f"/api/{user}/conversations/{conversation}/messages"
            reading = mine.random() < plan.read_share
            op = "read newest 50" if reading else "append"
            t0 = time.perf_counter()
            try:
                if reading:
                    status = await connection.request("GET", path + "?order=desc&limit=50", token)
                else:
                    status = await connection.request("POST", path, token, body)
                ok, key = status < 300, f"{op}: HTTP {status}"
            except (OSError, asyncio.IncompleteReadError) as exc:
                ok, key = False, f"{op}: {type(exc).__name__}"
            if ok:
                latencies[op].append((time.perf_counter() - t0) * 1000)
            else:
                errors[key] = errors.get(key, 0) + 1
        if connection.writer is not None:
            connection.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(plan.clients)))
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "latencies": {
            op: {
                "count": len(values),
                "p50_ms": round(statistics.median(values), 3) if values else None,
                "p99_ms": round(percentile(values, 0.99), 3) if values else None,
            }
            for op, values in latencies.items()
        },
        "errors": errors,
        "requests_per_second": round(sum(map(len, latencies.values())) / elapsed, 1),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_load(url: str, plan: LoadPlan, *, log: Callable[[str], None] = print) -> Report:
    """Serve ``url`` with ``chathistory serve`` in one process, load it from another."""
    import os
    import secrets
    import subprocess
    import sys

    import asyncpg
    import httpx

    report = Report(setup={"load": asdict(plan)})
    dsn = parse_database_url(url).connect_args["dsn"]
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(32)
    port = _free_port()
    raw = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert raw is not None
    workdir = Path(tempfile.mkdtemp(prefix="chload-"))
    server = None
    try:
        log(f"load: writing {plan.conversations:,} conversations of {plan.users:,} users")
        users = await _load_fixtures(raw, prefix, plan)
        env = {
            **os.environ,
            "CHATHISTORY_DATABASE_URL": url,
            "CHATHISTORY_JWT_SECRET": secret,
            "CHATHISTORY_POOL_SIZE": "10",
            "CHATHISTORY_MAX_OVERFLOW": "0",
            "CHATHISTORY_WORKERS": str(plan.workers),
        }
        server = subprocess.Popen(  # noqa: ASYNC220 - the server outlives this call
            [
                sys.executable,
                "-m",
                "chathistory.cli",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "server.log").open("w"),
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as probe:
            for _ in range(300):
                try:
                    if (await probe.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError((workdir / "server.log").read_text())
                await asyncio.sleep(0.1)
        (workdir / "users.json").write_text(json.dumps(users))
        log(f"load: {plan.clients} clients for {plan.seconds:.0f} s (separate process)")
        client = subprocess.run(  # noqa: ASYNC221 - nothing else runs meanwhile
            [
                sys.executable,
                "-m",
                "chathistory.bench",
                base,
                secret,
                str(workdir / "users.json"),
                json.dumps(asdict(plan)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(client.stdout)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        async with raw.acquire() as conn:
            await conn.execute("DELETE FROM conversations WHERE user_id LIKE $1 || '-%'", prefix)
        await raw.close()
    note = (
        f"{plan.clients} clients, {plan.workers} server workers, "
        f"{plan.conversations:,} conversations, {plan.users:,} users"
    )
    for op, figures in result["latencies"].items():
        report.add(
            Figure(
                f"http {op}",
                note,
                figures["count"],
                figures["p50_ms"] or 0.0,
                figures["p99_ms"] or 0.0,
                round(figures["count"] / result["seconds"], 1),
            )
        )
    report.setup["load_errors"] = result["errors"]
    report.setup["load_requests_per_second"] = result["requests_per_second"]
    report.ratios["http: errors (must be 0)"] = float(sum(result["errors"].values()))
    worst = max((f["p99_ms"] or 0.0) for f in result["latencies"].values())
    report.ratios["http: worst p99 ms (target < 500)"] = worst
    return report
