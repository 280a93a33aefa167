"""Appending messages: parse the batch, then in one transaction lock the conversation and number
the batch, replay or refuse ids already stored, check tool results, title, insert.

``seq`` is assigned under the conversation's row lock: the transaction starts with
``UPDATE conversations SET message_count = message_count + n ... RETURNING message_count``, so
concurrent appenders queue on that row and take consecutive numbers, without gaps.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import (
    ConflictError,
    ConversationNotFoundError,
    FieldError,
    ValidationError,
)
from chathistory.models import conversations, messages, utcnow, uuid7
from chathistory.schemas import MAX_TOOL_CALLS, MessageCreate, MessageRead, title_from
from chathistory.store import branches, rows, search, tool_pairing, tool_sites
from chathistory.store.conversations import free_expired, live
from chathistory.store.database import Database
from chathistory.store.rows import C, M
from chathistory.tokens import TokenCounter


@dataclass(frozen=True)
class Rules:
    """The store's limits and tokenizer, as the appending and import rooms apply them."""

    max_content_chars: int
    max_batch_messages: int
    tokens: TokenCounter


def parse_batch(
    rules: Rules, batch: Sequence[MessageCreate | Mapping[str, Any]]
) -> list[MessageCreate]:
    """The batch validated as a whole: every bad field of every message reported at once."""
    if isinstance(batch, str | bytes | Mapping) or not isinstance(batch, Sequence):
        raise ValidationError("must be a list of messages", loc=("messages",))
    if not batch:
        raise ValidationError("must hold at least one message", loc=("messages",))
    if len(batch) > rules.max_batch_messages:
        too_many = f"holds {len(batch)} messages; a batch holds at most "
        raise ValidationError(
            [FieldError(("messages",), f"{too_many}{rules.max_batch_messages}", "too_long")]
        )
    calls = sum(_tool_call_count(item) for item in batch)
    if calls > rules.max_batch_messages:
        too_many = f"holds {calls} tool calls in all; a batch holds at most "
        raise ValidationError(
            [FieldError(("messages",), f"{too_many}{rules.max_batch_messages}", "too_long")]
        )
    parsed: list[MessageCreate] = []
    errors: list[FieldError] = []
    for index, item in enumerate(batch):
        try:
            message = item if isinstance(item, MessageCreate) else rows.parse(MessageCreate, item)
        except ValidationError as exc:
            prefix: tuple[str | int, ...] = (index,) if len(batch) > 1 else ()
            errors += [FieldError((*prefix, *e.loc), e.msg, e.type) for e in exc.errors]
            continue
        parsed.append(message)
    if errors:
        raise ValidationError(errors)
    check_sizes(rules, parsed)
    if any("parent_id" in m.model_fields_set for m in parsed[1:]):
        raise ValidationError(
            "only the first message of a batch can name parent_id (the others follow it)",
            loc=("parent_id",),
        )
    given = [m.id for m in parsed if m.id is not None]
    if len(set(given)) != len(given):
        raise ValidationError("the same id appears twice in one batch", loc=("id",))
    return parsed


def _tool_call_count(item: MessageCreate | Mapping[str, Any]) -> int:
    """The tool calls of a message not validated yet (each costs validation and counting), up
    to the cap of one message (a message over it is refused at its own ``tool_calls``)."""
    if isinstance(item, Mapping):
        calls = item.get("tool_calls")
    else:  # a MessageCreate, or a non-object that validation reports below
        calls = getattr(item, "tool_calls", None)
    return min(len(calls), MAX_TOOL_CALLS) if isinstance(calls, list | tuple) else 0


def check_sizes(rules: Rules, batch: Sequence[MessageCreate]) -> None:
    errors = [
        FieldError(
            (index, "content") if len(batch) > 1 else ("content",),
            f"is {message.text_size()} characters; the limit is {rules.max_content_chars}",
            "too_long",
        )
        for index, message in enumerate(batch)
        if message.text_size() > rules.max_content_chars
    ]
    if errors:
        raise ValidationError(errors)


