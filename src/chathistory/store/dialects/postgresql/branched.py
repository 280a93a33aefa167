"""A branched conversation (SPEC 11) read and appended to in ONE statement on PostgreSQL, as a
conversation that never branched is (:mod:`.reads`).

The statement takes the path rows the read needs (``conversation_paths`` by its primary key,
newest first or from the position asked), turns them into the seqs of the messages wanted
(``generate_series`` over each range, the ``LIMIT`` stopping the series as soon as there are
enough) and reads those messages by ``(conversation_id, seq)``. Each step is bounded by the
read's ``limit``, whatever the tree holds, and the statement is small enough to plan in about
what the one-chain read takes (unnamed statements are planned on every call).

Sibling numbers come from the rows read (:func:`numbers_of`): a message's place is its own
``sibling`` (1 when it goes straight on), the count its parent's ``children``; along a branch
a message's parent is the message before it, so the read takes one message more than asked,
on the side of the oldest, for its ``children`` only. A parent still missing (the root of a
first message, or one a page starts after) is looked up in one more statement.

An append after the current message, when that message is the conversation's newest (a chat
going on after a regenerate or an edit, the common case), is the one-statement append with two
changes (:mod:`.appends`): it requires a branched conversation whose current message is its
newest, and it carries the active branch's last path row on to the new last message (the
branch grows by the messages appended; anything else takes the general path).

Which statement to try first is a hint (:class:`chathistory.store.database.Branched`): a
conversation this process saw branched is read with this statement, any other with the
one-chain statement; each statement
checks the conversation's state itself, so a stale hint costs a second round trip, never a
wrong answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from chathistory.store import limits
from chathistory.store.dialects.postgresql.params import (
    MAX_SIZE,
    BudgetedRead,
    Parents,
    Read,
    takes,
)
from chathistory.store.dialects.postgresql.records import MESSAGE_COLUMNS, SIZE

# The numbers' columns, after the message's (and its size, when there is one).
NUMBERS: Final = ("fork", "sibling", "children")


def _statement(ascending: bool, share: bool) -> str:
    """The parameters are :class:`.params.Read`'s, or with ``share`` :class:`.params.BudgetedRead`'s
    (``budget``: each row's share of the byte budget). Backward: ``past < seq < until``;
    forward: ``past <= seq < until`` (the message at ``past``, when it is on the branch, is the
    parent of the first one after it: it comes back for its ``children`` only)."""
    now = "$7" if share else "$6"
    owned = "conversation_id = $1 AND user_id = $2"
    live = (
        "EXISTS (SELECT FROM conversations WHERE id = $1 AND user_id = $2 AND branched"
        f" AND (expires_at IS NULL OR expires_at > {now}))"
    )
    if ascending:  # from the range holding the position asked, forward
        seqs = (
            "SELECT generate_series(greatest(lo, $3), least(hi, $4 - 1))"  # noqa: S608
            f" FROM conversation_paths WHERE {owned} AND lo < $4 AND hi >= $3 AND {live}"
            " AND lo >= (SELECT coalesce(max(lo), 0) FROM conversation_paths"
            f" WHERE {owned} AND lo <= greatest($3, 1)) ORDER BY lo LIMIT $5"
        )
        direction = "ASC"
    else:  # from the range holding the newest message asked, backward
        seqs = (
            "SELECT generate_series(least(hi, $4 - 1), greatest(lo, $3 + 1), -1)"  # noqa: S608
            f" FROM conversation_paths WHERE {owned} AND lo < $4 AND hi > $3 AND {live}"
            " ORDER BY lo DESC LIMIT $5"
        )
        direction = "DESC"
    if share:
        columns = (
            "id, conversation_id, user_id, seq, role,"
            " CASE WHEN size <= $6 THEN content END AS content, name,"
            " CASE WHEN size <= $6 THEN tool_calls END AS tool_calls, tool_call_id, metadata,"
            " token_count, created_at, status, updated_at, parent_id,"
            " CASE WHEN size <= $6 THEN extras END AS extras, size, fork, sibling, children"
        )
        inner = f"{MESSAGE_COLUMNS}, {SIZE} AS size, fork, sibling, children"
        return (
            f"SELECT {columns} FROM (SELECT {inner} FROM messages"  # noqa: S608 - constant text
            f" WHERE {owned} AND seq = ANY(ARRAY({seqs})) ORDER BY seq {direction} LIMIT $5)"
            " AS page"
        )
    return (
        f"SELECT {MESSAGE_COLUMNS}, fork, sibling, children FROM messages"  # noqa: S608
        f" WHERE {owned} AND seq = ANY(ARRAY({seqs})) ORDER BY seq {direction} LIMIT $5"
    )


RANGE_SQL: Final = {ascending: _statement(ascending, False) for ascending in (True, False)}
PAGE_SHARE_SQL: Final = {ascending: _statement(ascending, True) for ascending in (True, False)}
_PARENTS_SQL: Final = (
    "SELECT seq, children FROM messages WHERE conversation_id = $1 AND user_id = $2"
    " AND seq = ANY($3::int[]) UNION ALL SELECT 0, roots FROM conversations"
    " WHERE id = $1 AND user_id = $2 AND 0 = ANY($3::int[])"
)


async def numbers_of(
    driver: Any,
    user_id: str,
    conversation_id: uuid.UUID,
    found: Sequence[Mapping[str, Any]],
    read: Sequence[Mapping[str, Any]],
) -> list[tuple[int, int]]:
    """``(sibling_count, sibling_index)`` of each row ``found`` (any order), ``read`` holding
    them and maybe more: the place is the row's own ``sibling``, the count its parent's
    ``children``, and along a branch a message's parent is the one before it, read too; only a
    parent not read (the first message's root, or the message before the first one of a page)
    is looked up, in one statement."""
    children = {row["seq"]: row["children"] for row in read}
    parents = [row["seq"] - 1 if row["fork"] is None else row["fork"] for row in found]
    missing = sorted({parent for parent in parents if parent not in children})
    if missing:
        asked = Parents(conversation_id=conversation_id, user_id=user_id, seqs=missing)
        for row in await driver.fetch(_PARENTS_SQL, *asked):
            children[row["seq"]] = row["children"]
    return [
        (children.get(parent) or 1, row["sibling"] or 1)
        for row, parent in zip(found, parents, strict=True)
    ]


takes(Read, RANGE_SQL.values())
takes(BudgetedRead, PAGE_SHARE_SQL.values())
takes(Parents, [_PARENTS_SQL])


async def read(
    driver: Any, asked: Read, ascending: bool, max_bytes: int | None
) -> list[Mapping[str, Any]]:
    """The read of :meth:`.reads.Reads.read_range` for a branched conversation in one statement,
    each row with its ``sibling_count`` and ``sibling_index``; nothing when the conversation
    is not branched, has no such messages, or a large row needs the long way."""
    conversation_id, user_id, past, _until, limit, now = asked
    if limit is None:  # never: a branched read is asked with a limit
        return []
    # one message more, on the oldest side: the parent of the oldest one asked for
    wider = asked._replace(limit=limit + 1)
    if max_bytes is None:
        found = await driver.fetch(RANGE_SQL[ascending], *wider)
    else:
        share = min(max_bytes // max(limit, 1), MAX_SIZE)
        budgeted = BudgetedRead(
            conversation_id=conversation_id,
            user_id=user_id,
            past=past,
            until=wider.until,
            limit=wider.limit,
            budget=share,
            now=now,
        )
        found = await driver.fetch(PAGE_SHARE_SQL[ascending], *budgeted)
    kept = [row for row in found if row["seq"] != past][:limit] if ascending else found[:limit]
    numbers = await numbers_of(driver, user_id, conversation_id, kept, found)
    numbered = list(zip(kept, numbers, strict=True))
    if max_bytes is not None:
        sizes = [row["size"] for row, _ in numbered]
        if sum(sizes) > max_bytes:  # keep the rows starting within the budget
            numbered = numbered[: limits.starting_within(sizes, max_bytes)]
            sizes = sizes[: len(numbered)]
        if sizes and max(sizes) > share:  # a large row came without its content
            return []
    return Numbered(row for row, _ in numbered).having([pair for _, pair in numbered])


class Numbered(list[Any]):
    """Rows of a branched conversation read in one statement, with their sibling numbers."""

    numbers: list[tuple[int, int]]

    def having(self, numbers: list[tuple[int, int]]) -> Numbered:
        self.numbers = numbers
        return self


__all__ = ["NUMBERS", "PAGE_SHARE_SQL", "RANGE_SQL", "Numbered", "numbers_of", "read"]
