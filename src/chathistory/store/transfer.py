"""Export and import, the store's side: every user, a conversation's messages in chunks, the
whole export in one snapshot, and a conversation imported whole (ids, seq and timestamps kept).
The JSON Lines format lives in :mod:`chathistory.transfer`."""

from __future__ import annotations

import bisect
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ConflictError, FieldError, ValidationError
from chathistory.models import conversations, messages, utcnow
from chathistory.schemas import (
    ConversationRead,
    MessageRead,
    check_user_id,
)
from chathistory.schemas.transfer import ConversationRecord, MessageRecord
from chathistory.store import appending, branches, rows, search, tool_pairing, tool_sites
from chathistory.store import conversations as rooms_conversations
from chathistory.store.database import Database
from chathistory.store.dialects import Dialect
from chathistory.store.paths import walked
from chathistory.store.rows import CONVERSATION_COLUMNS, C, M

IMPORT_CHUNK: Final = 1000
IMPORT_BATCH_CHARS: Final = 4_000_000  # text per batch of an import, whatever ``chunk``
_USERS_CHUNK: Final = 1000


async def user_ids(db: Database, *, chunk: int = _USERS_CHUNK) -> AsyncIterator[str]:
    """Every user that has a conversation, in order (for exports of the whole database)."""
    after: str | None = None
    while True:
        async with db.transaction() as conn:
            users = await _user_id_page(conn, after, chunk)
        for user_id in users:
            yield user_id
        if len(users) < chunk:
            return
        after = users[-1]


async def _user_id_page(conn: AsyncConnection, after: str | None, chunk: int) -> list[str]:
    query = select(C.user_id).distinct().order_by(C.user_id).limit(chunk)
    if after is not None:
        query = query.where(C.user_id > after)
    return list((await conn.execute(query)).scalars())


async def conversation_messages(
    db: Database, user_id: str, conversation_id: uuid.UUID, *, chunk: int
) -> AsyncIterator[MessageRead]:
    """Every message of a conversation in seq order, read ``chunk`` rows at a time."""
    after = 0
    while True:
        async with db.transaction() as conn:
            found = (
                await conn.execute(
                    select(messages)
                    .where(
                        M.conversation_id == conversation_id,
                        M.user_id == user_id,
                        M.seq > after,
                        rooms_conversations.exists_live(user_id, conversation_id),
                    )
                    .order_by(M.seq.asc())
                    .limit(chunk)
                )
            ).all()
            if not found and after == 0:
                await rooms_conversations.require(conn, user_id, conversation_id)
        stale_before = db.stale_before(utcnow())
        for row in found:
            yield rows.message(row._mapping, stale_before)
        if len(found) < chunk:
            return
        after = found[-1].seq


async def export(
    db: Database, given: list[str] | None, *, chunk: int
) -> AsyncGenerator[ConversationRead | MessageRead, None]:
    """Every conversation of the ``given`` users (of every user when ``None``), each followed
    by its messages in seq order, all read in ONE snapshot (:meth:`Database.snapshot`): exactly
    what was committed when the export began, each once, whatever is written meanwhile. Per
    user two statements, both naming ``user_id``, stream side by side through server-side
    cursors, ``chunk`` rows at a time: memory holds a chunk, never a user or a conversation."""
    now = utcnow()  # what has expired by the time the export begins is not in it
    async with db.snapshot() as conn:
        async for user_id in _export_users(conn, given):
            async for item in _export_user(conn, user_id, chunk, now, db.stale_before(now)):
                yield item


async def _export_users(conn: AsyncConnection, given: list[str] | None) -> AsyncIterator[str]:
    if given is not None:
        for user_id in given:
            yield user_id
        return
    after: str | None = None
    while True:
        users = await _user_id_page(conn, after, _USERS_CHUNK)
        for user_id in users:
            yield user_id
        if len(users) < _USERS_CHUNK:
            return
        after = users[-1]


