"""Other users' appends while a large purge runs (SPEC 9: the purge "never holds locks for long
or stalls writers"): appends by 1 and by 8 writers, each on its own conversation of a user the
purge does not touch, timed while ``ChatHistory.purge`` deletes 100,000 conversations (its
default batch size and duty, or those of :class:`PurgeSizes`; the "purge running" phases take
in its pauses) and, in between, while nothing else runs. Target: the p50 (and p99) of an append
during the purge at most 1.3 times the baseline's.

Set-up is bulk SQL (untimed): the victims' conversations, expired a minute ago (or, with
``stale``, not updated for 90 days and purged with ``older_than=30 days``), each with
``messages`` messages and their search rows, written a few thousand per statement. Only the
victims are purged (``user_id`` given, user by user), never anyone else's expired data.

The purge runs in a process of its own, as ``chathistory purge`` would, so its Python time
does not share the appenders' event loop. It is one-shot, so the baseline is interleaved with
it instead of run in other rounds: the purge process runs ``phase_batches`` batches and parks
between two of them (its ``progress`` callback, called after each batch's transaction, waits
for the bench), while the appenders are timed ("purge running"); then, the purge parked and
holding nothing, they are timed for as long again ("no purge"). Phases take turns writer count
by writer count, the order rotated each round (D B, B D, ...), so a slow spell of the shared
machine lands on both, until the purge is done; then the next of ``purges`` purges, on fresh
victims, the samples pooled. The purge's own figure: one batch's latency, and conversations
per second of the time it was running (its throttle's pauses included, the parking excluded:
``duty``, the library's default unless given). What a purge leaves to the server
(autovacuum of the deleted rows, checkpoints) may land in either phase.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from chathistory import ChatHistory
from chathistory.db import parse_database_url
from chathistory.store.purging import DEFAULT_BATCH, DEFAULT_DUTY
from chathistory_bench import fixtures, library
from chathistory_bench.report import PURGE_P99_TARGET, PURGE_TARGET, Figure, Ratio, Report
from chathistory_bench.rounds import Samples, WriterOp, percentile

STALE_AFTER = timedelta(days=30)  # older_than of the stale variant (its conversations: 90 days)
CHUNK = 5000  # victims' conversations per set-up statement
WARMUP = 4  # untimed appends per writer and lane before the purge starts
Log = Callable[[str], None]


@dataclass(frozen=True)
class PurgeSizes:
    conversations: int = 100_000  # purged, spread over the victims
    victims: int = 10  # users whose conversations the purge deletes
    messages: int = 2  # per purged conversation, each with its search row
    writers: tuple[int, ...] = (1, 8)  # appenders, each on a conversation of its own
    phase_batches: int = 4  # purge batches per "purge running" phase
    stale: bool = False  # old conversations purged with older_than, instead of expired ones
    purges: int = 3  # purges of `conversations` one after the other (fresh victims each)
    duty: float = DEFAULT_DUTY  # the purge's duty (its throttle; 1: batches back to back)
    batch_size: int = DEFAULT_BATCH  # the purge's batch size

    @classmethod
    def quick(cls) -> PurgeSizes:
        return cls(conversations=10_000, victims=5, phase_batches=2, purges=2)

    def check(self) -> None:
        if not 1 <= self.victims <= self.conversations or self.messages < 1:
            raise ValueError("need at least one conversation per victim and one message each")
        if not self.writers or min(self.writers) < 1 or min(self.phase_batches, self.purges) < 1:
            raise ValueError("need writers and at least one batch per phase")
        per_victim = self.conversations // self.victims
        if self.victims * math.ceil(per_victim / self.batch_size) < (
            len(self.writers) * self.phase_batches
        ):
            raise ValueError(
                f"{self.conversations:,} conversations make fewer purge batches of "
                f"{self.batch_size} than one phase per writer count needs"
            )


async def run_purge(url: str, sizes: PurgeSizes, *, log: Log = print) -> Report:
    """Measure on the PostgreSQL database at ``url`` (already migrated); the data written is
    removed. Only the bench's own users are purged (``user_id`` given), never anyone else's
    expired conversations."""
    import asyncpg

    sizes.check()
    dsn = parse_database_url(url).connect_args["dsn"]
    report = Report(setup={"purge_sizes": asdict(sizes)})
    prefix = f"bench-{uuid.uuid4().hex[:8]}-purge"
    setup = await asyncpg.connect(dsn)
    try:
        async with library.opened(url, cached=False) as store:
            lanes = await _lanes(store, prefix, sizes)
            run = _Run(sizes, lanes)
            for number in range(sizes.purges):
                victims = [f"{prefix}-victim-{number}-{k}" for k in range(sizes.victims)]
                await _write(setup, victims, sizes, log)
                purger = _Purger(url, victims, STALE_AFTER if sizes.stale else None, sizes)
                try:
                    await purger.start()
                    log(
                        f"purge {number + 1} of {sizes.purges}: {sizes.conversations:,} "
                        f"conversations; appends by {' and '.join(map(str, sizes.writers))} "
                        "writer(s) of other users, alternating"
                    )
                    await run.measure(purger)
                finally:
                    await purger.close()
                await _check_purged(setup, victims, sizes, purger.result)
                run.add(purger.result)
            for lane in lanes:
                await fixtures.check_appended(setup, lane.user, lane.conversations)
        _figures(report, run)
    finally:
        log("purge: cleaning up")
        await fixtures.remove(setup, prefix)
        await setup.close()
    return report


async def _lanes(store: ChatHistory, prefix: str, sizes: PurgeSizes) -> list[_Lane]:
    """Per writer count, a user timed during the purge and one without, each writer on a
    conversation of its own (warmed up: the pool holds a connection per writer)."""
    lanes = [
        _Lane(w, during, f"{prefix}-{w}w-{'during' if during else 'baseline'}")
        for w in sizes.writers
        for during in (True, False)
    ]
    for lane in lanes:
        lane.conversations = [
            (await store.create_conversation(lane.user)).id for _ in range(lane.writers)
        ]
        lane.op = library.append(store, lane.user, lane.conversations)
        for _ in range(WARMUP):
            await _phase(lane, lambda: False)
    return lanes


@dataclass
class _Lane:
    """One writer count, timed during the purge or not: its user and conversations."""

    writers: int
    during: bool
    user: str
    conversations: list[uuid.UUID] = field(default_factory=list)
    op: WriterOp | None = None
    counters: list[int] = field(default_factory=list)


async def _phase(lane: _Lane, keep_going: Callable[[], bool]) -> Samples:
    """Each writer appends (at least once) until ``keep_going()`` says no."""
    op = lane.op
    if op is None:
        raise RuntimeError("lane without an operation")
    if not lane.counters:
        lane.counters = [0] * lane.writers
    latencies: list[float] = []

    async def writer(w: int) -> None:
        while True:
            n = lane.counters[w]
            lane.counters[w] += 1
            t0 = time.perf_counter()
            await op(w, n)
            latencies.append((time.perf_counter() - t0) * 1000)
            if not keep_going():
                return

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(lane.writers)))
    return Samples(latencies, time.perf_counter() - start)


class _Run:
    """The samples of every purge of the run, pooled, and the purges' own figures."""

    def __init__(self, sizes: PurgeSizes, lanes: Sequence[_Lane]) -> None:
        self.sizes = sizes
        self.lanes = {(lane.writers, lane.during): lane for lane in lanes}
        self.pooled = {key: Samples() for key in self.lanes}
        self.seconds = dict.fromkeys(sizes.writers, 0.25)  # until a purge phase has run
        self.purged = {"conversations": 0, "messages": 0}
        self.batches_ms: list[float] = []
        self.active = self.wall = 0.0

    async def measure(self, purger: _Purger) -> None:
        """Rounds of, per writer count, a purge phase and a baseline phase as long as that
        writer count's last purge phase, the order rotated, until the purge is done."""
        round_number = 0
        while not purger.finished:
            for index, writers in enumerate(self.sizes.writers):
                order = (True, False) if (round_number + index) % 2 == 0 else (False, True)
                for during in order:
                    pooled = self.pooled[writers, during]
                    if purger.finished and (during or pooled.latencies_ms):
                        continue
                    if during:
                        await purger.go(self.sizes.phase_batches)
                        taken = await _phase(self.lanes[writers, True], purger.running)
                        await purger.parked()
                        self.seconds[writers] = taken.seconds
                    else:
                        taken = await _phase(
                            self.lanes[writers, False], _until(self.seconds[writers])
                        )
                    pooled.latencies_ms += taken.latencies_ms
                    pooled.seconds += taken.seconds
            round_number += 1

    def add(self, done: dict[str, Any]) -> None:
        self.purged["conversations"] += done["conversations"]
        self.purged["messages"] += done["messages"]
        self.batches_ms += done["batches_ms"]
        self.active += done["active_seconds"]
        self.wall += done["wall_seconds"]


