"""Citus for real: `db distribute`, router plans for every statement of the hot paths,
migrations on a distributed database, a shard moved under load, a worker restarted under
traffic. The store and API suites also run on this cluster (the ``citus`` backend)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from sqlalchemy import event
from typer.testing import CliRunner

from chathistory import ChatHistory, migrations
from chathistory.cli import app
from chathistory.db import create_engine
from chathistory.migrations import citus as citus_schema
from chathistory.models import metadata
from chathistory.store.dialects.postgresql import CITUS_SNAPSHOT_SQL
from tests.store.test_sharding import _exercise
from tests.support.citus_cluster import Cluster
from tests.test_faults import _auth, serving

TABLES = {table.name for table in metadata.sorted_tables}


def _distribute(url: str) -> Any:
    return CliRunner().invoke(app, ["db", "distribute", "--database-url", url])


async def _citus_tables(url: str) -> dict[str, tuple[str, str, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name::text, citus_table_type, distribution_column, colocation_id "
            "FROM citus_tables"
        )
    finally:
        await conn.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_distribute_is_idempotent_and_refuses_what_it_cannot_do(
    citus_database: Callable[[str], str], make_pg_database: Any, tmp_path: Path
) -> None:
    url = citus_database("distribute_cli")
    refused = _distribute(url)  # not migrated yet
    assert refused.exit_code == 1
    assert "run `chathistory db upgrade` first" in " ".join(refused.output.split())  # wrapped

    asyncio.run(migrations.upgrade(url))
    first = _distribute(url)
    assert first.exit_code == 0, first.output
    assert first.output.count("distributed now by user_id, 32 shards") == len(TABLES)
    tables = asyncio.run(_citus_tables(url))
    assert set(tables) == TABLES
    assert {kind for kind, _, _ in tables.values()} == {"distributed"}
    assert {column for _, column, _ in tables.values()} == {"user_id"}
    assert len({colocation for _, _, colocation in tables.values()}) == 1  # colocated

    second = _distribute(url)
    assert second.exit_code == 0
    assert second.output.count("already distributed") == len(TABLES)
    assert "nothing changed" in second.output
    assert asyncio.run(_citus_tables(url)) == tables

    plain = make_pg_database("distribute_plain")  # PostgreSQL without the extension
    asyncio.run(migrations.upgrade(plain))
    answer = _distribute(plain)
    assert answer.exit_code == 1
    assert "has no `citus` extension" in " ".join(answer.output.split())
    sqlite = f"sqlite:///{tmp_path / 'x.db'}"
    asyncio.run(migrations.upgrade(sqlite))
    answer = _distribute(sqlite)
    assert answer.exit_code == 1
    assert "needs PostgreSQL with the Citus extension" in " ".join(answer.output.split())


async def test_migrations_keep_working_on_a_distributed_database(
    citus_database: Callable[[str], str], user: str
) -> None:
    """Down to the first revision and back up on distributed tables: the tables a migration
    creates are distributed as it creates them, and the schema matches the models again."""
    url = citus_database("distributed_migrations")
    await migrations.upgrade(url)
    await citus_schema.distribute(url)
    before = await _citus_tables(url)
    await migrations.downgrade(url, "0001_initial")
    await migrations.upgrade(url)
    assert await _citus_tables(url) == before
    assert await migrations.drift(url) == []
    async with ChatHistory.open(url, migrate=False) as store:
        conv = await store.create_conversation(user)
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        await store.add_message(user, conv.id, "assistant", None, tool_calls=[call])
        await store.add_message(user, conv.id, "tool", "r", tool_call_id="c")
        assert len(await store.get_chat_history(user, conv.id)) == 2


# -- router plans ------------------------------------------------------------------------


def _task_counts(plan: Any) -> list[int]:
    """Every ``Task Count`` in a Citus plan (its jobs and distributed subplans)."""
    found: list[int] = []
    if isinstance(plan, dict):
        for key, value in plan.items():
            if key == "Task Count":
                found.append(int(value))
            else:
                found += _task_counts(value)
    elif isinstance(plan, list):
        for item in plan:
            found += _task_counts(item)
    return found


def _literal(value: Any) -> str:
    """A parameter as SQL text: Citus plans a statement with bound parameters only when it runs
    it, so EXPLAIN sees them inlined, as its router planner would."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return f"ARRAY[{', '.join(map(_literal, value))}]" if value else "'{}'"
    if isinstance(value, dict):
        value = json.dumps(value)
    elif isinstance(value, datetime):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