async def _export_user(
    conn: AsyncConnection, user_id: str, chunk: int, now: datetime, stale_before: datetime
) -> AsyncIterator[ConversationRead | MessageRead]:
    order = (C.updated_at.desc(), C.id.desc())
    live = rooms_conversations.live(now)
    heads = select(*CONVERSATION_COLUMNS).where(C.user_id == user_id, live).order_by(*order)
    bodies = (
        select(messages)
        .join(conversations, (C.id == M.conversation_id) & (C.user_id == M.user_id))
        .where(C.user_id == user_id, M.user_id == user_id, live)
        .order_by(*order, M.seq.asc())
    )
    streaming = {"yield_per": chunk}
    async with (
        conn.stream(heads, execution_options=streaming) as head_rows,
        conn.stream(bodies, execution_options=streaming) as message_rows,
    ):
        pending: MessageRead | None = None
        bodies_left = aiter(message_rows)
        async for head in head_rows:
            conversation = rows.conversation(head._mapping)
            yield conversation
            while True:
                if pending is None:
                    row = await anext(bodies_left, None)
                    if row is None:
                        break
                    pending = rows.message(row._mapping, stale_before)
                if pending.conversation_id != conversation.id:
                    break  # the next conversation's (this one has no more)
                yield pending
                pending = None
        if pending is not None:  # both statements read one snapshot: cannot happen
            raise RuntimeError(f"export: message {pending.id} out of step")


async def import_conversation(
    db: Database,
    rules: appending.Rules,
    record: ConversationRecord | Mapping[str, Any],
    items: Iterable[MessageRecord | Mapping[str, Any]] | None,
    chunk: int,
) -> bool:
    """Store an exported conversation whole (see :meth:`ChatHistory.import_conversation`)."""
    if items is None:
        record, items = _split_record(record)
    elif (isinstance(record, Mapping) and "messages" in record) or (
        isinstance(record, ConversationRecord) and record.messages
    ):
        raise ValidationError("given both in the record and as items", loc=("messages",))
    spec: ConversationRecord = rows.parse(ConversationRecord, record)
    check_user_id(spec.user_id)
    try:
        async with db.transaction() as conn:
            return await _import(conn, db.dialect, rules, spec, items, chunk)
    except IntegrityError as exc:
        raise ConflictError(f"conversation {spec.id}: an id is already stored elsewhere") from exc


async def _import(
    conn: AsyncConnection,
    dialect: Dialect,
    rules: appending.Rules,
    spec: ConversationRecord,
    items: Iterable[MessageRecord | Mapping[str, Any]],
    chunk: int,
) -> bool:
    existing = await rooms_conversations.find(conn, spec.user_id, spec.id)
    if existing is None:
        await conn.execute(
            insert(conversations).values(
                id=spec.id,
                user_id=spec.user_id,
                title=spec.title,
                metadata=spec.metadata,
                created_at=spec.created_at,
                updated_at=spec.updated_at,
                message_count=0,  # counted as the messages go in
                archived=spec.archived,
                pinned=spec.pinned,
                expires_at=spec.expires_at,
            )
        )
    count, last, had_user = 0, None, False
    tree = _Tree()
    for batch in _import_batches(rules, items, chunk):
        if existing is None:
            await _import_batch(conn, dialect, rules, spec, count, batch, tree)
        count += len(batch)
        last = batch[-1].id
        had_user = had_user or any(m.role == "user" for m in batch)
    if existing is not None:
        stored_last = (
            await conn.execute(
                select(M.id)
                .where(M.conversation_id == spec.id, M.user_id == spec.user_id)
                .order_by(M.seq.desc())
                .limit(1)
            )
        ).scalar()
        if existing.message_count == count and stored_last == last:
            return False
        raise ConflictError(f"conversation {spec.id} is already stored with other messages")
    if count:
        current = spec.current_message_id or last
        values: dict[str, Any] = {"current_message_id": current}
        if current is not None and (tree.branched or current != last):
            seq = await branches.message_seq(
                conn, spec.user_id, spec.id, current, "current_message_id"
            )
            path = walked(tree.starts, tree.forks, seq)  # the whole branch: none is active yet
            await branches.write_path(conn, spec.user_id, spec.id, path)
            values["branched"] = True
        values["roots"] = tree.children.pop(0, None)
        await branches.number_parents(conn, spec.user_id, spec.id, tree.children)
        await conn.execute(
            update(conversations)
            .where(C.user_id == spec.user_id, C.id == spec.id)
            .values(message_count=count, has_user_message=had_user, **values)
        )
    return True


