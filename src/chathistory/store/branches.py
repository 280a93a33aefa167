"""Branches (SPEC 11): a conversation's messages form a tree; reads follow its active branch.

The tree is kept without copying anything. A *run* is a stretch of consecutive seqs in which
each message follows the one before it; a message that does not (an edit, a regenerated answer,
a new first message) starts a run and records its parent's seq in ``fork`` (0 for a new first
message). A branch — the chain from the first message to any message — is therefore a few seq
ranges ``[(lo, hi), ...]``, increasing: one per run it passes through. Only the newest run of a
conversation can grow (a message whose parent is not the conversation's last message starts a
new one), so a run holds every seq from its start to its end.

A conversation that never branched (``branched`` false, the common case) has every message on
its active branch and keeps v1's one-statement appends and reads. A branched one keeps its
active branch in ``conversation_paths``, one row per range: a read takes the rows it needs
(the newest few for the newest messages), and since those ranges say exactly which seqs the
messages are, reads them in one statement through the ``(conversation_id, seq)`` index; an
append changes a row or adds one; a switch or an append after another message walks the new
branch back, run by run through a partial index of the messages that start one, only until it
meets the active branch, and rewrites the rows from there (a lookup or two for an edit or a
regeneration; a branch that parted many runs back costs two per run walked). Nothing costs
more as the conversation grows longer, or as branches pile up elsewhere in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ConversationNotFoundError, ValidationError
from chathistory.models import conversation_paths, conversations, messages, utcnow
from chathistory.store import limits, tool_pairing
from chathistory.store.paths import Path, clipped, extended, linear, seqs, up_to
from chathistory.store.rows import C, M

P = conversation_paths.c


async def active(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID
) -> tuple[bool, int]:
    """Whether the conversation ever branched, and how many messages it has;
    :class:`ConversationNotFoundError` if the user has no such (live) conversation."""
    found = (
        await conn.execute(
            select(C.branched, C.message_count).where(
                C.user_id == user_id,
                C.id == conversation_id,
                or_(C.expires_at.is_(None), C.expires_at > utcnow()),
            )
        )
    ).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)
    return bool(found.branched), int(found.message_count)


def _rows(user_id: str, conversation_id: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    return (P.conversation_id == conversation_id, P.user_id == user_id)


async def ranges(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    ascending: bool,
    limit: int | None,
    past: int | None = None,
    until: int | None = None,
) -> Path:
    """The ranges of a branched conversation's active branch that a read of ``limit``
    messages with ``past < seq < until`` needs (every range without a limit), increasing:
    at most ``limit + 1`` rows, from where the read starts."""
    query = select(P.lo, P.hi).where(*_rows(user_id, conversation_id))
    if until is not None:
        query = query.where(P.lo < until)
    if limit is None:
        found = (await conn.execute(query.order_by(P.lo))).all()
    elif ascending:
        start = (
            select(func.coalesce(func.max(P.lo), 0))
            .where(*_rows(user_id, conversation_id), P.lo <= (past or 0) + 1)
            .scalar_subquery()
        )
        query = query.where(P.lo >= start).order_by(P.lo.asc()).limit(limit + 1)
        found = (await conn.execute(query)).all()
    else:
        found = (await conn.execute(query.order_by(P.lo.desc()).limit(limit + 1))).all()[::-1]
    return [(row.lo, row.hi) for row in found]


async def holds(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, seq: int) -> bool:
    """Whether the message at ``seq`` is on a branched conversation's active branch."""
    hi = (
        await conn.execute(
            select(P.hi)
            .where(*_rows(user_id, conversation_id), P.lo <= seq)
            .order_by(P.lo.desc())
            .limit(1)
        )
    ).scalar()
    return hi is not None and hi >= seq


