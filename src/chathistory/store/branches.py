"""Branches (SPEC 11): a conversation's messages form a tree; reads follow its active branch.

The tree is kept without copying anything. A *run* is a stretch of consecutive seqs in which
each message follows the one before it; a message that does not (an edit, a regenerated answer,
a new first message) starts a run and records its parent's seq in ``fork`` (0 for a new first
message). A branch — the chain from the first message to any message — is therefore a few seq
ranges ``[(lo, hi), ...]``, increasing: one per run it passes through. The active branch is
stored on the conversation as ``path`` (NULL while it is every message in seq order: a
conversation that never branched, the common case, which keeps v1's one-statement reads and
appends). Reading a branch reads its ranges through the ``(conversation_id, seq)`` index, newest
or oldest first as asked, so its cost follows the rows returned and the number of runs crossed,
never the conversation's length; finding the branch of a message walks its runs back through a
partial index holding only the messages that start one.

Only the newest run of a conversation can grow: a message whose parent is the conversation's
last message continues it; any other parent starts a new run. So a run's messages are exactly
the seqs from its start to its end, with no other run's message between them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ConversationNotFoundError, ValidationError
from chathistory.models import messages, utcnow
from chathistory.store import limits
from chathistory.store.rows import C, M

Path = list[tuple[int, int]]


def linear(count: int) -> Path:
    """The branch of a conversation that never branched: every message."""
    return [(1, count)] if count else []


def loaded(value: Any, count: int) -> Path:
    """The stored ``path`` as ranges (NULL: every message in seq order)."""
    return linear(count) if value is None else [(int(lo), int(hi)) for lo, hi in value]


def stored(path: Path, count: int) -> list[list[int]] | None:
    """What ``path`` stores for a branch: NULL when it is every message in seq order."""
    return None if path == linear(count) else [[lo, hi] for lo, hi in path]


def up_to(path: Path, seq: int) -> Path | None:
    """The part of ``path`` up to and including ``seq``, or ``None`` if ``seq`` is not on it."""
    for index, (lo, hi) in enumerate(path):
        if lo <= seq <= hi:
            return [*path[:index], (lo, seq)]
    return None


def extended(path: Path, first: int, last: int) -> Path:
    """``path`` followed by the messages ``first`` to ``last`` (a run, or the rest of one)."""
    if path and path[-1][1] == first - 1:
        return [*path[:-1], (path[-1][0], last)]
    return [*path, (first, last)]


def contains(path: Path, seq: int) -> bool:
    return any(lo <= seq <= hi for lo, hi in path)


def clipped(
    path: Path, ascending: bool, past: int | None, until: int | None
) -> Iterator[tuple[int, int]]:
    """The exclusive seq bounds ``(after, before)`` to read in each range of ``path`` that
    holds seqs with ``past < seq < until``, in reading order."""
    low = 0 if past is None else past
    high = 2**31 if until is None else until
    for lo, hi in path if ascending else reversed(path):
        after, before = max(low, lo - 1), min(high, hi + 1)
        if after + 1 < before:
            yield after, before


def seqs(path: Path, ascending: bool, limit: int, past: int | None, until: int | None) -> list[int]:
    """The seqs of the first ``limit`` messages of ``path`` with ``past < seq < until``, in
    reading order."""
    found: list[int] = []
    for after, before in clipped(path, ascending, past, until):
        span = range(after + 1, before) if ascending else range(before - 1, after, -1)
        found += span[: limit - len(found)]
        if len(found) == limit:
            break
    return found


async def active(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID
) -> tuple[Path | None, int]:
    """The conversation's active branch (``None`` while it is every message in seq order) and
    how many messages it has; :class:`ConversationNotFoundError` if the user has no such
    (live) conversation."""
    found = (
        await conn.execute(
            select(C.path, C.message_count).where(
                C.user_id == user_id,
                C.id == conversation_id,
                or_(C.expires_at.is_(None), C.expires_at > utcnow()),
            )
        )
    ).first()
    if found is None:
        raise ConversationNotFoundError(conversation_id)
    count = int(found.message_count)
    return (None if found.path is None else loaded(found.path, count)), count


async def path_to(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    seq: int,
    known: Path | None = None,
) -> Path:
    """The branch from the first message to the message at ``seq``: one lookup per run
    walked back, until a message of the ``known`` branch (the active one: where it meets
    it, the rest is its prefix). Switching between siblings or to a message of the active
    branch costs a lookup or two, however many runs the branch has."""
    ranges: Path = []
    while seq > 0:
        shared = None if known is None else up_to(known, seq)
        if shared is not None:
            return shared + ranges[::-1]
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
        if start is None:
            ranges.append((1, seq))
            break
        ranges.append((start.seq, seq))
        seq = start.fork
    return ranges[::-1]


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


@dataclass(frozen=True)
class Placement:
    """Where an append's messages go in the tree."""

    parent_id: uuid.UUID | None  # of the first message; the others follow each other
    fork: int | None  # the first message's ``fork`` (None: it continues its parent's run)
    base: Path  # the branch up to the parent
    path: list[list[int]] | None  # the conversation's active branch after the append
    linear: bool  # the conversation never branched, and still has not


