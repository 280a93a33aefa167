"""The HTTP service under load: ``chathistory serve`` in one process, the clients in another.

The clients' process is ``python -m chathistory_bench`` (see ``__main__.py``): the load
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
from typing import TYPE_CHECKING, Any

from chathistory.db import parse_database_url
from chathistory_bench.fixtures import CONTENT
from chathistory_bench.report import Figure, Report
from chathistory_bench.rounds import percentile

if TYPE_CHECKING:
    from chathistory_bench.open_loop import OpenLoopPlan


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
    rounds: int = 4  # the service and the bare-ASGI floor take turns, the load split evenly

    @classmethod
    def quick(cls) -> LoadPlan:
        return cls(
            users=100, conversations=1000, messages_per_conversation=60, seconds=8.0, rounds=2
        )


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


async def take_turn(
    connection: _Connection, path: str, token: str, reading: bool, body: bytes
) -> tuple[bool, str]:
    """Read the newest 50 messages of ``path`` or append ``body`` to it: whether it worked,
    and the error's name when not (the HTTP status, or the exception)."""
    op = "read newest 50" if reading else "append"
    try:
        if reading:
            status = await connection.request("GET", path + "?order=desc&limit=50", token)
        else:
            status = await connection.request("POST", path, token, body)
    except (OSError, asyncio.IncompleteReadError) as exc:
        return False, f"{op}: {type(exc).__name__}"
    return status < 300, f"{op}: HTTP {status}"


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
            ok, key = await take_turn(connection, path, token, reading, body)
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
        "samples": latencies,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(command: list[str], env: dict[str, str], log: Path) -> Any:
    import subprocess

    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