def _walk(start: str) -> str:
    """The branch ending at ``start`` (a seq off the active branch) walked back run by run in
    the database, one row per run ``(lo, hi, up)`` (``up`` the seq its first message follows),
    until it meets the active branch (or the root): one recursive statement, an index lookup
    or two per run (the runs' first messages, and the path row holding a seq)."""
    owned = "m.conversation_id = :c AND m.user_id = :u AND m.fork IS NOT NULL"

    def run(of: str, column: str, missing: int) -> str:
        return (
            f"coalesce((SELECT m.{column} FROM messages AS m WHERE {owned} AND m.seq <= {of}"  # noqa: S608
            f" ORDER BY m.seq DESC LIMIT 1), {missing})"
        )

    return (
        "WITH RECURSIVE walk(lo, hi, up) AS ("  # noqa: S608 - constant text
        f"SELECT {run(start, 'seq', 1)}, {start}, {run(start, 'fork', 0)}"
        f" UNION ALL SELECT {run('w.up', 'seq', 1)}, w.up, {run('w.up', 'fork', 0)}"
        " FROM walk AS w WHERE w.up > 0 AND coalesce((SELECT p.hi FROM conversation_paths AS p"
        " WHERE p.conversation_id = :c AND p.user_id = :u AND p.lo <= w.up"
        " ORDER BY p.lo DESC LIMIT 1), 0) < w.up)"
    )


_KEYS: Final = (
    bindparam("c", type_=Uuid()),
    bindparam("u", type_=String()),
    bindparam("seq", type_=Integer()),
)
_MEETING: Final = text(
    f"{_walk(':seq')} SELECT up FROM walk ORDER BY lo LIMIT 1"  # noqa: S608
).bindparams(*_KEYS)
# (the walk in a subquery: Citus plans an INSERT's own WITH apart from its SELECT)
_WALKED: Final = text(
    "INSERT INTO conversation_paths (conversation_id, user_id, lo, hi)"  # noqa: S608
    f" SELECT :c, :u, lo, hi FROM ({_walk(':seq')} SELECT lo, hi FROM walk) AS walked"
).bindparams(*_KEYS)


async def activate(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    seq: int,
    *,
    branched: bool,
    count: int,
    then: tuple[int, int] | None = None,
) -> None:
    """Make the branch ending at ``seq`` (0: none) the active one, then (``then``) the
    messages ``first`` to ``last`` after it. The new branch is walked back only until it
    meets the active one (one statement, :func:`_walk`); the path rows past that point go,
    the one holding it ends there, and the walk's rows are written by the database itself:
    a bounded number of statements and no rows sent back, however many runs it crosses. A
    conversation that never branched gets its first rows, and its one-chain table of open
    tool calls no longer tells (:mod:`tool_pairing`)."""
    owned = _rows(user_id, conversation_id)
    keys = {"c": conversation_id, "u": user_id, "seq": seq}
    on_active = seq <= count
    if branched:
        on_active = seq == 0 or await holds(conn, user_id, conversation_id, seq)
    meet = seq
    if not on_active:
        meet = int((await conn.execute(_MEETING, keys)).scalar_one())
    if not branched:
        await tool_pairing.forget(conn, user_id, conversation_id)
        if meet > 0:
            await conn.execute(
                insert(conversation_paths).values(
                    conversation_id=conversation_id, user_id=user_id, lo=1, hi=meet
                )
            )
    else:
        await conn.execute(delete(conversation_paths).where(*owned, P.lo > meet))
        if meet > 0:
            holding = select(func.max(P.lo)).where(*owned, P.lo <= meet).scalar_subquery()
            await conn.execute(
                update(conversation_paths).where(*owned, P.lo == holding).values(hi=meet)
            )
    if not on_active:
        await conn.execute(_WALKED, keys)
    if then is None:
        return
    first, last = then
    if seq == first - 1 and seq > 0:  # straight on from the branch's end
        await grow(conn, user_id, conversation_id, seq, last)
    else:
        await conn.execute(
            insert(conversation_paths).values(
                conversation_id=conversation_id, user_id=user_id, lo=first, hi=last
            )
        )


async def write_path(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, path: Path
) -> None:
    """Store ``path`` as the active branch of a conversation that has none (an import)."""
    await tool_pairing.forget(conn, user_id, conversation_id)
    rows = [
        {"conversation_id": conversation_id, "user_id": user_id, "lo": lo, "hi": hi}
        for lo, hi in path
    ]
    for start in range(0, len(rows), 1000):
        await conn.execute(insert(conversation_paths), rows[start : start + 1000])


