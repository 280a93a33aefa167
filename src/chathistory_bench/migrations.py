"""An online upgrade (issue 23): a database of 1,000,000 messages in the first release's schema
(``0001_initial``) upgraded to the newest revision while readers and writers run, and the
longest wait any of them saw (goal: under 1 s at any size), their p99, their errors and the
upgrade's duration, revision by revision.

Fixtures are bulk SQL in a database of their own (created and dropped by the scenario): 20
messages per conversation (alternating user and assistant turns of varied words), 1,000 users;
every 10th conversation has a tool call and its result, every 50th a refusal part. The upgrade
runs in a child process (``chathistory.migrations.upgrade``, one call per revision, timed);
readers and writers are raw asyncpg connections in this one, each statement valid at every
revision: a reader reads the newest 50 messages of a random conversation; a writer appends a
message to one of its own conversations (``message_count`` + 1 and the message, one
transaction, the columns of the first release only); each pauses 5 ms between operations, so
that the load leaves the machine room to migrate. A short run before the upgrade gives
their baseline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chathistory.db import parse_database_url
from chathistory_bench.report import Figure, Report

Log = Callable[[str], None]
DATABASE = "chathistory_bench_migrations"
WAIT_GOAL_MS = 1000.0
PACE = 0.005  # seconds between one reader's or writer's operations (not timed)


@dataclass(frozen=True)
class MigrationSizes:
    messages: int = 1_000_000
    per_conversation: int = 20
    users: int = 1_000
    readers: int = 4
    writers: int = 4
    baseline_seconds: float = 3.0

    @classmethod
    def quick(cls) -> MigrationSizes:
        return cls(messages=100_000, baseline_seconds=2.0)


@dataclass
class _Samples:
    latencies_ms: list[float] = field(default_factory=list)
    worst: tuple[float, float] = (0.0, 0.0)  # (latency ms, wall-clock start)
    errors: list[str] = field(default_factory=list)


def conversation_id(n: int) -> uuid.UUID:
    """The fixture's n-th conversation (PostgreSQL writes ``md5('c' || n)::uuid``)."""
    return uuid.UUID(hashlib.md5(f"c{n}".encode()).hexdigest())  # noqa: S324 - not security


async def run_migrations(url: str, sizes: MigrationSizes, *, log: Log = print) -> Report:
    import asyncpg

    server = parse_database_url(url).connect_args["dsn"]
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DATABASE}")
        dsn = _with_database(server, DATABASE)
        try:
            return await _measure(dsn, sizes, log)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    finally:
        await admin.close()


async def _measure(dsn: str, sizes: MigrationSizes, log: Log) -> Report:
    from chathistory import migrations

    await migrations.upgrade(dsn, "0001_initial")
    conversations = sizes.messages // sizes.per_conversation
    log(f"migrations: writing {sizes.messages:,} messages in the first release's schema")
    began = time.perf_counter()
    await _fill(dsn, sizes, conversations)
    log(f"migrations: written in {time.perf_counter() - began:.1f} s; baseline load")
    baseline = await _load(dsn, sizes, conversations, _sleep(sizes.baseline_seconds))
    log("migrations: upgrading to the newest revision under load")
    revisions: list[dict[str, Any]] = []
    during = await _load(dsn, sizes, conversations, _upgrade(dsn, revisions))
    total = round(sum(r["seconds"] for r in revisions), 3)
    report = Report()
    for phase, samples in (("before the upgrade", baseline), ("during the upgrade", during)):
        for kind in ("reader", "writer"):
            _figure(report, sizes, kind, phase, samples[kind])
    worst = max(during.values(), key=lambda s: s.worst[0]).worst
    when = next((r["revision"] for r in revisions if r["started"] <= worst[1] < r["ended"]), "-")
    longest = round(worst[0], 1)
    report.ratios.update(
        {
            f"upgrade 0001 -> head of {sizes.messages:,} messages: seconds": total,
            "longest wait of any reader or writer during the upgrade: ms": longest,
            "errors of readers and writers during the upgrade": float(
                sum(len(s.errors) for s in during.values())
            ),
        }
    )
    report.setup["migrations"] = {
        "sizes": asdict(sizes),
        "conversations": conversations,
        "revisions": [{k: r[k] for k in ("revision", "seconds")} for r in revisions],
        "upgrade_seconds": total,
        "longest_wait_ms": longest,
        "longest_wait_during": when,
        "goal_ms": WAIT_GOAL_MS,
        "within_goal": longest < WAIT_GOAL_MS,
        "errors": [e for s in during.values() for e in s.errors][:5],
    }
    log(f"migrations: {total} s; longest wait {longest} ms (during {when})")
    return report


