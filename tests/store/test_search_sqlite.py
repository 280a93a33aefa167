"""SQLite search's work (docs/search.md): FTS5 reads the searching user's posting lists only,
and the probe and the walk read their rows' words without asking FTS5; counted in SQLite VM
steps and read from query plans, never timed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.util import await_only

from chathistory import ChatHistory, migrations
from chathistory.db import create_engine
from chathistory.store import search, search_syntax
from chathistory.store.dialects import sqlite_search

STEP = 10  # the progress handler is called every STEP VM instructions


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    await migrations.upgrade(url)
    return url


@pytest.fixture
async def counted(url: str) -> AsyncIterator[tuple[ChatHistory, list[int]]]:
    """A store whose every connection counts the VM instructions it runs (in :data:`STEP`)."""
    steps = [0]
    engine = create_engine(url)

    def tick() -> int:
        steps[0] += 1
        return 0

    @event.listens_for(engine.sync_engine, "connect")
    def _count(dbapi_connection: Any, _record: Any) -> None:
        await_only(dbapi_connection.driver_connection.set_progress_handler(tick, STEP))

    store = ChatHistory(engine, owns_engine=True)
    try:
        yield store, steps
    finally:
        await store.close()


async def _steps(steps: list[int], work: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    before = steps[0]
    result = await work()
    return steps[0] - before, result


async def test_other_users_hits_cost_a_search_nothing(
    counted: tuple[ChatHistory, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word the probe does not meet is read from FTS5: only the searching user's hits of it,
    however many other users' messages hold it (before: every user's, about 8 VM steps each)."""
    store, steps = counted
    monkeypatch.setattr(search, "PROBE_ROWS", 10)
    me, other = f"me-{uuid.uuid4()}", f"other-{uuid.uuid4()}"
    mine = await store.create_conversation(me)
    hit = await store.add_message(me, mine.id, "user", "the okapi sleeps")
    await store.add_messages(me, mine.id, [{"role": "user", "content": "plain words"}] * 20)
    theirs = await store.create_conversation(other)

    async def find() -> Any:
        return await store.search_messages(me, "okapi")

    await store.add_messages(other, theirs.id, [{"role": "user", "content": "an okapi"}] * 100)
    few, page = await _steps(steps, find)
    assert [h.message.id for h in page.data] == [hit.id]
    for _ in range(3):
        await store.add_messages(other, theirs.id, [{"role": "user", "content": "an okapi"}] * 1000)
    many, page = await _steps(steps, find)
    assert [h.message.id for h in page.data] == [hit.id]
    # 3,000 more of the other user's hits: not a step more than noise (before: ~24,000 more).
    assert many * STEP <= few * STEP + 500, (few, many)