async def grow(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, current: int, last: int
) -> None:
    """The active branch goes on from its last message ``current`` to ``last``: its last
    row (the largest ``lo``, by the primary key) ends there now."""
    owned = _rows(user_id, conversation_id)
    newest = select(func.max(P.lo)).where(*owned).scalar_subquery()
    await conn.execute(
        update(conversation_paths).where(*owned, P.lo == newest, P.hi == current).values(hi=last)
    )


async def message_seq(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    field: str,
) -> int:
    """The seq of a message of this conversation, or a :class:`ValidationError` on ``field``."""
    seq = (
        await conn.execute(
            select(M.seq).where(
                M.conversation_id == conversation_id, M.user_id == user_id, M.id == message_id
            )
        )
    ).scalar()
    if seq is None:
        raise ValidationError("is not a message of this conversation", loc=(field,))
    return int(seq)


async def read(
    conn: AsyncConnection,
    size: ColumnElement[int],
    owned: Sequence[ColumnElement[bool]],
    path: Path,
    *,
    columns: Sequence[Any] | None = None,
    ascending: bool,
    limit: int | None,
    past: int | None = None,
    until: int | None = None,
    max_bytes: int | None = None,
) -> list[Mapping[Any, Any]]:
    """:func:`~chathistory.store.limits.bounded_range` along a branch. A run holds every seq
    from its start to its end, so the branch says which seqs the first ``limit`` messages are:
    with a limit they are read in one statement, by those seqs (index lookups, whatever lies
    between the runs); without one, range by range."""
    columns = list(messages.c) if columns is None else columns
    if limit is not None:
        wanted = seqs(path, ascending, limit, past, until)
        if not wanted:
            return []
        query = limits.bounded_range(
            columns,
            [*owned, M.seq.in_(wanted)],
            size,
            ascending=ascending,
            limit=limit,
            max_bytes=max_bytes,
        )
        return [row._mapping for row in await conn.execute(query)]
    found: list[Mapping[Any, Any]] = []
    used = 0
    for after, before in clipped(path, ascending, past, until):
        if max_bytes is not None and used > max_bytes:
            break
        query = limits.bounded_range(
            columns,
            owned,
            size,
            ascending=ascending,
            limit=None,
            past=after,
            until=before,
            max_bytes=None if max_bytes is None else max_bytes - used,
        )
        got = [row._mapping for row in await conn.execute(query)]
        found += got
        if max_bytes is not None:
            used += sum(row["size"] for row in got)
    return found


async def read_active(
    conn: AsyncConnection,
    size: ColumnElement[int],
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    columns: Sequence[Any] | None = None,
    ascending: bool,
    limit: int | None,
    past: int | None = None,
    until: int | None = None,
    max_bytes: int | None = None,
) -> list[Mapping[Any, Any]]:
    """:func:`read` along a branched conversation's active branch: the path rows the read
    needs (:func:`ranges`), then the messages."""
    path = await ranges(
        conn, user_id, conversation_id, ascending=ascending, limit=limit, past=past, until=until
    )
    owned = (M.conversation_id == conversation_id, M.user_id == user_id)
    return await read(
        conn,
        size,
        owned,
        path,
        columns=columns,
        ascending=ascending,
        limit=limit,
        past=past,
        until=until,
        max_bytes=max_bytes,
    )


async def siblings(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    placed: Sequence[tuple[int, int | None, int | None]],
) -> dict[int, tuple[int, int]]:
    """``sibling_count`` and 1-based ``sibling_index`` of the messages given as ``(seq, fork,
    sibling)``, from the numbers kept with the tree: each one's place is its own ``sibling``
    (1 for a message that goes straight on), the count its parent's ``children`` (the
    conversation's ``roots`` for a first message), read in one statement of at most a row per
    parent (however many siblings there are)."""
    parents = {seq: (seq - 1 if fork is None else fork) for seq, fork, _ in placed}
    if not parents:
        return {}
    wanted = {of for of in parents.values() if of > 0}
    counts: dict[int, int] = {}
    if wanted:
        query: Any = select(M.seq, M.children).where(
            M.conversation_id == conversation_id,
            M.user_id == user_id,
            M.seq.in_(wanted),
            M.children.is_not(None),
        )
        if 0 in parents.values():
            query = query.union_all(_roots(user_id, conversation_id))
    elif 0 in parents.values():
        query = _roots(user_id, conversation_id)
    found = (await conn.execute(query)).all()
    counts = {int(seq): int(children) for seq, children in found if children is not None}
    return {seq: (counts.get(parents[seq], 1), sibling or 1) for seq, _, sibling in placed}