def _until(seconds: float) -> Callable[[], bool]:
    deadline = time.perf_counter() + seconds
    return lambda: time.perf_counter() < deadline


class _Purger:
    """``ChatHistory.purge`` of the victims in a process of its own (``python -c``, see
    :func:`purge_process`), run a few batches at a time: JSON lines, the set-up and ``go``
    on its standard input, ``ready`` / ``parked`` / ``done`` / ``error`` on its output."""

    def __init__(
        self, url: str, users: list[str], older_than: timedelta | None, sizes: PurgeSizes
    ) -> None:
        self._config = {
            "url": url,  # on a pipe, not the command line (it may hold a password)
            "users": users,
            "older_than": None if older_than is None else older_than.total_seconds(),
            "duty": sizes.duty,
            "batch_size": sizes.batch_size,
        }
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._error = ""
        self.finished = False
        self.result: dict[str, Any] = {}

    async def start(self) -> None:
        """Start the process; return once it is connected and waits for ``go``."""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from chathistory_bench.purge import purge_process; purge_process()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await self._send(self._config)
        await self.parked()

    async def _read(self) -> None:
        if self._process is None or self._process.stdout is None:
            raise RuntimeError("the purge process has not started")
        try:
            async for line in self._process.stdout:
                message = json.loads(line)
                if message["kind"] == "done":
                    self.finished, self.result = True, message["result"]
                elif message["kind"] == "error":
                    self.finished, self._error = True, message["error"]
                self._idle.set()
        except (ValueError, KeyError, TypeError):
            self._error = f"the purge process wrote something else: {line!r}"
        finally:
            self.finished = True  # its output ended (or could not be read): it is over
            self._idle.set()

    async def _send(self, message: dict[str, Any]) -> None:
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the purge process has not started")
        self._process.stdin.write(json.dumps(message).encode() + b"\n")
        await self._process.stdin.drain()

    async def go(self, batches: int) -> None:
        """Let the purge run ``batches`` more batches."""
        self._idle.clear()
        await self._send({"go": batches})

    def running(self) -> bool:
        """Whether the purge is running its batches (never waits)."""
        return not self._idle.is_set()

    async def parked(self) -> None:
        """Until the purge has parked between two batches or is done."""
        await self._idle.wait()
        if self._error:
            raise RuntimeError(f"the purge failed:\n{self._error}")
        if self.finished and not self.result:
            raise RuntimeError("the purge process ended without its result")

    async def close(self) -> None:
        if self._process is None:
            return
        if self._process.returncode is None and self._process.stdin is not None:
            self._process.stdin.close()  # a parked purge stops at the end of its input
            try:
                await asyncio.wait_for(self._process.wait(), 30)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            await self._reader


