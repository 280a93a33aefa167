"""Search's speed (SPEC 6 and 8): one user with 100,000 messages in a table of 1,000,000, a rare
word and a word in half of that user's messages, each against reading the newest 50 of one of
that user's conversations (target: at most 10 times its p50), in alternating rounds; and the
plans PostgreSQL chose for both (``EXPLAIN (ANALYZE, BUFFERS)``), kept in the report.
:func:`run_search_sqlite` does the same on SQLite (a file database in a temporary directory,
written with ``executemany`` in large transactions; a word absent from the table is searched
too) and keeps SQLite's ``EXPLAIN QUERY PLAN`` of the statements.

Fixtures are bulk SQL: messages of 1,000 per conversation, one per second back from now, every
other one holding ``harbor`` (else ``meadow``), one in 10,000 ``zanzibar``; their search rows
written from the same text (PostgreSQL's ``simple`` parser cuts these plain ASCII words as the
store does).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from chathistory import ChatHistory
from chathistory.db import parse_database_url
from chathistory_bench import fixtures, library
from chathistory_bench.report import Report
from chathistory_bench.rounds import Contender, WriterOp, alternate

SEARCH_TARGET = 10.0  # section 6: a search at most 10x the p50 of reading the newest 50
RARE, COMMON, ABSENT = "zanzibar", "harbor", "quokka"
PER_CONVERSATION = 1000
Log = Callable[[str], None]


@dataclass(frozen=True)
class SearchSizes:
    user_messages: int = 100_000
    table_messages: int = 1_000_000
    users: int = 10  # the searching user and the others sharing the table
    runs: int = 400
    rounds: int = 4

    @classmethod
    def quick(cls) -> SearchSizes:
        return cls(user_messages=10_000, table_messages=100_000, runs=200)


async def run_search(url: str, sizes: SearchSizes, *, log: Log = print) -> Report:
    import asyncpg

    dsn = parse_database_url(url).connect_args["dsn"]
    report = Report(setup={"search_sizes": asdict(sizes)})
    prefix = f"bench-{uuid.uuid4().hex[:8]}-search"
    user = f"{prefix}-0"
    setup = await asyncpg.connect(dsn)
    try:
        conversations = await _write(setup, prefix, sizes, log)
        async with library.opened(url, cached=False) as store:
            contenders = [
                Contender(f"search a rare word ({RARE})", _search(store, user, RARE)),
                Contender(f"search a common word ({COMMON})", _search(store, user, COMMON)),
                Contender(
                    "read newest 50 (get_chat_history)",
                    library.chat_history(store, user, conversations[0], 50),
                ),
            ]
            for contender in contenders[:2]:
                page: Any = await contender.op(0, 0)
                if not page.data:
                    raise RuntimeError(f"{contender.label}: no hit")
            log("search: rare word, common word, newest 50, alternating")
            samples = await alternate(contenders, runs=sizes.runs, rounds=sizes.rounds)
            operation = f"search, {sizes.user_messages:,} of {sizes.table_messages:,} messages"
            figures = [
                report.add(s.figure(operation, c.label, "unnamed"))
                for c, s in zip(contenders, samples, strict=True)
            ]
            for figure in figures[:2]:
                report.compare("search", operation, figure, figures[2], SEARCH_TARGET)
            report.setup["search_explain"] = {
                word: await _explain(setup, store, user, word) for word in (RARE, COMMON)
            }
    finally:
        log("search: cleaning up")
        await fixtures.remove(setup, prefix)
        await setup.close()
    return report


def _search(store: ChatHistory, user: str, word: str) -> WriterOp:
    async def op(_w: int, _n: int) -> object:
        return await store.search_messages(user, word)

    return op


async def _write(conn: Any, prefix: str, sizes: SearchSizes, log: Log) -> list[uuid.UUID]:
    """The searching user's conversations (``{prefix}-0``), then the other users' share of the
    table; returns the searching user's conversation ids."""
    others = max(0, sizes.table_messages - sizes.user_messages)
    per_other = others // max(1, sizes.users - 1)
    mine: list[uuid.UUID] = []
    for index in range(sizes.users):
        count = sizes.user_messages if index == 0 else per_other
        user = f"{prefix}-{index}"
        log(f"search: writing {count:,} messages of {user}")
        for start in range(0, count, PER_CONVERSATION):
            conversation = uuid.uuid4()
            if index == 0:
                mine.append(conversation)
            await _conversation(
                conn, user, conversation, start, min(PER_CONVERSATION, count - start)
            )
    log("search: analyze")
    await conn.execute("ANALYZE messages")
    await conn.execute("ANALYZE message_search")
    return mine