@dataclass
class _Tree:
    """An import's place in the tree it rebuilds (SPEC 11): the message before, and whether a
    message has started a run yet (until then tool calls pair as in one chain)."""

    last_id: uuid.UUID | None = None
    branched: bool = False
    starts: list[int] = field(default_factory=lambda: [1])  # where each run begins
    forks: list[int] = field(default_factory=lambda: [0])  # and the seq it follows
    children: dict[int, int] = field(default_factory=dict)  # of each parent forked from

    def adopt(self, parent: int) -> int:
        """A message starting a run after ``parent`` (0: a new first message): its place among
        the parent's children. The one going straight on (the message after the parent, when
        it starts no run) came first."""
        if parent not in self.children:
            after = bisect.bisect_left(self.starts, parent + 1)
            starts_run = after < len(self.starts) and self.starts[after] == parent + 1
            self.children[parent] = 0 if parent and starts_run else 1
        self.children[parent] += 1
        return self.children[parent]


def _import_batches(
    rules: appending.Rules, items: Iterable[MessageRecord | Mapping[str, Any]], chunk: int
) -> Iterator[list[MessageRecord]]:
    """The messages validated, in batches of at most ``chunk`` messages or about
    ``IMPORT_BATCH_CHARS`` characters of text."""
    if isinstance(items, str | bytes | Mapping):
        raise ValidationError("must be a list of messages", loc=("messages",))
    batch: list[MessageRecord] = []
    chars = 0
    for index, item in enumerate(items):
        try:
            message: MessageRecord = rows.parse(MessageRecord, item)
        except ValidationError as exc:
            raise ValidationError(
                [FieldError(("messages", index, *e.loc), e.msg, e.type) for e in exc.errors]
            ) from None
        if message.seq != index + 1:
            raise ValidationError(
                f"seq must run 1, 2, 3, ...; item {index} has {message.seq}", loc=("messages",)
            )
        size = message.text_size()
        if size > rules.max_content_chars:
            raise ValidationError(
                f"is {size} characters; the limit is {rules.max_content_chars}",
                loc=("messages", index, "content"),
            )
        batch.append(message)
        chars += size
        if len(batch) >= chunk or chars >= IMPORT_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


