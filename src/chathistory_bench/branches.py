"""Branched conversations (SPEC 6 and 11): reading the newest 50 messages of the active branch
costs the same in a conversation of 100,000 messages as in one of 100, and so do branching (an
append naming ``parent_id``) and switching (``update_conversation(current_message_id=...)``).
Target: each at most :data:`~chathistory_bench.report.SCALE_TARGET` times its cost at the
small size, timed through ``ChatHistory`` in alternating rounds (both sizes in every round).

Each conversation has the same shape (:func:`shape`), only its length differs. The user chats,
regenerating an answer about every 50 messages and carrying on with the new one; in the middle
of the conversation they regenerate an answer and then compare the two, switching back and
forth: 3 more turns on the first answer's branch, 1 on the second's, 9 times; then they carry
on with the second for the rest of the conversation (half of it) and finally switch back to
the first. So the active branch ends in the middle, its newest 50 messages cross 9 runs (the
same 9 at every size), and its path holds a range for every regeneration before it (about
1,000 at 100,000 messages, 10 at 100).

The fixtures are bulk SQL (untimed) writing the tree exactly as the store keeps it
(:mod:`chathistory.store.branches`): ``parent_id`` and ``fork`` on each message (and its search
row, as an append writes one), ``message_count``, ``current_message_id`` and ``branched`` on the
conversation, and the active branch's ranges in ``conversation_paths``. Before anything is timed
they are checked through the library against the tree built in memory: the newest 50 (both
reads) and their sibling numbers, every message with ``branch="all"`` (ids, parents, sibling
numbers), and a switch to the active branch's last message stores the path the fixture wrote.
The timed branches and switches go on after the reads: the branch regenerates the active
branch's last answer, the switch goes back to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chathistory import ChatHistory
from chathistory.db import parse_database_url
from chathistory.models import uuid7
from chathistory_bench import fixtures, library
from chathistory_bench.report import SCALE_TARGET, Report
from chathistory_bench.rounds import Contender, Samples, WriterOp, alternate

CHUNK = 10_000  # messages per set-up statement
Log = Callable[[str], None]


@dataclass(frozen=True)
class BranchSizes:
    sizes: tuple[int, ...] = (100, 100_000)  # messages per conversation; smallest vs largest
    regenerate_every: int = 50  # messages between two regenerated answers
    visits: int = 9  # visits to each of the two compared answers' branches
    visit_turns: int = 3  # turns (a question and its answer) per visit to the active branch
    limit: int = 50  # the newest messages read
    reads: int = 500  # timed reads per contender (over all rounds)
    switches: int = 100  # timed branches, and switches, per size
    rounds: int = 6

    @classmethod
    def quick(cls) -> BranchSizes:
        return cls(sizes=(100, 10_000), reads=200, switches=40, rounds=4)

    @property
    def stretch(self) -> int:
        """Messages of the compared answers: both answers, then the visits to each."""
        return 2 + self.visits * (2 * self.visit_turns + 2)

    def check(self) -> None:
        if len(set(self.sizes)) < 2 or min(self.sizes) < self.stretch + 4:
            raise ValueError(f"need two sizes of at least {self.stretch + 4} messages")
        if min(self.limit, self.reads, self.switches, self.rounds, self.visit_turns) < 1:
            raise ValueError("need a limit, reads, switches, rounds and turns")
        if self.regenerate_every < 4:
            raise ValueError("regenerate at most every 4 messages")


@dataclass
class Tree:
    """A conversation's messages in seq order: message ``s`` follows ``parents[s]`` (0: none;
    ``parents[0]`` is unused)."""

    parents: list[int] = field(default_factory=lambda: [0])
    depths: list[int] = field(default_factory=lambda: [0])

    @property
    def count(self) -> int:
        return len(self.parents) - 1

    def add(self, parent: int) -> int:
        self.parents.append(parent)
        self.depths.append(self.depths[parent] + 1)
        return self.count

    def role(self, seq: int) -> str:
        return "user" if self.depths[seq] % 2 else "assistant"

    def fork(self, seq: int) -> int | None:
        """As the store keeps it: NULL when the message follows the one before it."""
        parent = self.parents[seq]
        return None if parent == seq - 1 else parent

    def branch(self, tip: int) -> list[int]:
        """The seqs from the first message to ``tip``."""
        seqs = []
        while tip:
            seqs.append(tip)
            tip = self.parents[tip]
        return seqs[::-1]

    def path(self, tip: int) -> list[list[int]]:
        """The branch to ``tip`` as the seq ranges the store keeps (one per run crossed)."""
        ranges: list[list[int]] = []
        for seq in self.branch(tip):
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1][1] = seq
            else:
                ranges.append([seq, seq])
        return ranges

    def siblings(self) -> dict[int, tuple[int, int]]:
        """Each message's ``(sibling_count, sibling_index)``."""
        children: dict[int, list[int]] = {}
        for seq in range(1, len(self.parents)):
            children.setdefault(self.parents[seq], []).append(seq)
        return {
            seq: (len(family), index + 1)
            for family in children.values()
            for index, seq in enumerate(family)
        }

    def chat(self, tip: int, count: int, every: int) -> int:
        """``count`` messages on from ``tip``, regenerating the answer just given once at
        least ``every`` messages have gone by since the last time; the new tip."""
        since = 0
        for _ in range(count):
            since += 1
            regenerate = since >= every and tip and self.role(tip) == "assistant"
            tip = self.add(self.parents[tip] if regenerate else tip)
            since = 0 if regenerate else since
        return tip

    def carry_on(self, tip: int, turns: int) -> int:
        for _ in range(2 * turns):
            tip = self.add(tip)
        return tip


