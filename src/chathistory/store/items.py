"""Items (SPEC 15): OpenAI's item format stored whole, in the conversation's one history.

An item is one ``messages`` row: ``item`` holds it exactly as given, ``item_id`` its id (given,
or ``item_<hex>`` made here). An item with a chat form (:func:`~chathistory.schemas.items.
chat_message`) fills the chat columns as that message, validated as one (limits, bad text, tool
pairing with ``call_id`` as ``tool_call_id``); an item with no chat form is a row of role
``item`` (:data:`~chathistory.models.ITEM_ROLE`) that no chat view reads. Items are appended by
the appending room's own transaction (lock, seq, branch, pairing, title, search), so they take
seq numbers and join the active branch like any message.

Reading: a row with an item reads as that item (its id filled in when the store made it); a
message appended the chat way reads as its items (:func:`~chathistory.schemas.items.
message_items`). ``after`` names any item, stored or derived.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory.errors import ConflictError, FieldError, ItemNotFoundError, ValidationError
from chathistory.models import ITEM_ROLE, messages, utcnow, uuid7
from chathistory.schemas import MessageCreate
from chathistory.schemas.base import find_unstorable
from chathistory.schemas.items import (
    ItemPage,
    chat_message,
    item_type,
    message_id_of,
    message_items,
)
from chathistory.store import appending, branches, conversations, limits, rows
from chathistory.store.appending import Rules
from chathistory.store.database import Database
from chathistory.store.rows import M

MADE_PREFIX: Final = "item_"
_STAND_IN: Final = MessageCreate(role="assistant", content="")
"""What an item with no chat form is to the appending room: a message that pairs nothing and
titles nothing; its row then becomes an ``item`` row (:meth:`Parsed.columns`)."""


@dataclass(slots=True)
class Parsed:
    """An item checked for storing: the item as JSON, its id (and whether it was given), its
    chat form (``form``) and the message its row is to the chat views (``chat`` false: none,
    as for an item merged into the assistant message before it, :func:`_turns`)."""

    item: dict[str, Any]
    item_id: str
    given: bool
    form: dict[str, Any] | None
    message: MessageCreate
    chat: bool

    def columns(self) -> dict[str, Any]:
        """The columns of its row set over its message's own."""
        columns: dict[str, Any] = {"item": self.item, "item_id": self.item_id}
        if not self.chat:
            columns |= {"role": ITEM_ROLE, "content": None, "token_count": 0}
        return columns

    def read(self) -> dict[str, Any]:
        return read(self.item, self.item_id)


def read(item: Mapping[str, Any], item_id: str) -> dict[str, Any]:
    """An item as every read returns it: as stored, its id filled in when the store made it."""
    out = dict(item)
    if not isinstance(out.get("id"), str) or not out["id"]:
        out["id"] = item_id
    return out


def parse(rules: Rules, items: Sequence[Mapping[str, Any]]) -> list[Parsed]:
    """The batch checked as a whole: every bad item reported at once."""
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError("must be a list of items", loc=("items",))
    if not items:
        raise ValidationError("must hold at least one item", loc=("items",))
    if len(items) > rules.max_batch_messages:
        raise ValidationError(
            [
                FieldError(
                    ("items",),
                    f"holds {len(items)} items; a batch holds at most {rules.max_batch_messages}",
                    "too_long",
                )
            ]
        )
    parsed: list[Parsed] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        try:
            parsed.append(_one(rules, item, (index,)))
        except ValidationError as exc:
            errors += exc.errors
    if errors:
        raise ValidationError(errors)
    given = [p.item_id for p in parsed if p.given]
    if len(set(given)) != len(given):
        raise ValidationError("the same id appears twice in one batch", loc=("id",))
    _turns(rules, parsed)
    return parsed


def _turns(rules: Rules, parsed: list[Parsed]) -> None:
    """One model turn's assistant items as ONE assistant message, as OpenAI's chat format
    wants it (and the Agents SDK's converter reads items): an assistant message item and the
    ``function_call`` / ``custom_tool_call`` items around it, with no other chat message
    between them (items with no chat form, reasoning say, do not count), become the chat
    message of the first of them, with all the tool calls; the rows of the others are
    ``item`` rows. Two assistant messages without tool calls stay two messages."""
    head: int | None = None
    for index, p in enumerate(parsed):
        if p.form is None:
            continue
        if p.form["role"] != "assistant":
            head = None
            continue
        if head is not None:
            first = parsed[head]
            assert first.form is not None
            joined = _joined(first.form, p.form)
            if joined is not None:
                first.form = joined
                first.message = _message(rules, joined, (head,))
                p.message, p.chat = _STAND_IN, False
                continue
        head = index