async def _import_batch(
    conn: AsyncConnection,
    dialect: Dialect,
    rules: appending.Rules,
    spec: ConversationRecord,
    start: int,
    batch: list[MessageRecord],
    tree: _Tree,
) -> None:
    stored = [appending.row(rules, spec.user_id, spec.id, m, m.seq, m.created_at) for m in batch]
    runs: list[int] = []  # where each run of this batch begins (a message with a fork)
    seqs = {m.id: m.seq for m in batch}
    seqs.update(await _stored_seqs(conn, spec, batch, seqs))
    for index, (message, row) in enumerate(zip(batch, stored, strict=True)):
        row["updated_at"] = message.updated_at
        named = "parent_id" in message.model_fields_set and message.parent_id != tree.last_id
        row["parent_id"] = message.parent_id if named else tree.last_id
        if named:
            parent = 0
            if message.parent_id is not None:
                parent = seqs.get(message.parent_id) or await _stored_seq(
                    conn, spec, message.parent_id, start + index
                )
            if parent >= message.seq:
                raise ValidationError(
                    "must be a message earlier in this conversation",
                    loc=("messages", start + index, "parent_id"),
                )
            row["fork"] = parent
            row["sibling"] = tree.adopt(parent)
            runs.append(index)
            if message.seq > 1:
                tree.starts.append(message.seq)
                tree.forks.append(parent)
        tree.last_id = row["id"]
    await conn.execute(insert(messages), stored)
    await tool_sites.record(conn, dialect, spec.user_id, spec.id, stored)
    if runs and not tree.branched:  # its first fork: tool calls pair along branches now
        await tool_pairing.forget(conn, spec.user_id, spec.id)  # (rows come at the end)
        tree.branched = True
    try:
        if not tree.branched:
            seqs_of_batch = [m.seq for m in batch]
            await tool_pairing.apply(conn, dialect, spec.user_id, spec.id, batch, seqs_of_batch)
        else:
            for begin, end in zip([0, *runs], [*runs, len(batch)], strict=True):
                if begin == end:
                    continue
                part = batch[begin:end]
                if not any(m.role == "tool" for m in part):
                    continue  # nothing to pair
                parent = stored[begin]["fork"] if begin in runs else part[0].seq - 1
                base = walked(tree.starts, tree.forks, parent)
                await tool_sites.check(
                    conn, spec.user_id, spec.id, base, part, [m.seq for m in part]
                )
    except ValidationError as exc:  # its locations count from the batch's first message
        raise ValidationError([_shift(e, start) for e in exc.errors]) from None
    await search.index(conn, dialect.search, stored)


async def _stored_seqs(
    conn: AsyncConnection,
    spec: ConversationRecord,
    batch: list[MessageRecord],
    known: Mapping[uuid.UUID, int],
) -> dict[uuid.UUID, int]:
    """The seqs of the parents named by ``batch`` in earlier batches, a statement per
    thousand (the
    ones not found are reported by :func:`_stored_seq`)."""
    wanted = {
        m.parent_id for m in batch if "parent_id" in m.model_fields_set and m.parent_id is not None
    } - set(known)
    ordered, found = sorted(wanted), dict[uuid.UUID, int]()
    for start in range(0, len(ordered), IMPORT_CHUNK):  # under the bound-parameter limits
        rows = await conn.execute(
            select(M.id, M.seq).where(
                M.conversation_id == spec.id,
                M.user_id == spec.user_id,
                M.id.in_(ordered[start : start + IMPORT_CHUNK]),
            )
        )
        found.update((row.id, int(row.seq)) for row in rows)
    return found


async def _stored_seq(
    conn: AsyncConnection, spec: ConversationRecord, message_id: uuid.UUID, index: int
) -> int:
    seq = (
        await conn.execute(
            select(M.seq).where(
                M.conversation_id == spec.id, M.user_id == spec.user_id, M.id == message_id
            )
        )
    ).scalar()
    if seq is None:
        raise ValidationError(
            "must be a message earlier in this conversation",
            loc=("messages", index, "parent_id"),
        )
    return int(seq)


def _shift(error: FieldError, start: int) -> FieldError:
    first = error.loc[0] if error.loc else None
    if isinstance(first, int):
        return FieldError(("messages", start + first, *error.loc[1:]), error.msg, error.type)
    return FieldError(("messages", start, *error.loc), error.msg, error.type)


def _split_record(
    record: ConversationRecord | Mapping[str, Any],
) -> tuple[ConversationRecord | Mapping[str, Any], Iterable[Any]]:
    """A whole record as its head and its messages (left in the head unless a list, so that
    validation names what is wrong with them)."""
    if isinstance(record, ConversationRecord):
        return record, record.messages
    if isinstance(record, Mapping) and isinstance(record.get("messages"), list):
        return {k: v for k, v in record.items() if k != "messages"}, record["messages"]
    return record, ()
