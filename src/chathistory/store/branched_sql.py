"""A branched conversation (SPEC 11) read and appended to in ONE statement on PostgreSQL, as a
conversation that never branched is (:mod:`chathistory.store.sql`).

The statement takes the path rows the read needs (``conversation_paths`` by its primary key,
newest first or from the position asked), turns them into the seqs of the messages wanted
(``generate_series`` over each range, the ``LIMIT`` stopping the series as soon as there are
enough) and reads those messages by ``(conversation_id, seq)``. Each step is bounded by the
read's ``limit``, whatever the tree holds, and the statement is small enough to plan in about
what the one-chain read takes (unnamed statements are planned on every call).

Sibling numbers come from the rows read (:func:`numbers`): a message's place is its own
``sibling`` (1 when it goes straight on), the count its parent's ``children``; along a branch
a message's parent is the message before it, so the read takes one message more than asked,
on the side of the oldest, for its ``children`` only. A parent still missing (the root of a
first message, or one a page starts after) is looked up in one more statement.

An append after the current message, when that message is the conversation's newest (a chat
going on after a regenerate or an edit, the common case), is :data:`sql.APPEND_SQL` with two
changes: it requires a branched conversation whose current message is its newest, and it
carries the active branch's last path row on to the new last message (the branch grows by the
messages appended; anything else takes the general path).

Which statement to try first is a hint (:class:`Branched`): a conversation this process saw
branched is read with this statement, any other with the one-chain statement; each statement
checks the conversation's state itself, so a stale hint costs a second round trip, never a
wrong answer.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from chathistory.store import sql
from chathistory.store.sql import MESSAGE_COLUMNS

_SIZE: Final = "octet_length(concat(content, tool_calls, extras))"
# The numbers' columns, after the message's (and its size, when there is one).
NUMBERS: Final = ("fork", "sibling", "children")


def _statement(ascending: bool, share: bool) -> str:
    """$1 conversation, $2 user, $3 and $4 the bounds, at most $5 rows; then (``share``) $6
    each row's share of the byte budget, and now ($6 or $7). Backward: ``$3 < seq < $4``;
    forward: ``$3 <= seq < $4`` (the message at $3, when it is on the branch, is the parent of
    the first one after it: it comes back for its ``children`` only)."""
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
        inner = f"{MESSAGE_COLUMNS}, {_SIZE} AS size, fork, sibling, children"
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


async def numbers(
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
        for row in await driver.fetch(_PARENTS_SQL, conversation_id, user_id, missing):
            children[row["seq"]] = row["children"]
    return [
        (children.get(parent) or 1, row["sibling"] or 1)
        for row, parent in zip(found, parents, strict=True)
    ]


_LINEAR: Final = " AND NOT branched"
# The current message is the newest: the one at seq message_count (the row's value before
# the update, as a WHERE reads it).
_AT_NEWEST: Final = (
    " AND branched AND current_message_id = (SELECT m.id FROM messages AS m"
    " WHERE m.conversation_id = $1 AND m.user_id = $2 AND m.seq = conversations.message_count)"
)
# The active branch's last range (the one with the largest lo: found by the primary key, not
# by hi, which no index holds) ended at the message that was newest: it now ends at the new
# newest.
_GROW: Final = (
    " p AS (UPDATE conversation_paths SET hi = c.message_count FROM c"
    " WHERE conversation_paths.conversation_id = $1 AND conversation_paths.user_id = $2"
    " AND conversation_paths.lo = (SELECT max(lo) FROM conversation_paths"
    " WHERE conversation_id = $1 AND user_id = $2)"
    " AND conversation_paths.hi = c.message_count - $3),"
)
_INSERT: Final = " i AS (INSERT INTO messages"


def _append(statement: str) -> str:
    """The branched form of a one-statement append of :mod:`sql`."""
    if _LINEAR not in statement or statement.count(_INSERT) != 1:
        raise RuntimeError("the append statement changed shape: see branched_sql._append")
    return statement.replace(_LINEAR, _AT_NEWEST).replace(_INSERT, _GROW + _INSERT)


APPEND_SQL: Final = {one: _append(text) for one, text in sql.APPEND_SQL.items()}
APPEND_LOCKING_SQL: Final = {one: _append(text) for one, text in sql.APPEND_LOCKING_SQL.items()}


class Branched:
    """The conversations this process saw branched (the newest :data:`SIZE`): a hint of which
    statement reads them in one round trip (a conversation never goes back to one chain but
    by being cleared, and the statements check)."""

    SIZE: Final = 100_000

    def __init__(self) -> None:
        self._seen: OrderedDict[uuid.UUID, None] = OrderedDict()

    def __contains__(self, conversation_id: uuid.UUID) -> bool:
        return conversation_id in self._seen

    def add(self, conversation_id: uuid.UUID) -> None:
        self._seen[conversation_id] = None
        if len(self._seen) > self.SIZE:
            self._seen.popitem(last=False)

    def discard(self, conversation_id: uuid.UUID) -> None:
        self._seen.pop(conversation_id, None)


__all__ = [
    "APPEND_LOCKING_SQL",
    "APPEND_SQL",
    "NUMBERS",
    "PAGE_SHARE_SQL",
    "RANGE_SQL",
    "Branched",
    "numbers",
]