def purge_process() -> None:
    """The purge process's main: its set-up on the first line of standard input."""
    config = json.loads(sys.stdin.readline())
    older_than = config["older_than"]
    try:
        result = _run_purge(
            config["url"],
            config["users"],
            None if older_than is None else timedelta(seconds=older_than),
            float(config["duty"]),
            int(config["batch_size"]),
        )
    except _Stop:
        return
    except Exception:
        _tell(kind="error", error=traceback.format_exc())
        return
    _tell(kind="done", result=result)


def _tell(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _Stop(Exception):
    """The bench closed the purge's input: stop between two batches."""


def _wait_for_go() -> int:
    line = sys.stdin.readline()
    if not line:
        raise _Stop
    return int(json.loads(line)["go"])


def _run_purge(
    url: str, users: list[str], older_than: timedelta | None, duty: float, batch_size: int
) -> dict[str, Any]:
    """Purge each victim (its ``user_id`` given) with ``batch_size`` and ``duty``,
    parking after the batches the bench allows; one batch's period (the batch and the
    throttle's pause before the next), the counts, the running time (pauses included, parking
    excluded)."""
    clock = time.perf_counter
    state = {"budget": 0, "mark": 0.0, "active": 0.0}
    batches: list[float] = []

    def progress(_count: int) -> None:  # after each batch's transaction: nothing is held
        now = clock()
        batches.append((now - state["mark"]) * 1000)
        state["active"] += now - state["mark"]
        state["budget"] -= 1
        state["mark"] = now
        if state["budget"] <= 0:
            _tell(kind="parked")
            state["budget"] = _wait_for_go()
            state["mark"] = clock()

    async def purge_all() -> dict[str, Any]:
        deleted = messages = 0
        async with library.opened(url, cached=False) as store:
            await store.list_conversations(users[0], limit=1)  # connected before timing
            _tell(kind="ready")
            state["budget"] = _wait_for_go()
            started = clock()
            for user in users:
                state["mark"] = clock()
                done = await store.purge(
                    older_than=older_than,
                    user_id=user,
                    progress=progress,
                    duty=duty,
                    batch_size=batch_size,
                )
                state["active"] += clock() - state["mark"]
                deleted += done.conversations
                messages += done.messages
            return {
                "conversations": deleted,
                "messages": messages,
                "batches_ms": batches,
                "active_seconds": state["active"],
                "wall_seconds": clock() - started,
            }

    return asyncio.run(purge_all())


async def _write(conn: Any, victims: list[str], sizes: PurgeSizes, log: Log) -> None:
    log(
        f"purge: writing {sizes.conversations:,} {'old' if sizes.stale else 'expired'} "
        f"conversations of {sizes.victims} users, {sizes.messages} messages each"
    )
    per_victim, extra = divmod(sizes.conversations, sizes.victims)
    for index, user in enumerate(victims):
        count = per_victim + (1 if index < extra else 0)
        for start in range(0, count, CHUNK):
            await conn.execute(
                _VICTIMS_SQL,
                user,
                sizes.messages,
                sizes.stale,
                min(CHUNK, count - start),
                fixtures.CONTENT[:120],
            )
    for table in ("conversations", "messages", "message_search"):
        await conn.execute(f"ANALYZE {table}")


# $1 user, $2 messages per conversation, $3 stale (else expired), $4 conversations, $5 text.
_VICTIMS_SQL = (
    "WITH c AS (INSERT INTO conversations (id, user_id, title, metadata, created_at,"
    " updated_at, message_count, has_user_message, expires_at)"
    " SELECT gen_random_uuid(), $1, 'purge bench', '{}', t, t, $2, true,"
    " CASE WHEN $3 THEN NULL ELSE now() - interval '1 minute' END"
    " FROM (SELECT now() - CASE WHEN $3 THEN interval '90 days' ELSE interval '0' END"
    " - s * interval '1 second' AS t FROM generate_series(1, $4) AS s) AS g"
    " RETURNING id, user_id, created_at),"
    " m AS (INSERT INTO messages (id, user_id, conversation_id, seq, role, content, metadata,"
    " token_count, created_at)"
    " SELECT gen_random_uuid(), c.user_id, c.id, s,"
    " CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,"
    " to_jsonb('a temporary turn ' || s || ' about the harbor. ' || $5::text), '{}'::jsonb,"
    " 40, c.created_at + s * interval '1 millisecond'"
    " FROM c CROSS JOIN generate_series(1, $2) AS s"
    " RETURNING id, user_id, conversation_id, created_at, content)"
    " INSERT INTO message_search (message_id, user_id, conversation_id, created_at, words)"
    " SELECT id, user_id, conversation_id, created_at, to_tsvector('simple', content #>> '{}')"
    " FROM m"
)


_LEFT_SQL = (
    "SELECT (SELECT count(*) FROM conversations WHERE user_id = ANY($1::text[])) AS conversations,"
    " (SELECT count(*) FROM messages WHERE user_id = ANY($1::text[])) AS messages,"
    " (SELECT count(*) FROM message_search WHERE user_id = ANY($1::text[])) AS search_rows"
)


async def _check_purged(
    conn: Any, victims: list[str], sizes: PurgeSizes, done: dict[str, Any]
) -> None:
    """The purge deleted every victim's conversation, message and search row, and said so."""
    expected = (sizes.conversations, sizes.conversations * sizes.messages)
    if (done.get("conversations"), done.get("messages")) != expected:
        raise RuntimeError(f"the purge reported {done}, expected {expected}")
    left = await conn.fetchrow(_LEFT_SQL, victims)
    if any(left.values()):
        raise RuntimeError(f"the purge left rows behind: {dict(left)}")


def _figures(report: Report, run: _Run) -> None:
    sizes = run.sizes
    what = "old" if sizes.stale else "expired"
    purges = f"{sizes.purges} purges" if sizes.purges > 1 else "a purge"
    for writers in sizes.writers:
        operation = (
            f"append, {writers} writer{'s (1 conv. each)' if writers > 1 else ''}, other users"
        )
        during, baseline = (
            report.add(
                run.pooled[writers, flag].figure(
                    operation,
                    f"library add_message, {'purge running' if flag else 'no purge'}",
                    "unnamed",
                )
            )
            for flag in (True, False)
        )
        purge_of = f"{operation}: {purges} of {sizes.conversations:,} {what}"
        report.compare("purge", purge_of, during, baseline, PURGE_TARGET)
        report.comparisons.append(
            Ratio(
                "purge p99",
                purge_of,
                during.contender,
                during.mode,
                during.name,
                baseline.name,
                round(during.p99_ms / baseline.p99_ms, 2),
                PURGE_P99_TARGET,
            )
        )
    purged = run.purged
    rate = round(purged["conversations"] / run.active, 1) if run.active else 0.0
    report.add(
        Figure(
            f"purge {sizes.conversations:,} {what} conversations, {sizes.messages} messages "
            f"each ({purges})",
            f"library purge, batches of {sizes.batch_size}, duty {sizes.duty} (latency: one "
            "batch and its pause; rate: conversations/s)",
            len(run.batches_ms),
            round(percentile(run.batches_ms, 0.5), 3),
            round(percentile(run.batches_ms, 0.99), 3),
            rate,
            "unnamed",
            "per_second: conversations per second of purging (its pauses included, the "
            "bench's parking excluded)",
        )
    )
    report.setup["purge"] = {
        **purged,
        "purges": sizes.purges,
        "batch_size": sizes.batch_size,
        "duty": sizes.duty,
        "batches": len(run.batches_ms),
        "running_seconds": round(run.active, 3),
        "wall_seconds_with_pauses": round(run.wall, 3),
        "conversations_per_second": rate,
        "rule": f"older_than={STALE_AFTER.days} days" if sizes.stale else "expired",
        "appends": {
            f"{w} writer(s), {'purge running' if during else 'no purge'}": len(samples.latencies_ms)
            for (w, during), samples in run.pooled.items()
        },
    }
