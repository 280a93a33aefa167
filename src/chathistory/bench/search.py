"""Search's speed (SPEC 6 and 8): one user with 100,000 messages in a table of 1,000,000, a rare
word and a word in half of that user's messages, each against reading the newest 50 of one of
that user's conversations (target: at most 10 times its p50), in alternating rounds; and the
plans PostgreSQL chose for both (``EXPLAIN (ANALYZE, BUFFERS)``), kept in the report.

Fixtures are bulk SQL: messages of 1,000 per conversation, one per second back from now, every
other one holding ``harbor`` (else ``meadow``), one in 10,000 ``zanzibar``; their search rows
written from the same text (PostgreSQL's ``simple`` parser cuts these plain ASCII words as the
store does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from chathistory import ChatHistory
from chathistory.bench import fixtures, library
from chathistory.bench.report import Report
from chathistory.bench.rounds import Contender, WriterOp, alternate
from chathistory.db import parse_database_url

SEARCH_TARGET = 10.0  # section 6: a search at most 10x the p50 of reading the newest 50
RARE, COMMON = "zanzibar", "harbor"
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