async def _ready(base: str, server: Any, log: Path, path: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base) as probe:
        for _ in range(300):
            try:
                if (await probe.get(path)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError(log.read_text())  # noqa: ASYNC240 - it died
            await asyncio.sleep(0.1)  # polling a starting process
    raise RuntimeError(f"{base} did not start")


async def run_load(
    url: str,
    plan: LoadPlan,
    *,
    open_loop: OpenLoopPlan | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Serve ``url`` with ``chathistory serve`` and, beside it, the bare-ASGI floor
    (:mod:`chathistory_bench.floor_app`), both with ``plan.workers`` workers; load them in turn
    from another process, ``plan.rounds`` rounds each (order alternating), and compare; then,
    with ``open_loop``, the open-loop scenario against the service."""
    import os
    import secrets
    import subprocess
    import sys

    import asyncpg

    from chathistory_bench.open_loop import report_open_loop

    report = Report(setup={"load": asdict(plan)})
    dsn = parse_database_url(url).connect_args["dsn"]
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(32)
    raw = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert raw is not None
    workdir = Path(tempfile.mkdtemp(prefix="chload-"))
    servers: list[Any] = []
    samples: dict[str, dict[str, list[float]]] = {"service": {}, "floor": {}}
    spent = {"service": 0.0, "floor": 0.0}
    errors: dict[str, dict[str, int]] = {"service": {}, "floor": {}}
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
            "CHATHISTORY_FLOOR_DSN": dsn,
            "CHATHISTORY_FLOOR_SECRET": secret,
        }
        bases: dict[str, str] = {}
        commands = {
            "service": ["-m", "chathistory.cli", "serve", "--log-level", "warning", "--port"],
            "floor": [
                "-m",
                "uvicorn",
                "--factory",
                "chathistory_bench.floor_app:create_app",
                "--workers",
                str(plan.workers),
                "--log-level",
                "warning",
                "--no-access-log",
                "--port",
            ],
        }
        for name, command in commands.items():
            port = _free_port()
            server_log = workdir / f"{name}.log"
            servers.append(_serve([sys.executable, *command, str(port)], env, server_log))
            bases[name] = f"http://127.0.0.1:{port}"
            await _ready(
                bases[name], servers[-1], server_log, "/readyz" if name == "service" else "/"
            )
        (workdir / "users.json").write_text(json.dumps(users))
        share = plan.seconds / plan.rounds
        round_plan = json.dumps({**asdict(plan), "seconds": share})
        order = ["service", "floor"]
        for number in range(plan.rounds):
            for name in order if number % 2 == 0 else order[::-1]:
                log(f"load: round {number + 1}: {name}, {plan.clients} clients for {share:.1f} s")
                client = subprocess.run(  # noqa: ASYNC221 - nothing else runs meanwhile
                    [
                        sys.executable,
                        "-m",
                        "chathistory_bench",
                        bases[name],
                        secret,
                        str(workdir / "users.json"),
                        round_plan,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if client.returncode != 0:
                    raise RuntimeError(f"the load clients failed:\n{client.stderr}")
                result = json.loads(client.stdout)
                spent[name] += result["seconds"]
                for op, values in result["samples"].items():
                    samples[name].setdefault(op, []).extend(values)
                for key, count in result["errors"].items():
                    errors[name][key] = errors[name].get(key, 0) + count
        if open_loop is not None:
            log(f"open loop: writing {open_loop.users:,} users with a conversation each")
            one_each = LoadPlan(
                users=open_loop.users,
                conversations=open_loop.users,
                messages_per_conversation=open_loop.messages_per_conversation,
            )
            opened_users = await _load_fixtures(raw, f"{prefix}-ol", one_each)
            (workdir / "open.json").write_text(json.dumps(opened_users))
            log(f"open loop: {open_loop.seconds:.0f} s of turns")
            client = subprocess.run(  # noqa: ASYNC221 - nothing else runs meanwhile
                [
                    sys.executable,
                    "-m",
                    "chathistory_bench",
                    "open-loop",
                    bases["service"],
                    secret,
                    str(workdir / "open.json"),
                    json.dumps(asdict(open_loop)),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if client.returncode != 0:
                raise RuntimeError(f"the open-loop clients failed:\n{client.stderr}")
            report_open_loop(report, open_loop, json.loads(client.stdout))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        async with raw.acquire() as conn:
            await conn.execute("DELETE FROM conversations WHERE user_id LIKE $1 || '-%'", prefix)
        await raw.close()
    _report_load(report, plan, samples, spent, errors)
    return report


def _report_load(
    report: Report,
    plan: LoadPlan,
    samples: dict[str, dict[str, list[float]]],
    spent: dict[str, float],
    errors: dict[str, dict[str, int]],
) -> None:
    note = (
        f"{plan.clients} clients, {plan.workers} server workers, "
        f"{plan.conversations:,} conversations, {plan.users:,} users"
    )
    rates: dict[str, float] = {}
    p99s: dict[str, float] = {}
    for name, label in (("service", "chathistory serve"), ("floor", "floor: bare ASGI")):
        everything: list[float] = []
        for op, values in samples[name].items():
            everything += values
            report.add(
                Figure(
                    f"http {op}",
                    f"{label}; {note}",
                    len(values),
                    round(statistics.median(values), 3) if values else 0.0,
                    round(percentile(values, 0.99), 3) if values else 0.0,
                    round(len(values) / spent[name], 1) if spent[name] else 0.0,
                )
            )
        rates[name] = len(everything) / spent[name] if spent[name] else 0.0
        p99s[name] = percentile(everything, 0.99) if everything else 0.0
    report.setup["load_errors"] = errors
    report.setup["load_requests_per_second"] = {k: round(v, 1) for k, v in rates.items()}
    report.ratios["http: errors, service (must be 0)"] = float(sum(errors["service"].values()))
    report.ratios["http: errors, floor"] = float(sum(errors["floor"].values()))
    if rates["floor"] and p99s["floor"]:
        report.ratios["http: service / floor requests/s (target >= 0.8)"] = round(
            rates["service"] / rates["floor"], 2
        )
        report.ratios["http: service / floor p99 (target <= 1.3)"] = round(
            p99s["service"] / p99s["floor"], 2
        )
    report.ratios["http: service worst p99 ms (target < 500)"] = round(
        max(
            (percentile(v, 0.99) for v in samples["service"].values() if v),
            default=0.0,
        ),
        1,
    )