def _figure(report: Report, sizes: MigrationSizes, kind: str, phase: str, s: _Samples) -> None:
    ordered = sorted(s.latencies_ms) or [0.0]
    count = sizes.readers if kind == "reader" else sizes.writers
    operation = "read the newest 50" if kind == "reader" else "append one message"
    report.add(
        Figure(
            f"{operation} of {sizes.messages:,}, {phase}",
            f"raw asyncpg, {count} {kind}s",
            len(s.latencies_ms),
            round(ordered[len(ordered) // 2], 3),
            round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            0.0,
            "unnamed",
            f"longest {max(ordered):.1f} ms; errors {len(s.errors)}",
        )
    )


async def _fill(dsn: str, sizes: MigrationSizes, conversations: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        step = 10_000
        for lo in range(0, conversations, step):
            hi = min(conversations, lo + step) - 1
            async with conn.transaction():
                await conn.execute(_CONVERSATIONS, lo, hi, sizes.users, sizes.per_conversation)
                await conn.execute(_MESSAGES, lo, hi, sizes.users, sizes.per_conversation)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


_CONVERSATIONS = (
    "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
    " message_count) SELECT md5('c' || c)::uuid, 'u' || (c % $3), 'conversation ' || c, '{}',"
    " now() - interval '30 days', now() - c * interval '1 second', $4"
    " FROM generate_series($1::int, $2::int) AS c"
)
# Turn 2 of every 10th conversation calls a tool and turn 3 answers; turn 4 of every 50th
# refuses; the other turns alternate user and assistant text of varied words.
_MESSAGES = (
    "INSERT INTO messages (id, user_id, conversation_id, seq, role, content, tool_calls,"
    " tool_call_id, metadata, token_count, created_at)"
    " SELECT md5('m' || c || '.' || s)::uuid, 'u' || (c % $3), md5('c' || c)::uuid, s,"
    " CASE WHEN c % 10 = 0 AND s = 3 THEN 'tool' WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,"
    " CASE WHEN c % 10 = 0 AND s = 2 THEN NULL"
    " WHEN c % 50 = 0 AND s = 4 THEN"
    " jsonb_build_array(jsonb_build_object('type', 'refusal', 'refusal', 'I cannot share"
    " that, turn ' || s))"
    " ELSE to_jsonb('message ' || s || ' of conversation ' || c || ': the harbor ' ||"
    " (ARRAY['meadow', 'lantern', 'copper', 'orchard', 'glacier'])[1 + (c + s) % 5] ||"
    " ' and the quick brown fox jumps over the lazy dog ' || md5(c || '.' || s)) END,"
    " CASE WHEN c % 10 = 0 AND s = 2 THEN jsonb_build_array(jsonb_build_object('id', 'call_'"
    " || c, 'type', 'function', 'function', jsonb_build_object('name', 'lookup', 'arguments',"
    " '{}'))) END,"
    " CASE WHEN c % 10 = 0 AND s = 3 THEN 'call_' || c END,"
    " '{}', 40, now() - interval '30 days' + s * interval '1 minute'"
    " FROM generate_series($1::int, $2::int) AS c, generate_series(1, $4::int) AS s"
)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _upgrade(dsn: str, revisions: list[dict[str, Any]]) -> None:
    """Upgrade in a child process, one revision at a time, each timed."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the upgrade failed: {err.decode(errors='replace')[-2000:]}")
    revisions.extend(json.loads(line) for line in out.decode().splitlines() if line.strip())


_CHILD = """
import asyncio, json, sys, time
from alembic.script import ScriptDirectory
from chathistory import migrations

async def main(dsn):
    script = ScriptDirectory.from_config(migrations.alembic_config())
    for revision in reversed(list(script.iterate_revisions("head", "0001_initial"))):
        started = time.time()
        await migrations.upgrade(dsn, revision.revision)
        ended = time.time()
        print(json.dumps({"revision": revision.revision, "started": started, "ended": ended,
                          "seconds": round(ended - started, 3)}), flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def _load(
    dsn: str, sizes: MigrationSizes, conversations: int, until: Any
) -> dict[str, _Samples]:
    """Readers and writers in a loop until ``until`` (a coroutine) ends."""
    import asyncpg

    done = asyncio.Event()
    samples = {"reader": _Samples(), "writer": _Samples()}
    connections = [await asyncpg.connect(dsn) for _ in range(sizes.readers + sizes.writers)]

    async def worker(conn: Any, kind: str, n: int) -> None:
        rng = random.Random(n)
        mine = samples[kind]
        while not done.is_set():
            await asyncio.sleep(PACE)
            c = rng.randrange(conversations)
            if kind == "writer":  # a writer appends to its own conversations only
                w = n - sizes.readers
                c = c - c % sizes.writers + w
                c = c if c < conversations else w
            started, wall = time.perf_counter(), time.time()
            try:
                if kind == "reader":
                    await _read(conn, c, sizes)
                else:
                    await _append(conn, c, sizes)
            except Exception as exc:  # counted and reported: an error is a result here
                mine.errors.append(f"{kind}: {exc}")
                continue
            took = (time.perf_counter() - started) * 1000
            mine.latencies_ms.append(took)
            if took > mine.worst[0]:
                mine.worst = (took, wall)

    tasks = [
        asyncio.create_task(worker(conn, "reader" if i < sizes.readers else "writer", i))
        for i, conn in enumerate(connections)
    ]
    try:
        await until
    finally:
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in connections:
            await conn.close()
    return samples


async def _read(conn: Any, c: int, sizes: MigrationSizes) -> None:
    await conn.fetch(
        "SELECT id, seq, role, content, tool_calls, created_at FROM messages"
        " WHERE conversation_id = $1 AND user_id = $2 ORDER BY seq DESC LIMIT 50",
        conversation_id(c),
        f"u{c % sizes.users}",
    )


async def _append(conn: Any, c: int, sizes: MigrationSizes) -> None:
    user = f"u{c % sizes.users}"
    async with conn.transaction():
        seq = await conn.fetchval(
            "UPDATE conversations SET message_count = message_count + 1, updated_at = now()"
            " WHERE id = $1 AND user_id = $2 RETURNING message_count",
            conversation_id(c),
            user,
        )
        await conn.execute(
            "INSERT INTO messages (id, user_id, conversation_id, seq, role, content, metadata,"
            " created_at) VALUES ($1, $2, $3, $4, 'user', to_jsonb($5::text), '{}', now())",
            uuid.uuid4(),
            user,
            conversation_id(c),
            seq,
            f"appended during the upgrade, turn {seq}",
        )


def _with_database(dsn: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))