def _joined(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any] | None:
    """Two assistant chat messages as one, when either has tool calls (else ``None``)."""
    if not (first.get("tool_calls") or then.get("tool_calls")):
        return None
    out = dict(first)
    for key in ("content", "refusal"):
        texts = [m[key] for m in (first, then) if isinstance(m.get(key), str)]
        if texts:
            out[key] = "\n".join(texts)
    out["tool_calls"] = [*(first.get("tool_calls") or ()), *(then.get("tool_calls") or ())]
    return out


def _message(rules: Rules, form: dict[str, Any], loc: tuple[str | int, ...]) -> MessageCreate:
    """``form`` validated as a message, within the content limit."""
    try:
        message: MessageCreate = rows.parse(MessageCreate, form)
    except ValidationError as exc:
        raise ValidationError(
            [FieldError((*loc, *e.loc), e.msg, e.type) for e in exc.errors]
        ) from None
    _within(rules, message.text_size(), loc)
    return message


def _within(rules: Rules, size: int, loc: tuple[str | int, ...]) -> None:
    if size > rules.max_content_chars:
        raise ValidationError(
            [
                FieldError(
                    (*loc, "content"),
                    f"is {size} characters; the limit is {rules.max_content_chars}",
                    "too_long",
                )
            ]
        )


def _one(rules: Rules, item: Any, loc: tuple[str | int, ...]) -> Parsed:
    item_type(item, loc=loc)
    bad = find_unstorable(item, loc)
    if bad is not None:
        raise ValidationError([bad])
    try:
        as_json: dict[str, Any] = json.loads(json.dumps(item))
    except (TypeError, ValueError):
        raise ValidationError("must be JSON: objects, lists, strings, numbers", loc=loc) from None
    given_id = as_json.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not given_id):
        raise ValidationError("must be a non-empty string", loc=(*loc, "id"))
    item_id = given_id or f"{MADE_PREFIX}{uuid7().hex}"
    form = chat_message(as_json, loc=loc)
    if form is None:
        _within(rules, _text_size(as_json), loc)
        return Parsed(as_json, item_id, given_id is not None, None, _STAND_IN, False)
    message = _message(rules, form, loc)
    return Parsed(as_json, item_id, given_id is not None, form, message, True)


