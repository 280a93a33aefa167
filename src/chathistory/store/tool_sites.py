"""Tool pairing along a branch (SPEC 1 and 11), bounded by the batch: a tool result answers an
open call of an earlier assistant message of its own branch.

A conversation that never branched keeps its open calls in ``open_tool_calls``
(:mod:`tool_pairing`). A branched one has a set of open calls per branch, so nothing stored
says which are open on this one; instead ``tool_call_sites`` records where each call id was
called (every message, every branch), and ``messages.tool_call_id`` (indexed) where each was
answered. A result for call ``X`` is good when the newest message on the branch that called
``X`` has no result for ``X`` after it on the branch. The check reads, for the batch's call
ids only, their sites and results (one statement), then which of those seqs lie on the branch
(one statement of at most one path row per seq; none for the part of the branch the append
itself adds): work that grows with how often those ids were used, never with the branch.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import delete, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ValidationError
from chathistory.models import conversation_paths, messages, tool_call_sites
from chathistory.schemas import MessageCreate
from chathistory.store import tool_pairing
from chathistory.store.dialects import Dialect
from chathistory.store.paths import Path

_S = tool_call_sites.c
_M = messages.c
_P = conversation_paths.c
_CHUNK: Final = 1000  # rows or ids per statement, far under the bound parameter limits


async def record(
    conn: AsyncConnection,
    dialect: Dialect,
    user_id: str,
    conversation_id: uuid.UUID,
    stored: Iterable[Any],
) -> None:
    """Record the calls of stored message rows (mappings with ``seq`` and ``tool_calls``)."""
    sites = [
        {
            "conversation_id": conversation_id,
            "call_id": call["id"],
            "seq": row["seq"],
            "user_id": user_id,
        }
        for row in stored
        for call in row["tool_calls"] or ()
    ]
    await add(conn, dialect, sites)


async def add(conn: AsyncConnection, dialect: Dialect, sites: Sequence[Mapping[str, Any]]) -> None:
    for start in range(0, len(sites), _CHUNK):
        await conn.execute(
            dialect.insert(tool_call_sites).on_conflict_do_nothing(), sites[start : start + _CHUNK]
        )


async def replace(
    conn: AsyncConnection,
    dialect: Dialect,
    user_id: str,
    conversation_id: uuid.UUID,
    seq: int,
    dropped: Sequence[str],
    added: Sequence[str],
) -> None:
    """The message at ``seq`` no longer calls ``dropped`` and now calls ``added``."""
    if dropped:
        await conn.execute(
            delete(tool_call_sites).where(
                _S.conversation_id == conversation_id,
                _S.user_id == user_id,
                _S.seq == seq,
                _S.call_id.in_(dropped),
            )
        )
    sites = [
        {"conversation_id": conversation_id, "call_id": c, "seq": seq, "user_id": user_id}
        for c in added
    ]
    await add(conn, dialect, sites)


async def forget(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> None:
    """Drop every site of a conversation (its messages are being deleted)."""
    await conn.execute(
        delete(tool_call_sites).where(_S.user_id == user_id, _S.conversation_id == conversation_id)
    )


async def check(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    branch: Path | None,
    batch: Sequence[MessageCreate],
    seqs: Sequence[int],
) -> None:
    """Raise :class:`ValidationError` naming every result of the batch (stored at ``seqs``)
    that answers no open call of the branch it joins: the ranges ``branch``, or (``None``) the
    active branch as stored, the batch already on it."""
    todo = tool_pairing.plan(batch, seqs)
    bad = list(todo.bad)
    pending = dict(todo.answers_stored)  # call id -> batch index
    if pending:
        calls, answers = await _uses(conn, user_id, conversation_id, sorted(pending), seqs[0])
        on = await _on_branch(
            conn, user_id, conversation_id, branch, {s for _, s in calls + answers}
        )
        for call_id, index in pending.items():
            called = max((s for c, s in calls if c == call_id and s in on), default=None)
            answered = max((s for c, s in answers if c == call_id and s in on), default=None)
            if called is None or (answered is not None and answered > called):
                bad.append(index)
    if bad:
        raise ValidationError([tool_pairing.error(batch, index) for index in sorted(bad)])


async def _uses(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    call_ids: list[str],
    before: int,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Where each call id was called and where it was answered in this conversation, before
    the seq ``before`` (the batch's own messages are the plan's)."""
    calls: list[tuple[str, int]] = []
    answers: list[tuple[str, int]] = []
    for start in range(0, len(call_ids), _CHUNK):
        chunk = call_ids[start : start + _CHUNK]
        found = await conn.execute(
            union_all(
                select(literal(True).label("call"), _S.call_id, _S.seq).where(
                    _S.conversation_id == conversation_id,
                    _S.user_id == user_id,
                    _S.call_id.in_(chunk),
                    _S.seq < before,
                ),
                select(literal(False).label("call"), _M.tool_call_id, _M.seq).where(
                    _M.conversation_id == conversation_id,
                    _M.user_id == user_id,
                    _M.tool_call_id.in_(chunk),
                    _M.seq < before,
                ),
            )
        )
        for is_call, call_id, seq in found:
            (calls if is_call else answers).append((call_id, int(seq)))
    return calls, answers


async def _on_branch(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    branch: Path | None,
    seqs: set[int],
) -> set[int]:
    """Which of ``seqs`` lie on the branch: by its ranges, or by the active branch's path rows
    (one lookup each, in one statement)."""
    if branch is not None:
        starts = [lo for lo, _ in branch]
        at = {seq: bisect.bisect_right(starts, seq) - 1 for seq in seqs}
        return {seq for seq, i in at.items() if i >= 0 and branch[i][1] >= seq}
    on: set[int] = set()
    asked = sorted(seqs)
    for start in range(0, len(asked), _CHUNK):
        chunk = asked[start : start + _CHUNK]
        holding = [
            select(_P.hi)
            .where(_P.conversation_id == conversation_id, _P.user_id == user_id, _P.lo <= seq)
            .order_by(_P.lo.desc())
            .limit(1)
            .scalar_subquery()
            .label(f"h{seq}")
            for seq in chunk
        ]
        row = (await conn.execute(select(*holding))).one()
        on.update(seq for seq, hi in zip(chunk, row, strict=True) if hi is not None and hi >= seq)
    return on


__all__ = ["add", "check", "forget", "record", "replace"]