def _roots(user_id: str, conversation_id: uuid.UUID) -> Any:
    return select(literal(0).label("seq"), C.roots.label("children")).where(
        C.user_id == user_id, C.id == conversation_id
    )


async def adopt(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, parent: int
) -> int:
    """A message starts a run after the message at seq ``parent`` (0: a new first message):
    count it among the parent's children and return its place (the last)."""
    if parent == 0:
        return int(
            (
                await conn.execute(
                    update(conversations)
                    .where(C.user_id == user_id, C.id == conversation_id)
                    .values(roots=func.coalesce(C.roots, 1) + 1)
                    .returning(C.roots)
                )
            ).scalar_one()
        )
    after = messages.alias("after")
    goes_on = (
        select(func.count())
        .where(
            after.c.conversation_id == conversation_id,
            after.c.user_id == user_id,
            after.c.seq == parent + 1,
            after.c.fork.is_(None),
        )
        .scalar_subquery()
    )
    return int(
        (
            await conn.execute(
                update(messages)
                .where(M.conversation_id == conversation_id, M.user_id == user_id, M.seq == parent)
                .values(children=func.coalesce(M.children, goes_on) + 1)
                .returning(M.children)
            )
        ).scalar_one()
    )


async def number_parents(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, children: Mapping[int, int]
) -> None:
    """Store the child counts of the parents an import forked from (one statement)."""
    if not children:
        return
    await conn.execute(
        update(messages)
        .where(
            M.conversation_id == conversation_id,
            M.user_id == user_id,
            M.seq == bindparam("at"),
        )
        .values(children=bindparam("n")),
        [{"at": seq, "n": n} for seq, n in children.items()],
    )


@dataclass(frozen=True)
class Placement:
    """Where an append's messages go in the tree."""

    parent_id: uuid.UUID | None  # of the first message; the others follow each other
    parent_seq: int  # its seq (0: the messages start a new first message)
    fork: int | None  # the first message's ``fork`` (None: it continues its parent's run)
    current: bool  # the parent is the current message (the end of the active branch)
    linear: bool  # the conversation never branched, and still has not


async def place(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    count: int,
    current_id: uuid.UUID | None,
    branched: bool,
    parent: tuple[bool, uuid.UUID | None],
) -> Placement:
    """Place messages appended after ``count`` others: after the current message, or
    (``parent`` = ``(True, id)``) after the message named, or as a new first message
    (``(True, None)``)."""
    named, parent_id = parent
    current = not named or (parent_id is not None and parent_id == current_id)
    if current:
        parent_id, parent_seq = current_id, count
        if branched and current_id is not None:
            parent_seq = await message_seq(conn, user_id, conversation_id, current_id, "parent_id")
    elif parent_id is None:
        parent_seq = 0
    else:
        parent_seq = await message_seq(conn, user_id, conversation_id, parent_id, "parent_id")
    fork = None if parent_seq == count else parent_seq
    stays = not branched and fork is None and (current or parent_seq == count)
    return Placement(parent_id, parent_seq, fork, current or current_id is None, stays)


async def follow(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    placed: Placement,
    *,
    branched: bool,
    count: int,
    first: int,
    last: int,
) -> None:
    """Make the appended messages the end of the active branch (a conversation that still
    never branched needs nothing)."""
    if placed.linear:
        return
    if branched and placed.current and placed.parent_seq == first - 1:
        await grow(conn, user_id, conversation_id, first - 1, last)  # straight on
        return
    await activate(
        conn,
        user_id,
        conversation_id,
        placed.parent_seq,
        branched=branched,
        count=count,
        then=(first, last),
    )


__all__ = [
    "P",
    "Path",
    "Placement",
    "activate",
    "active",
    "adopt",
    "clipped",
    "extended",
    "follow",
    "grow",
    "holds",
    "linear",
    "message_seq",
    "number_parents",
    "place",
    "ranges",
    "read",
    "read_active",
    "seqs",
    "siblings",
    "up_to",
    "write_path",
]
