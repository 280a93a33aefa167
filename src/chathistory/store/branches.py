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
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ConversationNotFoundError, ValidationError
from chathistory.models import conversation_paths, messages, utcnow
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


async def _run_start(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, seq: int
) -> tuple[int, int]:
    """The first seq of the run holding ``seq``, and the seq of that message's parent."""
    start = (
        await conn.execute(
            select(M.seq, M.fork)
            .where(
                M.conversation_id == conversation_id,
                M.user_id == user_id,
                M.fork.is_not(None),
                M.seq <= seq,
            )
            .order_by(M.seq.desc())
            .limit(1)
        )
    ).first()
    return (1, 0) if start is None else (int(start.seq), int(start.fork))


async def route(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    seq: int,
    *,
    branched: bool,
    count: int,
) -> tuple[int, Path]:
    """The branch ending at ``seq`` against the active one: the last seq they share (0 for
    none) and the ranges it runs through after that, walked back run by run only until it
    meets the active branch (a lookup or two for a sibling, an edit or a regeneration)."""
    walked: Path = []
    while seq > 0:
        on_active = seq <= count  # a conversation that never branched: every message
        if branched:
            on_active = await holds(conn, user_id, conversation_id, seq)
        if on_active:
            break
        start, parent = await _run_start(conn, user_id, conversation_id, seq)
        walked.append((start, seq))
        seq = parent
    return seq, walked[::-1]


async def up_to_meeting(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    meet: int,
    *,
    branched: bool,
) -> Path:
    """The active branch up to ``meet`` (tool pairing along a branch reads it whole)."""
    if not branched:
        return linear(meet)
    found = await ranges(conn, user_id, conversation_id, ascending=True, limit=None)
    return up_to(found, meet)


async def make_active(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    branched: bool,
    meet: int,
    after: Path,
) -> None:
    """Store the active branch as the current one up to ``meet``, then the ranges ``after``:
    the rows past ``meet`` go, the one holding it ends there, the new ones are added (merged
    into it when they go straight on). A conversation that never branched has no rows yet,
    and its one-chain table of open tool calls no longer tells (:mod:`tool_pairing`)."""
    owned = _rows(user_id, conversation_id)
    kept: Path = linear(meet)[-1:] if not branched else []
    if not branched:  # off its one chain: tool calls pair along the branch from now on
        await tool_pairing.forget(conn, user_id, conversation_id)
    else:
        await conn.execute(delete(conversation_paths).where(*owned, P.lo > meet))
        if meet > 0:
            holding = (
                await conn.execute(
                    select(P.lo).where(*owned, P.lo <= meet).order_by(P.lo.desc()).limit(1)
                )
            ).scalar()
            if holding is not None:
                kept = [(int(holding), meet)]
                await conn.execute(delete(conversation_paths).where(*owned, P.lo == holding))
    rows = kept
    for lo, hi in after:
        rows = extended(rows, lo, hi)
    if rows:
        await conn.execute(
            insert(conversation_paths),
            [
                {"conversation_id": conversation_id, "user_id": user_id, "lo": lo, "hi": hi}
                for lo, hi in rows
            ],
        )


async def grow(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, current: int, last: int
) -> None:
    """The active branch goes on from its last message ``current`` to ``last``."""
    await conn.execute(
        update(conversation_paths)
        .where(*_rows(user_id, conversation_id), P.hi == current)
        .values(hi=last)
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
    placed: Sequence[tuple[int, int | None]],
) -> dict[int, tuple[int, int]]:
    """``sibling_count`` and 1-based ``sibling_index`` (in seq order) of the messages given as
    ``(seq, fork)``: the children of each one's parent counted in one statement, a row per
    parent (however many siblings there are). A parent's children are the message after it
    when that one goes straight on (always the first), and those whose ``fork`` names it."""
    parents = {seq: (seq - 1 if fork is None else fork) for seq, fork in placed}
    if not parents:
        return {}
    forked = sorted(seq for seq, fork in placed if fork is not None)
    parent_of = func.coalesce(M.fork, M.seq - 1).label("parent")
    counts = [func.count().label("n")]
    counts += [func.sum(case((M.seq <= seq, 1), else_=0)).label(f"s{seq}") for seq in forked]
    nexts = {of + 1 for of in parents.values()}
    rows = (
        await conn.execute(
            select(parent_of, *counts)
            .where(
                M.conversation_id == conversation_id,
                M.user_id == user_id,
                or_(M.fork.in_(set(parents.values())), and_(M.seq.in_(nexts), M.fork.is_(None))),
            )
            .group_by(parent_of)
        )
    ).all()
    found = {int(row.parent): row._mapping for row in rows}
    numbers = {}
    for seq, of in parents.items():
        family = found.get(of)
        count = int(family["n"]) if family is not None else 0
        index = int(family[f"s{seq}"] or 0) if family is not None and seq in forked else 1
        numbers[seq] = (max(count, 1), max(index, 1))
    return numbers


@dataclass(frozen=True)
class Placement:
    """Where an append's messages go in the tree."""

    parent_id: uuid.UUID | None  # of the first message; the others follow each other
    fork: int | None  # the first message's ``fork`` (None: it continues its parent's run)
    meet: int  # where the branch the messages join meets the active one
    after: Path  # the ranges of that branch past ``meet``, up to the parent
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
    meet, after = 0, list[tuple[int, int]]()
    if not named or (parent_id is not None and parent_id == current_id):
        parent_id, parent_seq = current_id, count
        if branched and current_id is not None:
            parent_seq = await message_seq(conn, user_id, conversation_id, current_id, "parent_id")
        meet = parent_seq if current_id is not None else 0
    elif parent_id is None:
        parent_seq = 0
    else:
        parent_seq = await message_seq(conn, user_id, conversation_id, parent_id, "parent_id")
        meet, after = await route(
            conn, user_id, conversation_id, parent_seq, branched=branched, count=count
        )
    fork = None if parent_seq == count else parent_seq
    stays = not branched and fork is None and meet == count and not after
    return Placement(parent_id, fork, meet, after, stays)


async def follow(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    placed: Placement,
    *,
    branched: bool,
    first: int,
    last: int,
) -> None:
    """Make the appended messages the end of the active branch (a conversation that still
    never branched needs nothing)."""
    if placed.linear:
        return
    if branched and placed.fork is None and not placed.after and placed.meet == first - 1:
        await grow(conn, user_id, conversation_id, first - 1, last)  # straight on
        return
    after = extended(placed.after, first, last)
    await make_active(
        conn, user_id, conversation_id, branched=branched, meet=placed.meet, after=after
    )


__all__ = [
    "P",
    "Path",
    "Placement",
    "active",
    "clipped",
    "extended",
    "follow",
    "grow",
    "holds",
    "linear",
    "make_active",
    "message_seq",
    "place",
    "ranges",
    "read",
    "read_active",
    "route",
    "seqs",
    "siblings",
    "up_to",
    "up_to_meeting",
]