async def _conversation(conn: Any, user: str, conversation: uuid.UUID, start: int, n: int) -> None:
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
        " message_count) VALUES ($1, $2, 'search bench', '{}', now(), now(), $3)",
        conversation,
        user,
        n,
    )
    # Message k of the user (k = start + s) was written k seconds after the first.
    await conn.execute(
        "WITH m AS (INSERT INTO messages (id, user_id, conversation_id, seq, role, content,"
        " metadata, token_count, created_at)"
        " SELECT gen_random_uuid(), $1, $2, s,"
        " CASE WHEN s % 2 = 0 THEN 'assistant' ELSE 'user' END,"
        " to_jsonb('turn ' || ($3 + s) || ' about the '"
        " || CASE WHEN ($3 + s) % 2 = 0 THEN 'harbor' ELSE 'meadow' END"
        " || CASE WHEN ($3 + s) % 10000 = 7 THEN ' and zanzibar' ELSE '' END"
        " || '. ' || $4::text),"
        " '{}'::jsonb, 90, now() - interval '1 year' + ($3 + s) * interval '1 second'"
        " FROM generate_series(1, $5) AS s RETURNING id, user_id, conversation_id,"
        " created_at, content)"
        " INSERT INTO message_search (message_id, user_id, conversation_id, created_at, words)"
        " SELECT id, user_id, conversation_id, created_at,"
        " to_tsvector('simple', content #>> '{}') FROM m",
        user,
        conversation,
        start,
        fixtures.CONTENT[:120],
        n,
    )


async def _explain(conn: Any, store: ChatHistory, user: str, word: str) -> str:
    """The plans PostgreSQL runs for the store's search statements, with their timings: the
    probe of the newest rows (a common word's whole page), then the index candidates (a rare
    word's: the probe found no hit; the store forces the GIN index for it, the plan here is
    the planner's own)."""
    from sqlalchemy.dialects import postgresql

    from chathistory.store import search, search_syntax

    where = search.Where(store._db, user, search_syntax.parse_query(word), None, None, None)
    plans = []
    for statement, values in (search.statement(where, 21, None, search.PROBE_ROWS),) + (
        (search.statement(where, 21, None),) if word == RARE else ()
    ):
        compiled = statement.params(values).compile(
            dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
            compile_kwargs={"literal_binds": True},
        )
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {compiled}")
        plans.append("\n".join(row[0] for row in rows))
    return "\n\n".join(plans)


async def run_search_sqlite(sizes: SearchSizes, *, log: Log = print) -> Report:
    """The same scenario on SQLite: a file database of its own in a temporary directory,
    migrated, bulk-written (the search rows go to FTS5 through the schema's triggers, as the
    store's appends do) and removed afterwards."""
    import asyncio
    import tempfile
    from pathlib import Path

    from chathistory import migrations

    report = Report(setup={"search_sizes_sqlite": asdict(sizes)})
    user = "bench-search-0"
    with tempfile.TemporaryDirectory(prefix="chathistory-bench-") as directory:
        path = Path(directory) / "search.db"
        url = f"sqlite:///{path}"
        await migrations.upgrade(url)
        conversations = await asyncio.to_thread(_write_sqlite, str(path), sizes, log)
        async with library.opened(url, cached=False) as store:
            contenders = [
                Contender(f"search a rare word ({RARE}), SQLite", _search(store, user, RARE)),
                Contender(f"search a common word ({COMMON}), SQLite", _search(store, user, COMMON)),
                Contender(
                    f"search an absent word ({ABSENT}), SQLite", _search(store, user, ABSENT)
                ),
                Contender(
                    "read newest 50 (get_chat_history), SQLite",
                    library.chat_history(store, user, conversations[0], 50),
                ),
            ]
            for contender in contenders[:2]:
                page: Any = await contender.op(0, 0)
                if not page.data:
                    raise RuntimeError(f"{contender.label}: no hit")
            log("search on SQLite: rare, common and absent word, newest 50, alternating")
            samples = await alternate(contenders, runs=sizes.runs, rounds=sizes.rounds)
            operation = (
                f"search on SQLite, {sizes.user_messages:,} of {sizes.table_messages:,} messages"
            )
            figures = [
                report.add(s.figure(operation, c.label, "unnamed"))
                for c, s in zip(contenders, samples, strict=True)
            ]
            for figure in figures[:3]:
                report.compare("search", operation, figure, figures[3], SEARCH_TARGET)
            report.setup["search_explain_sqlite"] = {
                word: await _explain_sqlite(store, user, word) for word in (RARE, COMMON, ABSENT)
            }
    return report


