"""PostgreSQL's hand-written statements, in one place: the hot reads run them straight on the
pooled asyncpg connection (unnamed statements unless the engine caches them), past
SQLAlchemy's statement machinery. SQLite runs the same operations as SQLAlchemy Core
statements (:func:`chathistory.store.limits.bounded_range`); the shared suite proves they agree.
"""

from __future__ import annotations

from typing import Final

MAX_SEQ: Final = 2**31 - 1
MAX_SIZE: Final = 2**31 - 1  # a row's size is an int4
MESSAGE_COLUMNS: Final = (
    "id, conversation_id, user_id, seq, role, content, name, tool_calls,"
    " tool_call_id, metadata, token_count, created_at, status, updated_at, parent_id, extras"
)
MESSAGE_NAMES: Final = tuple(name.strip() for name in MESSAGE_COLUMNS.split(","))
# A row's size: the bytes of its content, tool calls and extras as JSON text (concat skips a
# NULL and writes jsonb as its text, as ::text does). One call each: every function named in a
# statement is looked up again when an unnamed statement is parsed.
_SIZE: Final = "octet_length(concat(content, tool_calls, extras))"


def _live(now: str) -> str:
    """The conversation ($1, of user $2) exists, has not expired at ``now`` (SPEC 9: an expired
    conversation's messages never come back, whatever the read) and never branched (its
    active branch is every message in seq order; a branched one is read along its path by
    :mod:`chathistory.store.branches`)."""
    return (
        " AND EXISTS (SELECT FROM conversations AS c WHERE c.id = $1 AND c.user_id = $2"
        f" AND (c.expires_at IS NULL OR c.expires_at > {now}) AND NOT c.branched)"
    )


