"""The library against its floors, operation by operation, in each statement mode.

For every operation the library's figure and the floor's come from the same alternating rounds
(see :mod:`chathistory_bench.rounds`), on the same data, in the same process; the ratio of
their medians is what section 6 sets a target for.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from chathistory import ChatHistory
from chathistory.db import parse_database_url
from chathistory_bench import fixtures, floors, library
from chathistory_bench.report import FLOOR_TARGET, SCALE_TARGET, Figure, Report
from chathistory_bench.rounds import Contender, alternate

Log = Callable[[str], None]
WRITERS = (1, 8)


@dataclass(frozen=True)
class Sizes:
    reads: int = 1000  # timed operations per read / list contender (over all rounds)
    appends: int = 800  # appends per contender and writer scenario (over all writers)
    rounds: int = 6
    history_sizes: tuple[int, ...] = (100, 100_000)
    conversations: int = 50_000  # of the listing user
    deep_page: int = 1000
    page_size: int = 20
    read_limit: int = 50

    @classmethod
    def quick(cls) -> Sizes:
        return cls(reads=300, appends=240, rounds=4)

    def check(self) -> None:
        if self.conversations < self.deep_page * self.page_size:
            raise ValueError(
                f"page {self.deep_page:,} of {self.page_size} needs at least "
                f"{self.deep_page * self.page_size:,} conversations"
            )
        if self.deep_page < 2 or self.rounds < 1 or not self.history_sizes:
            raise ValueError("need a deep page past page 1, one round and a history size")


@dataclass
class _World:
    """What every mode measures on: fixtures written once."""

    prefix: str
    read_user: str
    histories: dict[int, uuid.UUID]
    list_user: str
    deep_position: tuple[Any, uuid.UUID]
    deep_cursor: str | None = None


def _modes(prepared_statement_cache: bool | None) -> tuple[str, ...]:
    if prepared_statement_cache is None:
        return ("unnamed", "cached")
    return ("cached",) if prepared_statement_cache else ("unnamed",)


async def run(
    url: str,
    *,
    sizes: Sizes,
    prepared_statement_cache: bool | None = None,
    log: Log = print,
) -> Report:
    """Measure the PostgreSQL database at ``url`` (already migrated): both statement modes
    (``prepared_statement_cache=None``) or the one asked for. The data written is removed."""
    import asyncpg

    sizes.check()
    target = parse_database_url(url)
    dsn = target.connect_args["dsn"]
    modes = _modes(prepared_statement_cache)
    report = Report(
        setup={
            "sizes": asdict(sizes),
            "modes": list(modes),
            "url": target.render(),
            "floor_sql": {
                "append": floors.APPEND_SQL,
                "read newest": floors.READ_NEWEST_SQL,
                "messages page": floors.PAGE_SQL,
                "list page 1": floors.LIST_FIRST_SQL,
                "list page after": floors.LIST_AFTER_SQL,
            },
        }
    )
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    setup = await asyncpg.connect(dsn)
    try:
        report.setup["server_version"] = str(await setup.fetchval("SHOW server_version"))
        world = await _prepare(setup, prefix, sizes, log)
        for mode in modes:
            cached = mode == "cached"
            async with (
                library.opened(url, cached=cached) as store,
                floors.connections(dsn, cached=cached, count=max(WRITERS)) as conns,
                floors.pool(dsn, cached=cached, size=max(WRITERS)) as pool,
            ):
                if world.deep_cursor is None:
                    before = (sizes.deep_page - 1) * sizes.page_size
                    world.deep_cursor = await library.cursor_after(store, world.list_user, before)
                direct = _Floors(conns, pool)
                await _appends(store, direct, setup, world, sizes, mode, report, log)
                await _reads(store, direct, world, sizes, mode, report, log)
                await _lists(store, direct, world, sizes, mode, report, log)
    finally:
        log("cleaning up")
        await fixtures.remove(setup, prefix)
        await setup.close()
    return report


async def _prepare(conn: Any, prefix: str, sizes: Sizes, log: Log) -> _World:
    read_user, list_user = f"{prefix}-read", f"{prefix}-list"
    histories: dict[int, uuid.UUID] = {}
    for n in sizes.history_sizes:
        log(f"writing a conversation of {n:,} messages")
        histories[n] = uuid.uuid4()
        await fixtures.bulk_history(conn, read_user, histories[n], n)
    log(f"writing {sizes.conversations:,} conversations")
    await fixtures.bulk_conversations(conn, list_user, sizes.conversations)
    await conn.execute("ANALYZE messages")
    await conn.execute("ANALYZE conversations")
    position = await fixtures.position_before(
        conn, list_user, (sizes.deep_page - 1) * sizes.page_size
    )
    return _World(prefix, read_user, histories, list_user, position)


@dataclass(frozen=True)
class _Floors:
    """The two floors: direct connections (one per writer) and asyncpg's own pool."""

    conns: Sequence[Any]
    pool: Any


POOLED = "floor, asyncpg pool"


def _figures(
    report: Report,
    operation: str,
    mode: str,
    contenders: Sequence[Contender],
    samples: Sequence[Any],
    note: str = "",
) -> list[Figure]:
    """Add each contender's figure; the last two contenders are the floors (direct
    connection, then asyncpg's pool) of the ones before."""
    figures = [
        report.add(s.figure(operation, c.label, mode, note))
        for c, s in zip(contenders, samples, strict=True)
    ]
    for figure in figures[:-2]:
        report.compare("floor", operation, figure, figures[-2], FLOOR_TARGET)
        report.compare("pool", operation, figure, figures[-1], FLOOR_TARGET)
    return figures