def at_once(batch: Sequence[MessageCreate]) -> bool:
    """Whether a batch can be stored in one statement (:meth:`Dialect.append_at_once
    <chathistory.store.dialects.Dialect.append_at_once>`): no client ids (nothing to replay),
    no tool calls or results (nothing to pair)."""
    return not any(
        m.id is not None
        or m.role == "tool"
        or m.tool_calls
        or m.stored_extras()
        or m.status != "completed"
        or "parent_id" in m.model_fields_set
        for m in batch
    )


async def store(
    db: Database, rules: Rules, user_id: str, conversation_id: uuid.UUID, batch: list[MessageCreate]
) -> tuple[list[MessageRead], bool]:
    """Store a parsed batch: in one statement when it can (the dialect's ``append_at_once``),
    else by :func:`append` in a transaction (``False``: a replay of messages stored
    identically)."""
    if at_once(batch):
        stored = await db.dialect.append_at_once(rules, user_id, conversation_id, batch)
        if stored is not None:
            return stored, True
    for _attempt in range(2):
        try:
            async with db.transaction() as conn:
                stale_before = db.stale_before(utcnow())
                return await append(conn, db, rules, user_id, conversation_id, batch, stale_before)
        except IntegrityError:
            # Only a concurrent insert of one of these ids (into another conversation) gets
            # here: the retry sees it and replays or reports the conflict.
            continue
    raise ConflictError("message ids collide with messages stored concurrently")


async def append(
    conn: AsyncConnection,
    db: Database,
    rules: Rules,
    user_id: str,
    conversation_id: uuid.UUID,
    batch: list[MessageCreate],
    stale_before: datetime,
    shaped: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[MessageRead], bool]:
    """Store the batch (``True``), or return the stored rows of a replay (``False``), their
    status settled at ``stale_before`` (:func:`rows.settled`); a branched conversation is
    added to ``db.branched`` (:class:`~chathistory.store.database.Branched`). ``shaped``, one
    mapping per message, sets columns of its row over the message's own (items, SPEC 15)."""
    now = utcnow()
    # 1. Lock the conversation row and reserve seq numbers: the first statement writes, so
    #    concurrent appenders queue here (PostgreSQL row lock, SQLite write lock).
    locked = (
        await conn.execute(
            update(conversations)
            .where(C.user_id == user_id, C.id == conversation_id, live(now))
            .values(message_count=C.message_count + len(batch), updated_at=rows.forward(now))
            .returning(
                C.message_count, C.title, C.has_user_message, C.current_message_id, C.branched
            )
        )
    ).first()
    if locked is None:
        raise ConversationNotFoundError(conversation_id)
    first_seq = locked.message_count - len(batch) + 1

    # 2. Idempotency: ids already stored make this a replay (identical) or a conflict.
    given = [m.id for m in batch if m.id is not None]
    if given:
        replay = await _replay(conn, user_id, conversation_id, batch, given, now, stale_before)
        if replay is not None:
            await conn.rollback()
            return replay, False

    # 3. Its place in the tree (SPEC 11): after the current message, or the parent named.
    branched = bool(locked.branched)
    placed = await branches.place(
        conn,
        user_id,
        conversation_id,
        count=first_seq - 1,
        current_id=locked.current_message_id,
        branched=branched,
        parent=("parent_id" in batch[0].model_fields_set, batch[0].parent_id),
    )

    # 4. Tool results must answer an open tool call of an earlier assistant message of the
    #    branch: the open calls kept for a conversation that never branched, else the
    #    branch's own tool turns.
    seqs = range(first_seq, first_seq + len(batch))
    if placed.linear:
        await tool_pairing.apply(conn, db.dialect, user_id, conversation_id, batch, seqs)

    # 5. The first user message ever titles a conversation nobody titled.
    if not locked.has_user_message:
        await _first_user_message(conn, user_id, conversation_id, batch, locked.title)

    stored = [
        row(rules, user_id, conversation_id, message, first_seq + offset, now)
        for offset, message in enumerate(batch)
    ]
    for stored_row, columns in zip(stored, shaped or (), strict=False):
        stored_row.update(columns)
    parent_id = placed.parent_id
    for stored_row in stored:
        stored_row["parent_id"], parent_id = parent_id, stored_row["id"]
    stored[0]["fork"] = placed.fork
    if placed.fork is not None:  # it starts a run: one more child of its parent
        stored[0]["sibling"] = await branches.adopt(conn, user_id, conversation_id, placed.fork)
    await conn.execute(insert(messages), stored)
    await tool_sites.record(conn, db.dialect, user_id, conversation_id, stored)
    last_seq = first_seq + len(batch) - 1
    await branches.follow(
        conn,
        user_id,
        conversation_id,
        placed,
        branched=branched,
        count=first_seq - 1,
        first=first_seq,
        last=last_seq,
    )
    if not placed.linear:  # results answer calls of the branch the batch joined, now active
        await tool_sites.check(conn, user_id, conversation_id, None, batch, seqs)
    current: dict[str, Any] = {"current_message_id": stored[-1]["id"]}
    if not placed.linear:
        current["branched"] = True
        db.branched.add(conversation_id)
    await conn.execute(
        update(conversations).where(C.user_id == user_id, C.id == conversation_id).values(current)
    )
    await search.index(conn, db.dialect.search, stored)
    made = [rows.message(r, None) for r in stored]
    if placed.fork is not None:  # the newest of its parent's children (one going straight
        # on has none before it: its parent was the last message)
        rows.numbered(made[0], stored[0]["sibling"], stored[0]["sibling"])
    return made, True