# A page: messages with $3 < seq < $4, at most $5, stopping at a byte budget ($6) inside the
# database: rows are numbered by the running size of their content and tool calls, and only
# those starting within the budget come back (so at most one row past it).
PAGE_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS}, size FROM (SELECT {MESSAGE_COLUMNS}, {_SIZE} AS size,"  # noqa: S608
        f" sum({_SIZE}) OVER (ORDER BY seq {direction}) AS running FROM messages"
        f" WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4{_live('$7')}"
        f" ORDER BY seq {direction} LIMIT $5) AS page WHERE running - size <= $6"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
# The same page without the running size (a window over every row costs a third of the read):
# every row with its size, but the content, tool calls and extras only of rows of at most $6
# bytes, each row's share of the budget. When no row is larger, all of them together fit the
# budget and this is the page; otherwise (a large row, rare) PAGE_SQL reads it. Either way
# the database never sends more than the budget.
PAGE_SHARE_SQL: Final = {
    ascending: (
        "SELECT id, conversation_id, user_id, seq, role,"  # noqa: S608
        " CASE WHEN size <= $6 THEN content END AS content, name,"
        " CASE WHEN size <= $6 THEN tool_calls END AS tool_calls, tool_call_id, metadata,"
        " token_count, created_at, status, updated_at, parent_id,"
        " CASE WHEN size <= $6 THEN extras END AS extras, size"
        f" FROM (SELECT {MESSAGE_COLUMNS}, {_SIZE} AS size FROM messages"
        f" WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4{_live('$7')}"
        f" ORDER BY seq {direction} LIMIT $5) AS page"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
# The same range without a budget (``get_chat_history``: the caller asked for that many).
# Every read of messages names now ($7 above, $6 here): a conversation expired by then is gone.
RANGE_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
        f" WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4{_live('$6')}"
        f" ORDER BY seq {direction} LIMIT $5"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}

CONVERSATION_COLUMNS: Final = (
    "id, user_id, title, metadata, created_at, updated_at, message_count,"
    " archived, pinned, expires_at, current_message_id"
)
CONVERSATION_NAMES: Final = tuple(name.strip() for name in CONVERSATION_COLUMNS.split(","))


def _listing(archived: bool | None, pinned: bool | None, after: bool) -> str:
    """A page of a user's conversations, most recently updated first, not expired at $2: the
    first one, and the one after a keyset position ($3, $4); at most $3 / $5 rows. The filters
    are constants of the statement, so each has its plan on its own index (models.py)."""
    flags = "".join(
        f" AND {name} = {'true' if value else 'false'}"
        for name, value in (("archived", archived), ("pinned", pinned))
        if value is not None
    )
    position = " AND (updated_at, id) < ($3, $4)" if after else ""
    return (
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations"  # noqa: S608
        f" WHERE user_id = $1{flags}{position} AND (expires_at IS NULL OR expires_at > $2)"
        f" ORDER BY updated_at DESC, id DESC LIMIT {'$5' if after else '$3'}"
    )


_FLAGS: Final = (None, True, False)
LIST_SQL: Final = {
    (archived, pinned, after): _listing(archived, pinned, after)
    for archived in _FLAGS
    for pinned in _FLAGS
    for after in (False, True)
}

# An append in ONE statement (the common case: no client ids, no tool calls or results, a
# conversation that never branched): the conversation's UPDATE takes the row lock, hands out
# the seq numbers, moves updated_at forward, titles it from its first user message ever and
# makes the last new message current, returning the message that was current (each new
# message follows the one before it, SPEC 11); the INSERT takes the numbers.
# $1 conversation, $2 user, $3 how many, $4 now, $5 the batch has a user message, $6 the title
# that message gives (or NULL), then one array per column, ($13) each message's words for
# search as tsvector text (NULL: nothing to index), inserted in the same statement, $14 the
# last new message's id and $15 each message's parent within the batch (NULL for the first,
# which follows the current message). jsonb values go in as JSON text (the engine's codec).
# One message (``APPEND_SQL[True]``, most appends) gives its values as they are, without $15
# (it follows the current message): no arrays to build, send and take apart, and no set
# returning functions to plan (with unnamed statements, a seventh of the server's work).
# No row comes back when the conversation is not the user's, has expired or has branched.
# The message that was current: PostgreSQL 18 returns it as ``old.current_message_id``; before
# 18 a ``SELECT ... FOR UPDATE`` in the statement reads it under the lock (APPEND_LOCKING_SQL:
# a plain read would see the snapshot from before a concurrent appender committed). No array
# subscripts: Citus 14 crashes on a subscripted parameter in an UPDATE's SET.
_ROWS: Final = {
    False: " SELECT m.id, $2, $1, c.message_count - $3 + m.ord, m.role, m.content, m.name, NULL,"
    " NULL, m.metadata, m.token_count, $4, coalesce(m.parent, c.parent) FROM c, unnest($7::uuid[],"
    " $8::text[], $9::jsonb[], $10::text[], $11::jsonb[], $12::int[], $15::uuid[]) WITH ORDINALITY"
    " AS m(id, role, content, name, metadata, token_count, parent, ord)",
    True: " SELECT $7::uuid, $2, $1, c.message_count, $8::text, $9::jsonb, $10::text, NULL, NULL,"
    " $11::jsonb, $12::int, $4, c.parent FROM c",
}
_WORD_ROWS: Final = {
    False: " SELECT w.id, $2, $1, $4, w.words::tsvector FROM c, unnest($7::uuid[], $13::text[])"
    " AS w(id, words) WHERE w.words IS NOT NULL",
    True: " SELECT $7::uuid, $2, $1, $4, $13::text::tsvector FROM c WHERE $13::text IS NOT NULL",
}


def _append_rest(one: bool) -> str:
    return (
        " i AS (INSERT INTO messages (id, user_id, conversation_id, seq, role, content, name,"  # noqa: S608 - constant text
        f" tool_calls, tool_call_id, metadata, token_count, created_at, parent_id){_ROWS[one]}"
        " RETURNING seq, parent_id),"
        " s AS (INSERT INTO message_search (message_id, user_id, conversation_id, created_at,"
        f" words){_WORD_ROWS[one]})"
        " SELECT seq, parent_id FROM i"
    )


_APPEND_SET: Final = (
    " SET message_count = message_count + $3,"
    " updated_at = greatest(updated_at, $4), has_user_message = has_user_message OR $5,"
    " title = CASE WHEN title IS NULL AND NOT has_user_message THEN $6 ELSE title END,"
    " current_message_id = $14"
)
_LIVE_LINEAR: Final = (
    "id = $1 AND user_id = $2 AND (expires_at IS NULL OR expires_at > $4) AND NOT branched"
)
APPEND_SQL: Final = {
    one: (
        f"WITH c AS (UPDATE conversations{_APPEND_SET} WHERE {_LIVE_LINEAR}"
        " RETURNING message_count, old.current_message_id AS parent),"
        f"{_append_rest(one)}"
    )
    for one in (False, True)
}
APPEND_LOCKING_SQL: Final = {
    one: (
        f"WITH o AS (SELECT current_message_id FROM conversations WHERE {_LIVE_LINEAR}"  # noqa: S608
        " FOR UPDATE),"
        f" c AS (UPDATE conversations{_APPEND_SET} FROM o WHERE id = $1 AND user_id = $2"
        " RETURNING message_count, o.current_message_id AS parent),"
        f"{_append_rest(one)}"
    )
    for one in (False, True)
}
