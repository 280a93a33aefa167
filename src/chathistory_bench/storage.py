"""The store's size and the append's tail, next to langchain-postgres's table shape.

The same messages (realistic chat text: user questions, long assistant answers, tool calls and
their results) go into the store (its own database, made for the run and dropped after) and
into langchain-postgres's ``PostgresChatMessageHistory`` table shape (``id SERIAL, session_id
UUID, message JSONB, created_at``, one ``message_to_dict`` JSON per message, an index on
``session_id``) in the same database. After a ``VACUUM`` (what autovacuum leaves) it reports the
database's bytes per message and each table's and index's share, then times appends at 1 and 8
writers, the store's ``add_message`` against langchain's one ``INSERT`` per message in its own
transaction, in alternating rounds, and their p99 / p50. While the store's appends run, a
second connection samples what its backends wait on (``pg_stat_activity``) and the WAL each
append writes (``pg_stat_wal``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from chathistory_bench.report import Figure, Report
from chathistory_bench.rounds import Samples, WriterOp, _drive

Log = Callable[[str], None]
LANGCHAIN_TABLE = "langchain_message_store"
# langchain-postgres's create_tables, verbatim but for the table's name.
LANGCHAIN_DDL = (
    f"CREATE TABLE IF NOT EXISTS {LANGCHAIN_TABLE} (id SERIAL PRIMARY KEY, session_id UUID NOT"
    " NULL, message JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW());"
    f" CREATE INDEX IF NOT EXISTS idx_{LANGCHAIN_TABLE}_session_id ON {LANGCHAIN_TABLE}"
    " (session_id);"
)
LANGCHAIN_INSERT = f"INSERT INTO {LANGCHAIN_TABLE} (session_id, message) VALUES ($1, $2)"  # noqa: S608
TAIL_TARGET = 2.5  # issue 24: append p99 within 2.5x its p50
SIZE_TARGET = 1.5  # issue 24: bytes per message within 1.5x langchain-postgres's


@dataclass(frozen=True)
class StorageSizes:
    messages: int = 30_000
    per_conversation: int = 60
    users: int = 20
    appends: int = 2_000  # per contender and writer count
    rounds: int = 4

    @classmethod
    def quick(cls) -> StorageSizes:
        return cls(messages=3_000, appends=400, rounds=2)


# -- realistic text --------------------------------------------------------------------------

_COMMON = (  # noqa: SIM905
    "the of and to a in is it you that for on with as this be are or can your by not at from"
    " if have will an but we more use all so one which when what there their about how may"
    " other into also some would time each them then do has these than make like only its"
    " should could first new just any well need way because most work over after where here"
    " data file code function value error example list set run test version user"
).split()
_TOPIC = (  # noqa: SIM905
    "python postgres database index query table column server request response client token"
    " session cache memory latency throughput cluster replica backup migration schema json"
    " api endpoint service container deploy kubernetes docker network timeout retry queue"
    " worker thread async await lisbon paris weather recipe garden budget invoice meeting"
    " travel hotel flight museum coffee bicycle marathon training chapter novel poem history"
    " physics chemistry biology algorithm matrix vector gradient model dataset pipeline"
).split()


class Chat:
    """A deterministic stream of chat turns: a user's question, an assistant's answer (now
    and then a tool call and its result first)."""

    def __init__(self, seed: int = 24) -> None:
        self.random = random.Random(seed)
        syllables = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ou")]
        # A larger vocabulary, its words used less the further down the list.
        self.vocabulary = _TOPIC + sorted(
            {
                "".join(self.random.choices(syllables, k=self.random.randint(2, 4)))
                for _ in range(8000)
            }
        )
        self.rare = [f"{w}{n}" for n in range(400) for w in ("zeta", "kappa")]

    def _word(self) -> str:
        r = self.random.random()
        if r < 0.55:
            return self.random.choice(_COMMON[: 20 + int(self.random.paretovariate(1.2))])
        if r < 0.96:
            return self.vocabulary[int(len(self.vocabulary) * self.random.random() ** 3)]
        if r < 0.985:
            return str(self.random.randint(0, 5000))
        return self.random.choice(self.rare)

    def text(self, low: int, high: int) -> str:
        count = int(min(high, max(low, self.random.lognormvariate(0, 0.6) * (low + high) / 3)))
        sentences, words = [], 0
        while words < count:
            n = min(count - words, self.random.randint(5, 22))
            sentence = " ".join(self._word() for _ in range(n))
            sentences.append(sentence[:1].upper() + sentence[1:] + self.random.choice(".?.!,."))
            words += n
        return " ".join(sentences)

    def turn(self, seq: int) -> list[dict[str, Any]]:
        """The next turn: ``[user, assistant]`` or ``[user, assistant call, tool, assistant]``."""
        turn: list[dict[str, Any]] = [{"role": "user", "content": self.text(5, 60)}]
        if self.random.random() < 0.2:
            call = f"call_{seq}_{self.random.randint(0, 10**9)}"
            arguments = json.dumps({"query": self.text(2, 6), "limit": 10})
            turn.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call,
                            "type": "function",
                            "function": {"name": "lookup", "arguments": arguments},
                        }
                    ],
                }
            )
            result = json.dumps({"results": [self.text(8, 30) for _ in range(3)]})
            turn.append({"role": "tool", "content": result, "tool_call_id": call})
        turn.append({"role": "assistant", "content": self.text(40, 450)})
        return turn


def langchain_json(message: dict[str, Any]) -> str:
    """``message_to_dict`` of the same message, as langchain-core writes it."""
    role = message["role"]
    kind = {"user": "human", "assistant": "ai", "tool": "tool"}[role]
    data: dict[str, Any] = {
        "content": message.get("content") or "",
        "additional_kwargs": {},
        "response_metadata": {},
        "type": kind,
        "name": None,
        "id": None,
    }
    if kind == "ai":
        calls = [
            {
                "name": c["function"]["name"],
                "args": json.loads(c["function"]["arguments"]),
                "id": c["id"],
                "type": "tool_call",
            }
            for c in message.get("tool_calls") or []
        ]
        data.update(tool_calls=calls, invalid_tool_calls=[], usage_metadata=None)
    if kind == "tool":
        data.update(tool_call_id=message["tool_call_id"], artifact=None, status="success")
    return json.dumps({"type": kind, "data": data})


# -- the run ---------------------------------------------------------------------------------


async def run_storage(url: str, sizes: StorageSizes, *, log: Log = print) -> Report:
    """Load, measure the sizes, time the appends; in a database made for the run."""
    import asyncpg

    from chathistory import migrations

    base = make_url(url)
    name = f"chbench_storage_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn(base))
    await admin.execute(f'CREATE DATABASE "{name}"')
    own = _dsn(base.set(database=name))
    try:
        await migrations.upgrade(own)
        return await _measure(own, sizes, log)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _dsn(url: Any) -> str:
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


async def _measure(dsn: str, sizes: StorageSizes, log: Log) -> Report:
    import asyncpg

    from chathistory import ChatHistory
    from chathistory.db import create_engine

    report = Report()
    chat = Chat()
    conn = await asyncpg.connect(dsn)
    engine = create_engine(dsn)
    store = ChatHistory(engine)
    try:
        await conn.execute(LANGCHAIN_DDL)
        t0 = time.perf_counter()
        count = await _load(store, conn, chat, sizes)
        took = time.perf_counter() - t0
        log(f"storage: {count:,} messages loaded into both stores in {took:.0f} s")
        await conn.execute("VACUUM ANALYZE")
        shares = await _sizes(conn)
        report.setup["storage"] = _size_summary(shares, count, log)
        report.setup["storage_tail"] = await _tails(store, dsn, conn, chat, sizes, report, log)
    finally:
        await engine.dispose()
        await conn.close()
    return report


async def _load(store: Any, conn: Any, chat: Chat, sizes: StorageSizes) -> int:
    count = 0
    conversation = 0
    while count < sizes.messages:
        user = f"storage-{conversation % sizes.users}"
        made = await store.create_conversation(user, title=f"chat {conversation}")
        session = uuid.uuid4()
        batch: list[dict[str, Any]] = []
        while len(batch) < sizes.per_conversation and count + len(batch) < sizes.messages:
            batch += chat.turn(count + len(batch))
        await store.add_messages(user, made.id, batch)
        await conn.executemany(LANGCHAIN_INSERT, [(session, langchain_json(m)) for m in batch])
        count += len(batch)
        conversation += 1
    return count


_SIZES_SQL = """
SELECT c.relname AS table_name, c.relname AS part, 'table' AS kind, pg_table_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
UNION ALL
SELECT t.relname, i.relname, 'index', pg_relation_size(i.oid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'
"""


async def _sizes(conn: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(_SIZES_SQL) if r["bytes"] > 0]


def _size_summary(parts: list[dict[str, Any]], count: int, log: Log) -> dict[str, Any]:
    langchain = [p for p in parts if p["table_name"] == LANGCHAIN_TABLE]
    ours = [
        p for p in parts if p["table_name"] not in (LANGCHAIN_TABLE, "chathistory_alembic_version")
    ]
    total_lc = sum(p["bytes"] for p in langchain)
    total = sum(p["bytes"] for p in ours)
    search = sum(p["bytes"] for p in ours if p["table_name"] == "message_search")
    summary = {
        "messages": count,
        "langchain_bytes_per_message": round(total_lc / count, 1),
        "chathistory_bytes_per_message": round(total / count, 1),
        "chathistory_search_off_bytes_per_message": round((total - search) / count, 1),
        "ratio": round(total / total_lc, 2),
        "ratio_search_off": round((total - search) / total_lc, 2),
        "parts": parts,
    }
    log(
        f"storage: bytes per message: chathistory {total / count:,.0f} (search off:"
        f" {(total - search) / count:,.0f}), langchain-postgres {total_lc / count:,.0f};"
        f" ratio {summary['ratio']:.2f} (search off {summary['ratio_search_off']:.2f};"
        f" target at most {SIZE_TARGET})"
    )
    for label, group, whole in (("chathistory", ours, total), ("langchain", langchain, total_lc)):
        for p in sorted(group, key=lambda p: -p["bytes"]):
            log(
                f"  {label:12} {p['kind']:5} {p['part']:52} {p['bytes'] / count:8,.0f} B/msg"
                f" {100 * p['bytes'] / whole:5.1f}%"
            )
    return summary


# -- the appends' tail -----------------------------------------------------------------------


async def _tails(
    store: Any,
    dsn: str,
    conn: Any,
    chat: Chat,
    sizes: StorageSizes,
    report: Report,
    log: Log,
) -> dict[str, Any]:
    """Appends at 1 and 8 writers: the store as migrated; the store with the search index's
    pending list off (``fastupdate = off``, an experiment, measured and left out
    of the schema: set before each of its shares, reset after); the store with ``search=False``;
    langchain's ``INSERT``. Alternating rounds, the order rotated each round."""
    import asyncpg

    from chathistory import ChatHistory

    texts = [chat.text(5, 60) if n % 2 == 0 else chat.text(40, 450) for n in range(512)]
    unindexed = ChatHistory(store.engine, search=False)
    found: dict[str, Any] = {}
    for writers in (1, 8):
        lc = [await asyncpg.connect(dsn, statement_cache_size=0) for _ in range(writers)]
        try:
            contenders = [
                (CHATHISTORY, _appends(store, f"tail-{writers}", writers, texts), "on"),
                (NO_PENDING_LIST, _appends(store, f"tail-p{writers}", writers, texts), "off"),
                (SEARCH_OFF, _appends(unindexed, f"tail-o{writers}", writers, texts), "on"),
                (LANGCHAIN, _langchain(lc, texts), "on"),
            ]
            ops = [(label, await op, gin) for label, op, gin in contenders]
            samples = await _rounds(conn, ops, writers, sizes)
            # Untimed: what the backends wait on, the WAL an append writes (the sampler
            # shares the event loop, so it runs apart from the timed rounds).
            waits = {
                label: await _profile(dsn, op, writers, max(writers, sizes.appends // 4))
                for label, op, gin in ops
                if label in (CHATHISTORY, LANGCHAIN)
            }
        finally:
            for c in lc:
                await c.close()
        operation = f"append ({writers} writer{'s' if writers > 1 else ''}), storage data"
        figures = {
            label: report.add(taken.figure(operation, label, "unnamed"))
            for label, taken in samples.items()
        }
        found[str(writers)] = {
            label: {"p50": f.p50_ms, "p99": f.p99_ms, "p99/p50": _tail(f)}
            for label, f in figures.items()
        } | {"profile": waits}
        log(f"storage: append at {writers} writer(s) (target p99/p50 at most {TAIL_TARGET}):")
        floor = figures[LANGCHAIN]
        for label, f in figures.items():
            log(
                f"  {label:44} p50 {f.p50_ms:6.2f} ms  p99 {f.p99_ms:6.2f} ms"
                f"  p99/p50 {_tail(f):.2f}  (langchain's x{f.p50_ms / floor.p50_ms:.2f} p50,"
                f" x{f.p99_ms / floor.p99_ms:.2f} p99)"
            )
        for who, counted in waits.items():
            log(f"  profile of {who}'s appends: {counted}")
    return found


CHATHISTORY = "chathistory add_message"
NO_PENDING_LIST = "chathistory, GIN fastupdate=off (rejected)"
SEARCH_OFF = "chathistory add_message, search=False"
LANGCHAIN = "langchain-postgres INSERT"
_GIN = "ix_message_search_user_id_words"


async def _appends(store: Any, user: str, writers: int, texts: list[str]) -> WriterOp:
    ids = [(await store.create_conversation(user, title="tail")).id for _ in range(writers)]

    async def op(w: int, n: int) -> None:
        role = "user" if n % 2 == 0 else "assistant"
        await store.add_message(user, ids[w], role, texts[n % len(texts)])

    return op


async def _langchain(connections: list[Any], texts: list[str]) -> WriterOp:
    sessions = [uuid.uuid4() for _ in connections]

    async def op(w: int, n: int) -> None:
        message = {"role": "user" if n % 2 == 0 else "assistant", "content": texts[n % len(texts)]}
        await connections[w].execute(LANGCHAIN_INSERT, sessions[w], langchain_json(message))

    return op


async def _rounds(
    conn: Any, ops: list[tuple[str, WriterOp, str]], writers: int, sizes: StorageSizes
) -> dict[str, Samples]:
    """Each contender's share of the appends in turn, its GIN setting made first (untimed)."""
    per_writer = max(1, sizes.appends // sizes.rounds // writers)
    counters = [[0] * writers for _ in ops]
    pooled = {label: Samples() for label, _, _ in ops}
    for index, (_, op, gin) in enumerate(ops):  # warm-up
        await conn.execute(f"ALTER INDEX {_GIN} SET (fastupdate = {gin})")
        await _drive(op, writers, 2, counters[index])
    order = list(range(len(ops)))
    for number in range(sizes.rounds):
        shift = number % len(order)
        for index in order[shift:] + order[:shift]:
            label, op, gin = ops[index]
            await conn.execute(f"ALTER INDEX {_GIN} SET (fastupdate = {gin})")
            taken = await _drive(op, writers, per_writer, counters[index])
            pooled[label].latencies_ms += taken.latencies_ms
            pooled[label].seconds += taken.seconds
    await conn.execute(f"ALTER INDEX {_GIN} RESET (fastupdate)")
    return pooled


def _tail(figure: Figure) -> float:
    return round(figure.p99_ms / figure.p50_ms, 2) if figure.p50_ms else 0.0


async def _profile(dsn: str, op: WriterOp, writers: int, runs: int) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    waits: Counter[str] = Counter()
    stopping = False

    async def sample() -> None:
        sql = (
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w"
            " FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        while not stopping:
            waits.update(row["w"] for row in await conn.fetch(sql))
            await asyncio.sleep(0.001)

    wal = "SELECT pg_current_wal_lsn() AS at"
    try:
        before = await conn.fetchrow(wal)
        sampler = asyncio.create_task(sample())
        per_writer = max(1, runs // writers)
        await asyncio.gather(*(_loop(op, w, per_writer) for w in range(writers)))
        stopping = True
        await sampler
        after = await conn.fetchrow(wal)
    finally:
        await conn.close()
    done = per_writer * writers
    return {
        "waits": dict(waits.most_common(8)),
        "wal_bytes_per_append": round((after["at"] - before["at"]) / done),
    }


async def _loop(op: WriterOp, w: int, runs: int) -> None:
    for n in range(10_000, 10_000 + runs):
        await op(w, n)