async def place(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    count: int,
    current_id: uuid.UUID | None,
    current_path: Any,
    parent: tuple[bool, uuid.UUID | None],
    size: int,
) -> Placement:
    """Place ``size`` messages appended after ``count`` others: after the current message, or
    (``parent`` = ``(True, id)``) after the message named, or as a new first message
    (``(True, None)``)."""
    first, last = count + 1, count + size
    current = loaded(current_path, count)
    named, parent_id = parent
    if not named or (parent_id is not None and parent_id == current_id):
        parent_id, parent_seq, base = current_id, (current[-1][1] if current else 0), current
    elif parent_id is None:
        parent_seq, base = 0, []
    else:
        parent_seq = await message_seq(conn, user_id, conversation_id, parent_id, "parent_id")
        base = await path_to(conn, user_id, conversation_id, parent_seq, current)
    fork = None if parent_seq == first - 1 else parent_seq
    branch = extended(base, first, last)
    if current_path is None and stored(branch, last) is None:  # still one chain
        return Placement(parent_id, fork, base, None, True)
    # Once off its one chain a conversation keeps its path (and pairs tool calls along it).
    return Placement(parent_id, fork, base, [[lo, hi] for lo, hi in branch], False)


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
        left = None if limit is None else limit - len(found)
        if left == 0 or (max_bytes is not None and used > max_bytes):
            break
        query = limits.bounded_range(
            columns,
            owned,
            size,
            ascending=ascending,
            limit=left,
            past=after,
            until=before,
            max_bytes=None if max_bytes is None else max_bytes - used,
        )
        got = [row._mapping for row in await conn.execute(query)]
        found += got
        if max_bytes is not None:
            used += sum(row["size"] for row in got)
    return found


async def siblings(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    placed: Sequence[tuple[int, int | None]],
) -> dict[int, tuple[int, int]]:
    """``sibling_count`` and 1-based ``sibling_index`` (in seq order) of the messages given as
    ``(seq, fork)``: the children of each one's parent, found in one statement."""
    parents = {seq: (seq - 1 if fork is None else fork) for seq, fork in placed}
    if not parents:
        return {}
    nexts = {parent + 1 for parent in parents.values()}
    rows = (
        await conn.execute(
            select(M.seq, M.fork).where(
                M.conversation_id == conversation_id,
                M.user_id == user_id,
                or_(M.fork.in_(set(parents.values())), M.seq.in_(nexts)),
            )
        )
    ).all()
    children: dict[int, list[int]] = {}
    for row in rows:
        parent = row.seq - 1 if row.fork is None else row.fork
        children.setdefault(parent, []).append(row.seq)
    numbers = {}
    for seq, parent in parents.items():
        family = sorted(set(children.get(parent, [])) | {seq})
        numbers[seq] = (len(family), family.index(seq) + 1)
    return numbers


__all__ = [
    "Path",
    "Placement",
    "active",
    "clipped",
    "contains",
    "extended",
    "linear",
    "loaded",
    "message_seq",
    "path_to",
    "place",
    "read",
    "seqs",
    "siblings",
    "stored",
    "up_to",
]