def _write_sqlite(path: str, sizes: SearchSizes, log: Log) -> list[uuid.UUID]:
    """The same fixtures as :func:`_write` on SQLite, with ``executemany`` in one transaction
    per user; returns the searching user's conversation ids."""
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from chathistory.store import search_syntax

    others = max(0, sizes.table_messages - sizes.user_messages)
    per_other = others // max(1, sizes.users - 1)
    first = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=365)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    tail = fixtures.CONTENT[:120]
    words = {  # the index text of every message but for its number
        (topic, rare): search_syntax.index_text(
            f"about the {topic}{' and zanzibar' if rare else ''}. {tail}"
        )
        for topic in ("harbor", "meadow")
        for rare in (False, True)
    }
    mine: list[uuid.UUID] = []
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        for index in range(sizes.users):
            count = sizes.user_messages if index == 0 else per_other
            user = f"bench-search-{index}"
            log(f"search on SQLite: writing {count:,} messages of {user}")
            db.execute("BEGIN")
            for start in range(0, count, PER_CONVERSATION):
                conversation = uuid.uuid4()
                if index == 0:
                    mine.append(conversation)
                n = min(PER_CONVERSATION, count - start)
                db.execute(
                    "INSERT INTO conversations (id, user_id, title, metadata, created_at,"
                    " updated_at, message_count) VALUES (?, ?, 'search bench', '{}', ?, ?, ?)",
                    (conversation.hex, user, now, now, n),
                )
                message_rows, search_rows = [], []
                for s in range(1, n + 1):
                    k = start + s
                    topic = "harbor" if k % 2 == 0 else "meadow"
                    rare = k % 10000 == 7
                    text = f"turn {k} about the {topic}{' and zanzibar' if rare else ''}. {tail}"
                    at = (first + timedelta(seconds=k)).isoformat(sep=" ", timespec="microseconds")
                    message_id = uuid.uuid4().hex
                    role = "assistant" if s % 2 == 0 else "user"
                    message_rows.append(
                        (message_id, user, conversation.hex, s, role, json.dumps(text), at)
                    )
                    search_rows.append(
                        (message_id, user, conversation.hex, at, f"turn {k} {words[topic, rare]}")
                    )
                db.executemany(
                    "INSERT INTO messages (id, user_id, conversation_id, seq, role, content,"
                    " metadata, token_count, created_at) VALUES (?, ?, ?, ?, ?, ?, '{}', 90, ?)",
                    message_rows,
                )
                db.executemany(
                    "INSERT INTO message_search (message_id, user_id, conversation_id,"
                    " created_at, words) VALUES (?, ?, ?, ?, ?)",
                    search_rows,
                )
            db.execute("COMMIT")
        # No ANALYZE: the store never runs it, so SQLite plans without statistics, as it does
        # for the store's users.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return mine


async def _explain_sqlite(store: ChatHistory, user: str, word: str) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` of the store's search statements for ``word``: the
    probe of the newest rows, then the index candidates."""
    from chathistory.store import search, search_syntax

    where = search.Where(store._db, user, search_syntax.parse_query(word), None, None, None)
    plans = []
    async with store._db.engine.connect() as conn:
        for statement, values in (
            search.statement(where, 21, None, search.PROBE_ROWS),
            search.statement(where, 21, None),
        ):
            sql, parameters = compiled_sqlite(statement, values, conn.dialect)
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters)).all()
            plans.append(
                "\n".join(
                    f"{r['id']:>3} {r['parent']:>3} {r['detail']}"
                    for r in (x._mapping for x in rows)
                )
            )
    return "\n\n".join(plans)


def compiled_sqlite(
    statement: Any, values: dict[str, Any], dialect: Any
) -> tuple[str, tuple[Any, ...]]:
    """A statement's SQLite text and its positional parameters, as the driver receives them."""
    compiled = statement.compile(dialect=dialect)
    params = compiled.construct_params(values)
    processors = compiled._bind_processors
    return str(compiled), tuple(
        processors[name](params[name]) if name in processors else params[name]
        for name in compiled.positiontup or ()
    )