async def _replay(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    batch: list[MessageCreate],
    given: list[uuid.UUID],
    now: datetime,
    stale_before: datetime,
) -> list[MessageRead] | None:
    """The stored messages of a replay of ``batch`` (``None``: none of its ids is stored); a
    :class:`ConflictError` if its ids are stored otherwise. The ids of an expired
    conversation's messages are not stored (SPEC 9): that conversation is deleted first."""
    stored_rows = (
        await conn.execute(select(messages).where(M.user_id == user_id, M.id.in_(given)))
    ).all()
    elsewhere = {row.conversation_id for row in stored_rows} - {conversation_id}
    gone = await free_expired(conn, user_id, elsewhere, now)
    found = {
        row.id: rows.message(row._mapping, stale_before)
        for row in stored_rows
        if row.conversation_id not in gone
    }
    if not found:
        return None
    if len(found) != len(batch):
        raise ConflictError(
            "some of these message ids are already stored and others are not: "
            "a batch is replayed whole or not at all"
        )
    stored = [found[message.id] for message in batch if message.id is not None]
    for message, existing in zip(batch, stored, strict=True):
        if not rows.same_message(message, existing, conversation_id):
            raise ConflictError(f"message {existing.id} is already stored with different content")
    return stored


async def _first_user_message(
    conn: AsyncConnection,
    user_id: str,
    conversation_id: uuid.UUID,
    batch: list[MessageCreate],
    title: str | None,
) -> None:
    first_user = next((m for m in batch if m.role == "user"), None)
    if first_user is None:
        return
    values: dict[str, Any] = {"has_user_message": True}
    if title is None and (text_title := title_from(first_user.text())) is not None:
        values["title"] = text_title
    await conn.execute(
        update(conversations).where(C.user_id == user_id, C.id == conversation_id).values(values)
    )


def row(
    rules: Rules,
    user_id: str,
    conversation_id: uuid.UUID,
    message: MessageCreate,
    seq: int,
    created_at: datetime,
) -> dict[str, Any]:
    """The ``messages`` row of a message, its token count included."""
    stored = {
        "id": message.id or uuid7(),
        "user_id": user_id,
        "conversation_id": conversation_id,
        "seq": seq,
        "role": message.role,
        "content": message.content,
        "name": message.name,
        "tool_calls": message.stored_tool_calls(),
        "tool_call_id": message.tool_call_id,
        "metadata": message.metadata,
        "created_at": created_at,
        "extras": message.stored_extras(),
        "status": message.status,
        "updated_at": None,
        "parent_id": None,
        "fork": None,
        "sibling": None,
    }
    stored["token_count"] = rules.tokens.count_message(stored)
    return stored