def _text_size(value: Any) -> int:
    """Characters of every string in an item with no chat form (its text, as a message's
    counts against the content limit)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    return 0


async def add(
    db: Database,
    rules: Rules,
    user_id: str,
    conversation_id: uuid.UUID,
    parsed: list[Parsed],
) -> list[dict[str, Any]]:
    """Store the items atomically after the active branch's last message, or return the
    stored ones when every id is already stored with the same item (a replay)."""
    for _attempt in range(2):
        try:
            async with db.transaction() as conn:
                replay = await _replay(conn, user_id, conversation_id, parsed)
                if replay is not None:
                    return replay
                await appending.append(
                    conn,
                    db,
                    rules,
                    user_id,
                    conversation_id,
                    [p.message for p in parsed],
                    db.stale_before(utcnow()),
                    [p.columns() for p in parsed],
                )
                return [p.read() for p in parsed]
        except IntegrityError:
            # A concurrent add of one of these ids: the retry replays it or reports the conflict.
            continue
    raise ConflictError("item ids collide with items stored concurrently")


async def _replay(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, parsed: list[Parsed]
) -> list[dict[str, Any]] | None:
    given = [p.item_id for p in parsed if p.given]
    if not given:
        return None
    found = {
        row.item_id: row.item
        for row in await conn.execute(
            select(M.item_id, M.item).where(
                M.conversation_id == conversation_id,
                M.user_id == user_id,
                M.item_id.in_(given),
                conversations.exists_live(user_id, conversation_id),
            )
        )
    }
    if not found:
        return None
    if len(found) != len(parsed):
        raise ConflictError(
            "some of these item ids are already stored and others are not: "
            "a batch is replayed whole or not at all"
        )
    for p in parsed:
        if found[p.item_id] != p.item:
            raise ConflictError(f"item {p.item_id} is already stored with a different item")
    return [p.read() for p in parsed]


# -- reading --------------------------------------------------------------------------------------


def row_items(row: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """The items of a stored row: its item, or the items of a message appended the chat way."""
    if row["item"] is not None:
        return [read(row["item"], row["item_id"])]
    return message_items(rows.message(row, None))


async def _rows(
    conn: AsyncConnection,
    db: Database,
    user_id: str,
    conversation_id: uuid.UUID,
    branched: bool,
    **bounds: Any,
) -> list[Mapping[Any, Any]]:
    if branched:
        found = await branches.read_active(conn, db.size, user_id, conversation_id, **bounds)
        return list(found)
    owned = (M.conversation_id == conversation_id, M.user_id == user_id)
    query = limits.bounded_range(list(messages.c), owned, db.size, **bounds)
    return [row._mapping for row in await conn.execute(query)]


async def page(
    db: Database,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    after: str | None,
    order: str,
) -> ItemPage:
    """At most ``limit`` items of the active branch in ``order``, after item ``after``."""
    rows.check_limit(limit)
    if order not in ("asc", "desc"):
        raise ValidationError("must be 'asc' or 'desc'", loc=("order",))
    ascending = order == "asc"
    if after is None:  # the first page: one statement, unless the conversation branched
        found = await db.dialect.read_items(
            user_id, conversation_id, ascending=ascending, limit=limit + 1, now=utcnow()
        )
        if found:
            return _page(found, ascending, [], limit)
    async with db.transaction() as conn:
        branched, _count = await branches.active(conn, user_id, conversation_id)
        skip: list[str] = []
        start: int | None = None
        if after is not None:
            seq, ids = await _position(conn, user_id, conversation_id, after)
            ids = ids if ascending else ids[::-1]
            skip = ids[: ids.index(after) + 1]
            start = seq - 1 if ascending else seq + 1  # the row of `after` is read again
        found = await _rows(
            conn,
            db,
            user_id,
            conversation_id,
            branched,
            ascending=ascending,
            limit=limit + 1 + (after is not None),  # a row holds at least one item
            past=start if ascending else None,
            until=None if ascending else start,
        )
    return _page(found, ascending, skip, limit)


def _page(
    found: Sequence[Mapping[Any, Any]], ascending: bool, skip: list[str], limit: int
) -> ItemPage:
    """The page of the items of ``found`` (rows in list order), less the ``skip`` first."""
    data: list[dict[str, Any]] = []
    for row in found:
        items = row_items(row)
        data += items if ascending else items[::-1]
    data = data[len(skip) :]
    has_more = len(data) > limit
    data = data[:limit]
    return ItemPage(
        data=data,
        has_more=has_more,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
    )


async def _position(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> tuple[int, list[str]]:
    """The seq of the row holding item ``item_id`` and the ids of that row's items, in order;
    :class:`ItemNotFoundError` (after the conversation's own 404) if it holds none such."""
    row = await _row_of(conn, user_id, conversation_id, item_id)
    ids = [item["id"] for item in row_items(row)]
    return int(row["seq"]), ids


async def _row_of(
    conn: AsyncConnection, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> Mapping[Any, Any]:
    owned = (
        M.conversation_id == conversation_id,
        M.user_id == user_id,
        conversations.exists_live(user_id, conversation_id),
    )
    found = (await conn.execute(select(messages).where(*owned, M.item_id == item_id))).first()
    if found is None and (message_id := message_id_of(item_id)) is not None:
        found = (
            await conn.execute(select(messages).where(*owned, M.id == message_id, M.item.is_(None)))
        ).first()
    if found is not None and item_id in [item["id"] for item in row_items(found._mapping)]:
        return found._mapping
    await conversations.require(conn, user_id, conversation_id)
    raise ItemNotFoundError(item_id)


async def one(
    db: Database, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> dict[str, Any]:
    """Item ``item_id`` of the conversation (of any branch)."""
    async with db.transaction() as conn:
        row = await _row_of(conn, user_id, conversation_id, item_id)
    return next(item for item in row_items(row) if item["id"] == item_id)