async def test_a_walk_asks_fts5_nothing(
    counted: tuple[ChatHistory, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phrase whose words fill the history but never adjacent walks the newest rows; FTS5
    asked about one row skips to the next real match in the whole index, so the walk reads the
    rows' words instead: its plan holds no FTS5 scan, and its steps do not grow with the
    history past the walk."""
    store, steps = counted
    monkeypatch.setattr(search, "PROBE_ROWS", 10)
    monkeypatch.setattr(search, "WALK_ROWS", 50)
    me = f"me-{uuid.uuid4()}"
    conv = await store.create_conversation(me)
    rows = [{"role": "user", "content": "beta then alpha"}] * 200

    async def walk() -> Any:
        return await store.search_messages(me, '"alpha beta"')

    await store.add_messages(me, conv.id, rows)
    short, page = await _steps(steps, walk)
    assert page.data == [] and page.has_more
    for _ in range(5):
        await store.add_messages(me, conv.id, rows)
    long, page = await _steps(steps, walk)
    assert page.data == [] and page.has_more
    assert long * STEP <= short * STEP + 500, (short, long)
    where = search.Where(
        store._db, me, search_syntax.parse_query('"alpha beta" -gamma'), None, "user", None
    )
    for walked in (search.PROBE_ROWS, search.WALK_ROWS):
        plan = await _plan(store, *search.statement(where, 21, None, walked))
        assert "message_search_fts" not in plan, plan
        assert "SEARCH message_search USING INDEX ix_message_search_user_id_created_at" in plan


async def test_candidates_come_from_the_users_own_fts5_terms(
    counted: tuple[ChatHistory, list[int]],
) -> None:
    store, _ = counted
    me, other = f"me-{uuid.uuid4()}", f"other-{uuid.uuid4()}"
    where = search.Where(store._db, me, search_syntax.parse_query("okapi"), None, None, None)
    plan = await _plan(store, *search.statement(where, 21, None))
    # FTS5's matches once (a list), each looked up by its rowid: no walk of message_search.
    assert "SCAN message_search_fts VIRTUAL TABLE" in plan, plan
    assert "SEARCH message_search USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    conv = await store.create_conversation(other)
    await store.add_messages(other, conv.id, [{"role": "user", "content": "an okapi"}] * 5)
    assert await _fts_count(store, sqlite_search.fts5_query(where.query, me)) == 0
    assert await _fts_count(store, sqlite_search.fts5_query(where.query, other)) == 5


async def test_the_migration_builds_the_index_again_both_ways(url: str) -> None:
    """0011 puts each user's words in FTS5 with their user, for the rows stored before it, and
    its downgrade gives back the shared index of 0004, rebuilt; deletes follow either way."""
    store = ChatHistory(create_engine(url), owns_engine=True)
    try:
        me, other, odd = f"me-{uuid.uuid4()}", f"other-{uuid.uuid4()}", "ünï 用户 \"x'"
        await migrations.downgrade(url, "0011_sqlite_search-1")
        convs = {}
        for user, count in ((me, 3), (other, 4), (odd, 2)):
            convs[user] = await store.create_conversation(user)
            rows = [{"role": "user", "content": f"okapi number {n}"} for n in range(count)]
            await store.add_messages(
                user, convs[user].id, [*rows, {"role": "user", "content": "!"}]
            )
        assert await _fts_count(store, '"okapi"') == 9  # the shared index: every user's
        await migrations.upgrade(url)
        okapi = search_syntax.parse_query("okapi")
        for user, count in ((me, 3), (other, 4), (odd, 2)):
            assert await _fts_count(store, sqlite_search.fts5_query(okapi, user)) == count
            page = await store.search_messages(user, "okapi")
            assert len(page.data) == count
        assert await _fts_count(store, '"okapi"') == 0  # no unprefixed term left
        await store.delete_conversation(other, convs[other].id)
        assert await _fts_count(store, sqlite_search.fts5_query(okapi, other)) == 0
        await migrations.downgrade(url, "0011_sqlite_search-1")
        assert await _fts_count(store, '"okapi"') == 5
        await store.delete_conversation(odd, convs[odd].id)
        assert await _fts_count(store, '"okapi"') == 3
        async with store._db.engine.connect() as conn:  # FTS5's own check of its index
            await conn.execute(
                text(
                    "INSERT INTO message_search_fts (message_search_fts) VALUES ('integrity-check')"
                )
            )
        await migrations.upgrade(url)
        assert await _fts_count(store, sqlite_search.fts5_query(okapi, me)) == 3
        assert len((await store.search_messages(me, "okapi")).data) == 3
    finally:
        await store.close()


async def _fts_count(store: ChatHistory, query: str) -> int:
    async with store._db.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM message_search_fts WHERE message_search_fts MATCH :q"),
            {"q": query},
        )
        return int(found.scalar_one())


async def _plan(store: ChatHistory, statement: Any, values: dict[str, Any]) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` of a search statement, its parameters as the store's."""
    async with store._db.engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect)
        params = compiled.construct_params(values)
        processors = compiled._bind_processors
        bound = tuple(
            processors[name](params[name]) if name in processors else params[name]
            for name in compiled.positiontup or ()
        )
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", bound)
        return "\n".join(str(row._mapping["detail"]) for row in rows)


async def test_the_bench_searches_sqlite_too() -> None:
    from chathistory_bench.search import SearchSizes, run_search_sqlite

    sizes = SearchSizes(user_messages=1_200, table_messages=3_000, users=3, runs=8, rounds=2)
    report = await run_search_sqlite(sizes, log=lambda _: None)
    labels = [figure.contender for figure in report.figures]
    assert len(labels) == 4 and labels[-1].startswith("read newest 50")
    assert all(figure.runs >= 8 and figure.p50_ms > 0 for figure in report.figures)
    assert [ratio.target for ratio in report.comparisons] == [10.0] * 3
    plans = report.setup["search_explain_sqlite"]
    assert set(plans) == {"zanzibar", "harbor", "quokka"}
    assert all("message_search_fts VIRTUAL TABLE" in plan for plan in plans.values())
    from chathistory_bench import render

    assert len(render(report)) == 2  # the figures, the ratios to the newest 50
