"""PostgreSQL's hot read and page: messages of a conversation by ``seq`` in one statement on the
pooled asyncpg connection, the statements beside the calls that run them; a conversation seen
branched is read along its active branch first (:mod:`.branched`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from chathistory.models import ITEM_ROLE
from chathistory.schemas import MessageRead
from chathistory.store import limits, rows
from chathistory.store.dialects.postgresql import branched
from chathistory.store.dialects.postgresql.params import (
    MAX_SEQ,
    MAX_SIZE,
    BudgetedRead,
    Read,
    takes,
)
from chathistory.store.dialects.postgresql.records import MESSAGE_COLUMNS, SIZE, message_record

if TYPE_CHECKING:
    from chathistory.store.database import Database


def _live(now: str) -> str:
    """The conversation ($1, of user $2) exists, has not expired at ``now`` (SPEC 9: an expired
    conversation's messages never come back, whatever the read) and never branched (its
    active branch is every message in seq order; a branched one is read along its path by
    :mod:`chathistory.store.branches`)."""
    return (
        " AND EXISTS (SELECT FROM conversations AS c WHERE c.id = $1 AND c.user_id = $2"
        f" AND (c.expires_at IS NULL OR c.expires_at > {now}) AND NOT c.branched)"
    )


# Rows of items with no chat form (role 'item', SPEC 15) are in no chat view.
_CHAT: Final = " AND role <> 'item'"

# A page (:class:`BudgetedRead`): messages with past < seq < until, at most limit, stopping at
# a byte budget inside the database: rows are numbered by the running size of their content
# and tool calls, and only those starting within the budget come back (so at most one row
# past it).
PAGE_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS}, size FROM (SELECT {MESSAGE_COLUMNS}, {SIZE} AS size,"  # noqa: S608
        f" sum({SIZE}) OVER (ORDER BY seq {direction}) AS running FROM messages"
        f" WHERE conversation_id = $1 AND user_id = $2"
        f" AND seq > $3 AND seq < $4{_CHAT}{_live('$7')}"
        f" ORDER BY seq {direction} LIMIT $5) AS page WHERE running - size <= $6"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
# The same page without the running size (a window over every row costs a third of the read):
# every row with its size, but the content, tool calls and extras only of rows of at most their
# share of the budget (:class:`BudgetedRead`'s ``budget`` here). When no row is larger, all of
# them together fit the budget and this is the page; otherwise (a large row, rare) PAGE_SQL
# reads it. Either way the database never sends more than the budget.
PAGE_SHARE_SQL: Final = {
    ascending: (
        "SELECT id, conversation_id, user_id, seq, role,"  # noqa: S608
        " CASE WHEN size <= $6 THEN content END AS content, name,"
        " CASE WHEN size <= $6 THEN tool_calls END AS tool_calls, tool_call_id, metadata,"
        " token_count, created_at, status, updated_at, parent_id,"
        " CASE WHEN size <= $6 THEN extras END AS extras, size"
        f" FROM (SELECT {MESSAGE_COLUMNS}, {SIZE} AS size FROM messages"
        f" WHERE conversation_id = $1 AND user_id = $2"
        f" AND seq > $3 AND seq < $4{_CHAT}{_live('$7')}"
        f" ORDER BY seq {direction} LIMIT $5) AS page"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
# The same range without a budget (``get_chat_history``: the caller asked for that many;
# :class:`Read`). Every read of messages names now: a conversation expired by then is gone.
RANGE_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
        f" WHERE conversation_id = $1 AND user_id = $2"
        f" AND seq > $3 AND seq < $4{_CHAT}{_live('$6')}"
        f" ORDER BY seq {direction} LIMIT $5"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}


# The first page of a conversation's items (SPEC 15): every row, with its item.
ITEMS_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS}, item, item_id FROM messages"  # noqa: S608
        f" WHERE conversation_id = $1 AND user_id = $2"
        f" AND seq > $3 AND seq < $4{_live('$6')}"
        f" ORDER BY seq {direction} LIMIT $5"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}


takes(Read, [*RANGE_SQL.values(), *ITEMS_SQL.values()])
takes(BudgetedRead, [*PAGE_SQL.values(), *PAGE_SHARE_SQL.values()])


class Reads:
    """:meth:`read_range` and :meth:`messages` of :class:`~.Postgres`."""

    _db: Database

    async def read_range(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        ascending: bool,
        limit: int | None,
        now: datetime,
        past: int | None = None,
        until: int | None = None,
        max_bytes: int | None = None,
        every: bool = False,
    ) -> Sequence[Mapping[str, Any]]:
        """One statement: ``RANGE_SQL`` without a budget; with one, ``PAGE_SHARE_SQL`` (each
        row's content only within its share of the budget), and ``PAGE_SQL`` (the running size)
        when a row larger than its share is among those kept. A conversation seen branched
        (``db.branched``) is read along its active branch first, unless ``every`` message is
        asked for."""
        db = self._db
        read = Read(
            conversation_id=conversation_id,
            user_id=user_id,
            past=0 if past is None else past,
            until=MAX_SEQ if until is None else until,
            limit=limit,
            now=now,
        )
        async with db.driver() as driver:
            found: list[Mapping[str, Any]]
            if conversation_id in db.branched and limit is not None and not every:
                found = await branched.read(driver, read, ascending, max_bytes)
                if found:
                    return found
            if max_bytes is None:
                return list(await driver.fetch(RANGE_SQL[ascending], *read))
            if limit is None:  # no share to give each row
                whole = _budgeted(read, max_bytes)
                return list(await driver.fetch(PAGE_SQL[ascending], *whole))
            # Each row's share of the budget: rows no larger than that all fit together.
            share = min(max_bytes // max(limit, 1), MAX_SIZE)
            found = await driver.fetch(PAGE_SHARE_SQL[ascending], *_budgeted(read, share))
            sizes = [row["size"] for row in found]
            if sum(sizes) > max_bytes:  # keep what PAGE_SQL keeps: the rows starting within
                kept = limits.starting_within(sizes, max_bytes)
                found, sizes = found[:kept], sizes[:kept]
            if sizes and max(sizes) > share:  # one of those came without its content
                whole = _budgeted(read, max_bytes)
                found = await driver.fetch(PAGE_SQL[ascending], *whole)
            return found

    async def read_items(
        self,
        user_id: str,
        conversation_id: uuid.UUID,
        *,
        ascending: bool,
        limit: int,
        now: datetime,
    ) -> Sequence[Mapping[str, Any]]:
        """``ITEMS_SQL``: one statement on the pooled asyncpg connection."""
        read = Read(
            conversation_id=conversation_id,
            user_id=user_id,
            past=0,
            until=MAX_SEQ,
            limit=limit,
            now=now,
        )
        async with self._db.driver() as driver:
            return list(await driver.fetch(ITEMS_SQL[ascending], *read))

    def messages(
        self, found: Sequence[Mapping[str, Any]], upto: int, stale_before: datetime
    ) -> list[MessageRead]:
        """Read models of the first ``upto`` records (:func:`.records.message_record`), a
        branched conversation's with their sibling numbers (:class:`.branched.Numbered`)."""
        items = [message_record(row, stale_before) for row in found[:upto]]
        if isinstance(found, branched.Numbered):
            for item, (count, index) in zip(items, found.numbers, strict=False):
                if count != 1 or index != 1:
                    rows.numbered(item, count, index)
            # read along the branch by seq: items with no chat form are in no chat view
            items = [item for item in items if item.role != ITEM_ROLE]
        return items


def _budgeted(read: Read, budget: int) -> BudgetedRead:
    return BudgetedRead(
        conversation_id=read.conversation_id,
        user_id=read.user_id,
        past=read.past,
        until=read.until,
        limit=read.limit,
        budget=budget,
        now=read.now,
    )


__all__ = ["ITEMS_SQL", "PAGE_SHARE_SQL", "PAGE_SQL", "RANGE_SQL", "Reads"]