async def test_every_hot_statement_is_routed_to_one_shard(citus_store_url: str, user: str) -> None:
    """Every statement the store sends for one user's data, captured with its parameters
    (SQLAlchemy's and the ones sent on the asyncpg connection itself), is planned by Citus as
    one task on one shard."""
    engine = create_engine(citus_store_url)
    store = ChatHistory(engine, owns_engine=True)
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        for one in parameters if many else [parameters]:
            seen.append((statement, tuple(one or ())))

    def log(query: Any) -> None:
        args = tuple(query.args or ())
        if args and all(isinstance(arg, tuple) for arg in args):  # executemany: rows of args
            seen.extend((query.query, row) for row in args)
        else:
            seen.append((query.query, args))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    event.listen(engine.sync_engine, "connect", on_connect)
    try:
        await _exercise(store, user)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    statements = {
        repr((statement, args)): (statement, args)
        for statement, args in seen
        if any(re.search(rf"\b{table}\b", statement) for table in TABLES)
        and statement != CITUS_SNAPSHOT_SQL  # the export's documented fan-out (one per export)
    }
    assert len(statements) > 30
    fanned_out = []
    try:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            for statement, args in statements.values():
                assert len(args) >= len(set(re.findall(r"\$\d+", statement))), (statement, args)
                inlined = re.sub(
                    r"\$(\d+)", lambda m, a=args: _literal(a[int(m[1]) - 1]), statement
                )
                plan = await raw.fetchval(f"EXPLAIN (FORMAT JSON) {inlined}")
                plan = json.loads(plan) if isinstance(plan, str) else plan  # the json codec's
                counts = _task_counts(plan)
                if not counts or max(counts) != 1:
                    fanned_out.append((counts, statement))
    finally:
        await store.close()
    assert fanned_out == []


# -- rebalancing and failures --------------------------------------------------------------


async def _placement(url: str, user: str) -> tuple[int, int]:
    """(shard id, worker port) of the shard group holding ``user``."""
    conn = await asyncpg.connect(url)
    try:
        shard = await conn.fetchval(
            "SELECT get_shard_id_for_distribution_column('conversations', $1::text)", user
        )
        port = await conn.fetchval("SELECT nodeport FROM citus_shards WHERE shardid = $1", shard)
    finally:
        await conn.close()
    return int(shard), int(port)


MOVE_TIMEOUT = 120.0  # seconds: a move of this shard group takes a few; a stuck one fails


async def _move(url: str, shard: int, source: int, target: int) -> None:
    """Move ``shard``'s group from the worker on port ``source`` to ``target`` by logical
    replication, writes going on. Past :data:`MOVE_TIMEOUT` the move is cancelled and the test
    fails with the target's subscriptions and background workers as they were while it waited
    (an apply worker that cannot start, every ``max_worker_processes`` slot taken, leaves the
    move waiting forever)."""
    admin = await asyncpg.connect(url)
    try:
        move = asyncio.ensure_future(
            admin.execute(
                "SELECT citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3, "
                "shard_transfer_mode => 'force_logical')",
                shard,
                source,
                target,
            )
        )
        finished, _ = await asyncio.wait([move], timeout=MOVE_TIMEOUT)
        if not finished:
            state = await _replication_state(url, target)
            move.cancel()  # asyncpg cancels the statement on the server
            with contextlib.suppress(asyncio.CancelledError):
                await move
            raise AssertionError(
                f"the shard move did not finish within {MOVE_TIMEOUT:.0f} s; on the target "
                f"worker: {state}"
            )
        move.result()
    finally:
        await admin.close()


async def _replication_state(url: str, port: int) -> str:
    conn = await asyncpg.connect(
        urlunsplit(urlsplit(url)._replace(netloc=f"postgres@127.0.0.1:{port}"))
    )
    try:
        subscriptions = await conn.fetch("SELECT subname, pid FROM pg_stat_subscription")
        workers = await conn.fetch(
            "SELECT backend_type, datname FROM pg_stat_activity"
            " WHERE backend_type LIKE 'Citus%' OR backend_type LIKE 'logical replication%'"
        )
        limit = await conn.fetchval("SHOW max_worker_processes")
    finally:
        await conn.close()
    return (
        f"subscriptions (apply worker pid) {[tuple(row) for row in subscriptions]}, "
        f"background workers {[tuple(row) for row in workers]} of max_worker_processes {limit}"
    )