def shape(count: int, sizes: BranchSizes) -> tuple[Tree, int]:
    """The conversation of ``count`` messages (module docstring) and its active message."""
    tree = Tree()
    tip = tree.chat(0, (count - sizes.stretch) // 2 - 1, sizes.regenerate_every)
    if tree.role(tip) == "assistant":
        tip = tree.add(tip)  # a question, answered twice
    first, second = tree.add(tip), tree.add(tip)
    for _ in range(sizes.visits):
        first = tree.carry_on(first, sizes.visit_turns)
        second = tree.carry_on(second, 1)
    tree.chat(second, count - tree.count, sizes.regenerate_every)
    if tree.count != count:
        raise RuntimeError(f"the shape of {count:,} messages came out {tree.count:,}")
    return tree, first


@dataclass
class _Conversation:
    count: int
    id: uuid.UUID
    tree: Tree
    tip: int  # the active branch's last message
    ids: list[uuid.UUID]  # by seq (ids[0] unused)


async def run_branches(url: str, sizes: BranchSizes, *, log: Log = print) -> Report:
    """Measure on the PostgreSQL database at ``url`` (already migrated); the data written is
    removed."""
    import asyncpg

    sizes.check()
    dsn = parse_database_url(url).connect_args["dsn"]
    report = Report(setup={"branch_sizes": asdict(sizes)})
    prefix = f"bench-{uuid.uuid4().hex[:8]}-branches"
    user = f"{prefix}-0"
    setup = await asyncpg.connect(dsn)
    try:
        made = []
        for count in sorted(set(sizes.sizes)):
            tree, tip = shape(count, sizes)
            log(f"branches: writing a conversation of {count:,} messages, {_runs(tree)} runs")
            made.append(await _write(setup, user, tree, tip))
        chains = []
        for count in sorted(set(sizes.sizes)):
            chain = Tree()
            chain.carry_on(0, count // 2)
            log(f"branches: writing a conversation of {count:,} messages that never branched")
            chains.append(await _write(setup, user, chain, chain.count, branched=False))
        for table in ("conversations", "messages", "message_search"):
            await setup.execute(f"ANALYZE {table}")
        small, large = made[0], made[-1]
        async with library.opened(url, cached=False) as store:
            report.setup["branches"] = {
                f"{made_one.count:,}": await _verify(store, setup, user, made_one, sizes, log)
                for made_one in made
            }
            await _reads(store, user, small, large, sizes, report, log)
            await _against_chains(store, user, made, chains, sizes, report, log)
            await _branch_and_switch(store, user, small, large, sizes, report, log)
            for made_one in (small, large):  # back where it was, still whole
                await _switch(store, user, made_one)(0, 0)
                await _check_newest(store, user, made_one, sizes.limit)
            await fixtures.check_appended(setup, user, [m.id for m in (*made, *chains)])
    finally:
        log("branches: cleaning up")
        await fixtures.remove(setup, prefix)
        await setup.close()
    return report


def _runs(tree: Tree) -> int:
    return 1 + sum(tree.fork(seq) is not None for seq in range(1, tree.count + 1))


# $1 user, $2 conversation, $3 text, $4 messages in the conversation; one array per column.
_MESSAGES_SQL = (
    "WITH m AS (INSERT INTO messages (id, user_id, conversation_id, seq, role, content,"
    " metadata, token_count, created_at, parent_id, fork, children, sibling)"
    " SELECT m.id, $1, $2, m.seq, m.role, to_jsonb('turn ' || m.seq || ': ' || $3::text),"
    " '{}'::jsonb, 90, now() - ($4 - m.seq) * interval '1 millisecond', m.parent, m.fork,"
    " m.children, m.sibling"
    " FROM unnest($5::uuid[], $6::int[], $7::text[], $8::uuid[], $9::int[], $10::int[],"
    " $11::int[]) AS m(id, seq, role, parent, fork, children, sibling)"
    " RETURNING id, user_id, conversation_id, created_at, content)"
    " INSERT INTO message_search (message_id, user_id, conversation_id, created_at, words)"
    " SELECT id, user_id, conversation_id, created_at, to_tsvector('simple', content #>> '{}')"
    " FROM m"
)


async def _write(
    conn: Any, user: str, tree: Tree, tip: int, *, branched: bool = True
) -> _Conversation:
    """The conversation as the store keeps it, its messages ``CHUNK`` per statement (one that
    never ``branched``: a chain, ``tip`` its last message, no path rows)."""
    made = _Conversation(tree.count, uuid.uuid4(), tree, tip, [uuid7() for _ in tree.parents])
    ids = made.ids
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
        " message_count, has_user_message, current_message_id, branched)"
        " VALUES ($1, $2, 'branches bench', '{}', now(), now(), $3, true, $4, $5)",
        made.id,
        user,
        tree.count,
        ids[tip],
        branched,
    )
    numbers = tree.siblings()
    children = {tree.parents[s]: numbers[s][0] for s in numbers if tree.fork(s) is not None}
    if 0 in children:
        await conn.execute(
            "UPDATE conversations SET roots = $3 WHERE id = $1 AND user_id = $2",
            made.id,
            user,
            children[0],
        )
    path = tree.path(tip) if branched else []
    await conn.execute(
        "INSERT INTO conversation_paths (conversation_id, user_id, lo, hi)"
        " SELECT $1, $2, lo, hi FROM unnest($3::int[], $4::int[]) AS r(lo, hi)",
        made.id,
        user,
        [lo for lo, _ in path],
        [hi for _, hi in path],
    )
    for start in range(1, tree.count + 1, CHUNK):
        seqs = range(start, min(start + CHUNK, tree.count + 1))
        await conn.execute(
            _MESSAGES_SQL,
            user,
            made.id,
            fixtures.CONTENT[:300],
            tree.count,
            [ids[s] for s in seqs],
            list(seqs),
            [tree.role(s) for s in seqs],
            [ids[tree.parents[s]] if tree.parents[s] else None for s in seqs],
            [tree.fork(s) for s in seqs],
            [children.get(s) for s in seqs],
            [None if tree.fork(s) is None else numbers[s][1] for s in seqs],
        )
    return made


async def _check_newest(store: ChatHistory, user: str, made: _Conversation, limit: int) -> None:
    """Both reads of the newest ``limit`` find the active branch's, with their sibling
    numbers; else RuntimeError."""
    expected = made.tree.branch(made.tip)[-limit:]
    history = await store.get_chat_history(user, made.id, limit=limit)
    page = await store.list_messages(user, made.id, order="desc", limit=limit)
    numbers = made.tree.siblings()
    for what, found in (("get_chat_history", history), ("list_messages", page.data[::-1])):
        if [(m.seq, m.id) for m in found] != [(s, made.ids[s]) for s in expected]:
            raise RuntimeError(f"{what} of {made.count:,} read other messages than the branch's")
        if [(m.sibling_count, m.sibling_index) for m in found] != [numbers[s] for s in expected]:
            raise RuntimeError(f"{what} of {made.count:,}: wrong sibling numbers")


async def _verify(
    store: ChatHistory, conn: Any, user: str, made: _Conversation, sizes: BranchSizes, log: Log
) -> dict[str, Any]:
    """The fixture is the tree built in memory, as the library reads it (RuntimeError if not):
    the newest messages, every message by ``branch="all"``, and a switch to the active
    message keeps the path written."""
    tree, ids = made.tree, made.ids
    log(f"branches: checking the conversation of {made.count:,} through the library")
    await _check_newest(store, user, made, sizes.limit)
    numbers = tree.siblings()
    seen = 0
    cursor: str | None = None
    while True:
        page = await store.list_messages(user, made.id, limit=100, cursor=cursor, branch="all")
        for m in page.data:
            seen += 1
            if m.seq != seen or (m.id, m.parent_id, (m.sibling_count, m.sibling_index)) != (
                ids[seen],
                ids[tree.parents[seen]] if tree.parents[seen] else None,
                numbers[seen],
            ):
                raise RuntimeError(f"branch='all' of {made.count:,} differs at seq {m.seq}")
        if not page.has_more or page.next_cursor is None:
            break
        cursor = page.next_cursor
    if seen != made.count:
        raise RuntimeError(f"branch='all' of {made.count:,} listed {seen:,} messages")
    path = tree.path(made.tip)
    await _switch(store, user, made)(0, 0)
    stored = await conn.fetchrow(
        "SELECT current_message_id FROM conversations WHERE id = $1 AND user_id = $2",
        made.id,
        user,
    )
    rows = await conn.fetch(
        "SELECT lo, hi FROM conversation_paths WHERE conversation_id = $1 AND user_id = $2"
        " ORDER BY lo",
        made.id,
        user,
    )
    if [[r["lo"], r["hi"]] for r in rows] != path or stored["current_message_id"] != ids[made.tip]:
        raise RuntimeError(f"switching in {made.count:,} stored another path than the fixture")
    newest = tree.branch(made.tip)[-sizes.limit :]
    return {
        "messages": made.count,
        "runs": _runs(tree),
        "active_path_ranges": len(path),
        "runs_in_newest": sum(1 for lo, hi in path if lo <= newest[-1] and hi >= newest[0]),
        "checked": {"newest": len(newest), "all": seen, "switch_path": True},
    }


def _branch(store: ChatHistory, user: str, made: _Conversation) -> WriterOp:
    """Regenerate the active branch's last answer: a new answer to the question before it
    (the tree in memory takes it too)."""
    question = made.ids[made.tree.parents[made.tip]]

    async def op(_w: int, _n: int) -> object:
        message = {"role": "assistant", "content": fixtures.CONTENT, "parent_id": question}
        stored = await store.add_messages(user, made.id, [message])
        made.ids.append(stored[0].id)  # the tree grows as the store's does
        if made.tree.add(made.tree.parents[made.tip]) != stored[0].seq:
            raise RuntimeError(f"a branch of {made.count:,} was stored at another seq")
        return stored

    return op


def _switch(store: ChatHistory, user: str, made: _Conversation) -> WriterOp:
    """Make the branch ending at the fixture's active message active again."""

    async def op(_w: int, _n: int) -> object:
        return await store.update_conversation(user, made.id, current_message_id=made.ids[made.tip])

    return op


def _scaled(
    report: Report,
    operation: str,
    contenders: Sequence[Contender],
    samples: Sequence[Samples],
    small: int,
    large: int,
) -> None:
    """The figures of a contender at the small and the large size, and their ratio."""
    low, high = (
        report.add(s.figure(f"{operation}, {n:,} messages", c.label, "unnamed"))
        for n, c, s in zip((small, large), contenders, samples, strict=True)
    )
    report.compare("scale", f"{operation}: {large:,} / {small:,}", high, low, SCALE_TARGET)


async def _reads(
    store: ChatHistory,
    user: str,
    small: _Conversation,
    large: _Conversation,
    sizes: BranchSizes,
    report: Report,
    log: Log,
) -> None:
    limit = sizes.limit
    contenders = [
        Contender(label, make(store, user, made.id, limit))
        for label, make in (
            ("library get_chat_history", library.chat_history),
            ("library list_messages desc", library.newest_page),
        )
        for made in (small, large)
    ]
    log(f"branches: read newest {limit} of the active branch, {small.count:,} and {large.count:,}")
    samples = await alternate(contenders, runs=sizes.reads, rounds=sizes.rounds)
    operation = f"branched: read newest {limit}"
    for pair in (slice(0, 2), slice(2, 4)):
        _scaled(report, operation, contenders[pair], samples[pair], small.count, large.count)


def _carry_on(store: ChatHistory, user: str, made: _Conversation) -> WriterOp:
    """Append one message after the current one, as a chat goes on (the tree in memory takes
    it too, and it becomes the active message)."""

    async def op(_w: int, _n: int) -> object:
        stored = await store.add_message(user, made.id, "user", fixtures.CONTENT)
        made.ids.append(stored.id)
        made.tip = made.tree.add(made.tip)
        if made.tip != stored.seq:
            raise RuntimeError(f"an append to {made.count:,} was stored at another seq")
        return stored

    return op


async def _against_chains(
    store: ChatHistory,
    user: str,
    made: Sequence[_Conversation],
    chains: Sequence[_Conversation],
    sizes: BranchSizes,
    report: Report,
    log: Log,
) -> None:
    """SPEC 6 (v3): each operation on a branched conversation against the same on one of the
    same size that never branched, in the same rounds: both reads, then appends."""
    limit = sizes.limit
    for label, make, runs in (
        ("read newest", library.chat_history, sizes.reads),
        ("newest as a page", library.newest_page, sizes.reads),
        ("append", None, sizes.switches),
    ):
        contenders = [
            Contender(
                f"library {label}, {'branched' if c is m else 'never branched'}",
                make(store, user, c.id, limit) if make else _carry_on(store, user, c),
            )
            for m, chain in zip(made, chains, strict=True)
            for c in (m, chain)
        ]
        log(f"branches: {label}, branched and never branched, {len(made)} sizes")
        samples = await alternate(contenders, runs=runs, rounds=sizes.rounds, warmup=4)
        for at, (m, _) in enumerate(zip(made, chains, strict=True)):
            branched, linear = (
                report.add(
                    s.figure(
                        f"{label} {limit if make else 1}, {m.count:,} messages", c.label, "unnamed"
                    )
                )
                for c, s in zip(
                    contenders[2 * at : 2 * at + 2], samples[2 * at : 2 * at + 2], strict=True
                )
            )
            report.compare(
                "branched",
                f"{label}, {m.count:,} messages: branched / never branched",
                branched,
                linear,
                SCALE_TARGET,
            )


async def _branch_and_switch(
    store: ChatHistory,
    user: str,
    small: _Conversation,
    large: _Conversation,
    sizes: BranchSizes,
    report: Report,
    log: Log,
) -> None:
    contenders = [
        Contender(label, make(store, user, made))
        for label, make in (
            ("library add_messages parent_id", _branch),
            ("library update_conversation current_message_id", _switch),
        )
        for made in (small, large)
    ]
    log(f"branches: branch and switch, {small.count:,} and {large.count:,}")
    samples = await alternate(contenders, runs=sizes.switches, rounds=sizes.rounds, warmup=4)
    for pair, operation in (
        (slice(0, 2), "branched: regenerate an answer"),
        (slice(2, 4), "branched: switch back"),
    ):
        _scaled(report, operation, contenders[pair], samples[pair], small.count, large.count)


__all__ = ["BranchSizes", "Tree", "run_branches", "shape"]