async def _appends(
    store: ChatHistory,
    floor: _Floors,
    setup: Any,
    world: _World,
    sizes: Sizes,
    mode: str,
    report: Report,
    log: Log,
) -> None:
    user = f"{world.prefix}-append-{mode}"
    for writers in WRITERS:
        log(f"{mode}: append: {writers} writer(s), library and floor")
        mine = [(await store.create_conversation(user)).id for _ in range(writers)]
        theirs = [(await store.create_conversation(user)).id for _ in range(writers)]
        pooled = [(await store.create_conversation(user)).id for _ in range(writers)]
        contenders = [
            Contender("library add_message", library.append(store, user, mine)),
            Contender("floor: one-statement CTE", floors.append(floor.conns, user, theirs)),
            Contender(POOLED, floors.append([floor.pool] * writers, user, pooled)),
        ]
        samples = await alternate(
            contenders,
            runs=sizes.appends,
            rounds=sizes.rounds,
            writers=writers,
            warmup=2 * writers if writers > 1 else 8,
        )
        operation = (
            "append, 1 writer" if writers == 1 else f"append, {writers} writers (1 conv. each)"
        )
        _figures(report, operation, mode, contenders, samples)
        await fixtures.check_appended(setup, user, mine + theirs + pooled)


async def _reads(
    store: ChatHistory,
    floor: _Floors,
    world: _World,
    sizes: Sizes,
    mode: str,
    report: Report,
    log: Log,
) -> None:
    user, limit = world.read_user, sizes.read_limit
    by_size: dict[int, list[Figure]] = {}
    for n, conversation in world.histories.items():
        log(f"{mode}: read newest {limit} of {n:,}")
        reads = [
            Contender(
                "library get_chat_history", library.chat_history(store, user, conversation, limit)
            ),
            Contender(
                "floor: one SELECT", floors.read_newest(floor.conns[0], user, conversation, limit)
            ),
            Contender(POOLED, floors.read_newest(floor.pool, user, conversation, limit)),
        ]
        pages = [  # the same messages within the page's byte budget
            Contender(
                "library list_messages desc",
                library.newest_page(store, user, conversation, limit),
            ),
            Contender(
                "floor: one SELECT in budget",
                floors.read_page(floor.conns[0], user, conversation, limit),
            ),
            Contender(POOLED, floors.read_page(floor.pool, user, conversation, limit)),
        ]
        await _same_messages(reads, pages, limit)
        figures = []
        for contenders, operation in (
            (reads, f"read newest {limit} of {n:,}"),
            (pages, f"newest {limit} of {n:,} as a page"),
        ):
            samples = await alternate(contenders, runs=sizes.reads, rounds=sizes.rounds)
            figures += _figures(report, operation, mode, contenders, samples)[:1]
        by_size[n] = figures
    small, large = min(by_size), max(by_size)
    if small != large:
        for index in range(2):  # the two library paths
            report.compare(
                "scale",
                f"read newest {limit}: {large:,} / {small:,} messages",
                by_size[large][index],
                by_size[small][index],
                SCALE_TARGET,
            )


async def _same_messages(
    reads: Sequence[Contender], pages: Sequence[Contender], limit: int
) -> None:
    """The contenders read the same messages (untimed)."""
    history: Any = await reads[0].op(0, 0)
    rows: Any = await reads[1].op(0, 0)
    page: Any = await pages[0].op(0, 0)
    page_rows: Any = await pages[1].op(0, 0)
    ids = [row["id"] for row in rows]
    if (
        not ids
        or len(ids) > limit
        or [m.id for m in history] != ids
        or [m.id for m in reversed(page.data)] != ids
        or [row["id"] for row in reversed(page_rows)] != ids
        or any(row["content"] is None for row in page_rows)
    ):
        raise RuntimeError("the library and the floor read different messages")


async def _lists(
    store: ChatHistory,
    floor: _Floors,
    world: _World,
    sizes: Sizes,
    mode: str,
    report: Report,
    log: Log,
) -> None:
    user, size = world.list_user, sizes.page_size
    pages: list[Figure] = []
    for page, cursor, position in (
        (1, None, None),
        (sizes.deep_page, world.deep_cursor, world.deep_position),
    ):
        log(f"{mode}: list conversations: page {page:,}")
        contenders = [
            Contender("library list_conversations", library.list_page(store, user, size, cursor)),
            # The library reads one row past the page (has_more): so does the floor.
            Contender(
                "floor: keyset SELECT", floors.list_page(floor.conns[0], user, size + 1, position)
            ),
            Contender(POOLED, floors.list_page(floor.pool, user, size + 1, position)),
        ]
        mine: Any = await contenders[0].op(0, 0)
        theirs: Any = await contenders[1].op(0, 0)
        if [c.id for c in mine.data] != [row["id"] for row in theirs[:size]]:
            raise RuntimeError(f"the library and the floor list different page {page:,}")
        samples = await alternate(contenders, runs=sizes.reads, rounds=sizes.rounds)
        operation = (
            f"list conversations, page 1 (of {sizes.conversations:,})"
            if page == 1
            else f"list conversations, page {page:,}"
        )
        pages.append(_figures(report, operation, mode, contenders, samples)[0])
    report.compare(
        "scale", f"list: page {sizes.deep_page:,} / page 1", pages[1], pages[0], SCALE_TARGET
    )