async def test_moving_a_users_shard_under_appends_loses_nothing(
    citus_cluster: Cluster, citus_store_url: str, user: str
) -> None:
    """8 writers append to one user's 8 conversations while Citus moves that user's shard group
    to the other worker (logical replication, writes go on): every acknowledged message is
    stored exactly once, nothing else is, and seq stays gapless."""
    async with ChatHistory.open(citus_store_url, migrate=False) as store:
        conversations = [(await store.create_conversation(user)).id for _ in range(8)]
        shard, source = await _placement(citus_store_url, user)
        target = citus_cluster.worker_port(1 if source == citus_cluster.worker_port(2) else 2)
        acknowledged: dict[uuid.UUID, list[uuid.UUID]] = {c: [] for c in conversations}
        moving = asyncio.Event()
        done = asyncio.Event()
        reached = asyncio.Event()  # `goal` appends acknowledged
        goal = 40
        during = 0

        async def write(conversation: uuid.UUID) -> None:
            nonlocal during
            n = 0
            while not done.is_set():
                n += 1
                message = await store.add_message(user, conversation, "user", f"m{n}")
                acknowledged[conversation].append(message.id)
                during += moving.is_set()
                if sum(map(len, acknowledged.values())) >= goal:
                    reached.set()

        writers = [asyncio.create_task(write(c)) for c in conversations]

        async def progress() -> None:
            """Until `goal` appends are acknowledged; a writer's failure ends the test."""
            waiting = asyncio.ensure_future(reached.wait())
            finished, _ = await asyncio.wait(
                [waiting, *writers], return_when=asyncio.FIRST_COMPLETED
            )
            for task in finished:
                if task is not waiting:
                    task.result()  # raises what the writer met
                    raise AssertionError("a writer stopped")

        try:
            await progress()  # the writers are under way
            moving.set()
            await _move(citus_store_url, shard, source, target)
            moving.clear()
            reached.clear()
            goal = sum(map(len, acknowledged.values())) + 40
            await progress()  # and they go on after it
        finally:
            done.set()
            await asyncio.gather(*writers)
        assert (await _placement(citus_store_url, user))[1] == target
        assert during > 0, "no append ran while the shard moved"
        for conversation, ids in acknowledged.items():
            stored = await store.get_chat_history(user, conversation, limit=None)
            assert [m.id for m in stored] == ids
            assert [m.seq for m in stored] == list(range(1, len(ids) + 1))


async def test_a_stopped_worker_is_503_and_recovers_without_a_restart(
    citus_cluster: Cluster, citus_store_url: str, tmp_path: Path
) -> None:
    users = {}
    for n in range(40):  # one user on each worker
        name = f"worker-{n}-{uuid.uuid4()}"
        users.setdefault((await _placement(citus_store_url, name))[1], name)
        if len(users) == 2:
            break
    stopped_port = citus_cluster.worker_port(1)
    down, up = users[stopped_port], users[citus_cluster.worker_port(2)]
    async with (
        serving(
            citus_store_url,
            tmp_path,
            pool_timeout="2",
            connect_timeout="2",
            retry_after_seconds="1",
        ) as (base, process),
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        paths = {}
        for name in (down, up):
            conv = await http.post(f"/api/{name}/conversations", json={}, headers=_auth(name))
            paths[name] = f"/api/{name}/conversations/{conv.json()['id']}/messages"
            first = {"role": "user", "content": "before"}
            assert (await http.post(paths[name], json=first, headers=_auth(name))).is_success

        citus_cluster.pg_ctl(1, "stop")
        try:
            for _ in range(3):
                for request in (
                    http.build_request("GET", paths[down], headers=_auth(down)),
                    http.build_request(
                        "POST",
                        paths[down],
                        json={"role": "user", "content": "during"},
                        headers=_auth(down),
                    ),
                ):
                    started = time.monotonic()
                    response = await http.send(request)
                    assert time.monotonic() - started < 8, "a request hung on the dead worker"
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "1"
            # The other worker's users are served all along.
            other = await http.get(paths[up], headers=_auth(up))
            assert other.status_code == 200, other.text
        finally:
            citus_cluster.pg_ctl(1, "start")
        deadline = time.monotonic() + 30
        while (await http.get(paths[down], headers=_auth(down))).status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover"
            await asyncio.sleep(0.2)  # polling the recovering worker
        after = {"role": "user", "content": "after"}
        answer = await http.post(paths[down], json=after, headers=_auth(down))
        assert answer.status_code == 201, answer.text
        stored = (await http.get(paths[down], headers=_auth(down))).json()["data"]
        assert [m["content"] for m in stored] == ["before", "after"]
        assert process.poll() is None  # the same process served throughout
