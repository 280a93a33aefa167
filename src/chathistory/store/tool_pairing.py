"""Tool pairing: a ``tool`` message must answer an open tool call of an earlier assistant message
of its conversation (SPEC section 1), so that a stored history can always be replayed to an LLM.

The open calls live in ``open_tool_calls`` (one row per conversation and call id: the newest
assistant message that called it, until a result answers it). Checking a batch costs one
``DELETE ... RETURNING`` of primary-key lookups for the results that answer stored calls, and
one upsert for the calls the batch leaves open: O(batch), however long the history is, and
every bad item is reported at once. Both statements run after the conversation's row lock, so
two concurrent answers to one call cannot both pass.

:func:`plan` is the pure part (what the batch itself opens, answers and breaks);
:func:`apply` runs the two statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import FieldError, ValidationError
from chathistory.models import messages, open_tool_calls
from chathistory.schemas import MessageCreate
from chathistory.store.dialects import Dialect

_T = open_tool_calls.c
_M = messages.c
# Rows or ids per statement: far under PostgreSQL's and SQLite's bound-parameter limits.
_CHUNK: Final = 1000


@dataclass
class Plan:
    """What a batch does to the open calls of its conversation."""

    opened: dict[str, int] = field(default_factory=dict)  # call id -> seq, open after the batch
    closing: set[str] = field(default_factory=set)  # stored rows to delete
    answers_stored: dict[str, int] = field(default_factory=dict)  # call id -> batch index
    bad: list[int] = field(default_factory=list)  # results that answer nothing open

    @property
    def touches_database(self) -> bool:
        return bool(self.opened or self.closing)


def plan(batch: Sequence[MessageCreate], seqs: Sequence[int]) -> Plan:
    """Walk the batch in order. A result answers a call made earlier in the batch if there is
    one, else a stored open call (checked by :func:`apply`); a second answer to one call, or an
    answer to a call the batch already answered, is bad. A reused id opens the call again."""
    result = Plan()
    called_in_batch: set[str] = set()
    for index, (message, seq) in enumerate(zip(batch, seqs, strict=True)):
        if message.tool_calls:
            for call in message.tool_calls:
                result.opened[call.id] = seq
                called_in_batch.add(call.id)
            continue
        if message.role != "tool" or message.tool_call_id is None:
            continue
        call_id = message.tool_call_id
        if call_id in result.opened:
            del result.opened[call_id]
        elif call_id in called_in_batch or call_id in result.answers_stored:
            result.bad.append(index)
        else:
            result.answers_stored[call_id] = index
    # Stored rows to drop: calls this batch answers, and calls it made again and answered
    # (the stored row pointed at an older message, which the newer call superseded).
    result.closing = set(result.answers_stored) | (called_in_batch - set(result.opened))
    return result


async def apply(
    conn: AsyncConnection,
    dialect: Dialect,
    user_id: str,
    conversation_id: uuid.UUID,
    batch: Sequence[MessageCreate],
    seqs: Sequence[int],
) -> None:
    """Check the batch's tool results and record the calls it leaves open; raise
    :class:`ValidationError` naming every result that answers no open call."""
    todo = plan(batch, seqs)
    if not todo.touches_database and not todo.bad:
        return
    was_open: set[str] = set()
    closing = sorted(todo.closing)
    for start in range(0, len(closing), _CHUNK):
        chunk = closing[start : start + _CHUNK]
        rows = await conn.execute(
            delete(open_tool_calls)
            .where(
                _T.user_id == user_id,
                _T.conversation_id == conversation_id,
                _T.call_id.in_(chunk),
            )
            .returning(_T.call_id)
        )
        was_open.update(rows.scalars())
    bad = todo.bad + [i for call, i in todo.answers_stored.items() if call not in was_open]
    if bad:
        raise ValidationError([error(batch, index) for index in sorted(bad)])
    opened = [
        {"user_id": user_id, "conversation_id": conversation_id, "call_id": call, "seq": seq}
        for call, seq in todo.opened.items()
    ]
    for start in range(0, len(opened), _CHUNK):
        statement = dialect.insert(open_tool_calls)
        statement = statement.on_conflict_do_update(
            index_elements=[_T.conversation_id, _T.call_id, _T.user_id],
            set_={"seq": statement.excluded.seq},
        )
        await conn.execute(statement, opened[start : start + _CHUNK])


async def replace_calls(
    conn: AsyncConnection,
    dialect: Dialect,
    user_id: str,
    conversation_id: uuid.UUID,
    seq: int,
    change: tuple[Sequence[str], Sequence[str]],
    *,
    linear: bool,
) -> None:
    """A streaming update changed the tool calls of the message at ``seq`` from ``old`` to
    ``new`` (SPEC 10): a call it drops must have no result stored after it (a call that has
    its result stays); the open calls of a conversation that never branched follow (added
    ones open, unless a later message called the same id: the newest call is the open one)."""
    old, new = change
    dropped = sorted(set(old) - set(new))
    added = [call for call in new if call not in set(old)]
    if dropped:
        answered = (
            await conn.execute(
                select(_M.tool_call_id)
                .where(
                    _M.conversation_id == conversation_id,
                    _M.user_id == user_id,
                    _M.tool_call_id.in_(dropped),
                    _M.seq > seq,
                )
                .limit(1)
            )
        ).scalar()
        if answered is not None:
            raise ValidationError(
                f"tool call {answered!r} already has its result: it cannot be taken back",
                loc=("tool_calls",),
            )
        if linear:
            await conn.execute(
                delete(open_tool_calls).where(
                    _T.user_id == user_id,
                    _T.conversation_id == conversation_id,
                    _T.call_id.in_(dropped),
                    _T.seq == seq,
                )
            )
    if added and linear:
        statement = dialect.insert(open_tool_calls)
        statement = statement.on_conflict_do_update(
            index_elements=[_T.conversation_id, _T.call_id, _T.user_id],
            set_={"seq": statement.excluded.seq},
            where=_T.seq < statement.excluded.seq,
        )
        await conn.execute(
            statement,
            [
                {"user_id": user_id, "conversation_id": conversation_id, "call_id": c, "seq": seq}
                for c in added
            ],
        )


async def forget(conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID) -> None:
    """Drop every open call of a conversation (its messages are being deleted)."""
    await conn.execute(
        delete(open_tool_calls).where(_T.user_id == user_id, _T.conversation_id == conversation_id)
    )


def error(batch: Sequence[MessageCreate], index: int) -> FieldError:
    loc: tuple[str | int, ...] = (index,) if len(batch) > 1 else ()
    return FieldError(
        (*loc, "tool_call_id"),
        f"{batch[index].tool_call_id!r} answers no open tool call of an earlier assistant "
        "message in this conversation",
        "tool_call_not_open",
    )


__all__ = ["Plan", "apply", "error", "forget", "plan", "replace_calls"]
