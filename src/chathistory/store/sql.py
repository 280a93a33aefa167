"""PostgreSQL's hand-written statements, in one place: the hot reads run them straight on the
pooled asyncpg connection (unnamed statements unless the engine caches them), past
SQLAlchemy's statement machinery. SQLite runs the same operations as SQLAlchemy Core
statements (:func:`chathistory.store.limits.bounded_range`); the shared suite proves they agree.
"""

from __future__ import annotations

from typing import Final

MAX_SEQ: Final = 2**31 - 1
MESSAGE_COLUMNS: Final = (
    "id, conversation_id, user_id, seq, role, content, name, tool_calls,"
    " tool_call_id, metadata, token_count, created_at"
)
_SIZE: Final = (
    "coalesce(octet_length(content::text), 0) + coalesce(octet_length(tool_calls::text), 0)"
)
# A page: messages with $3 < seq < $4, at most $5, stopping at a byte budget ($6) inside the
# database: rows are numbered by the running size of their content and tool calls, and only
# those starting within the budget come back (so at most one row past it).
PAGE_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS}, size FROM (SELECT {MESSAGE_COLUMNS}, {_SIZE} AS size,"  # noqa: S608
        f" sum({_SIZE}) OVER (ORDER BY seq {direction}) AS running FROM messages"
        " WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4"
        f" ORDER BY seq {direction} LIMIT $5) AS page WHERE running - size <= $6"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}
# The same range without a budget (``get_chat_history``: the caller asked for that many).
RANGE_SQL: Final = {
    ascending: (
        f"SELECT {MESSAGE_COLUMNS} FROM messages"  # noqa: S608
        " WHERE conversation_id = $1 AND user_id = $2 AND seq > $3 AND seq < $4"
        f" ORDER BY seq {direction} LIMIT $5"
    )
    for ascending, direction in ((True, "ASC"), (False, "DESC"))
}

CONVERSATION_COLUMNS: Final = "id, user_id, title, metadata, created_at, updated_at, message_count"
# A page of a user's conversations, most recently updated first: the first one, and the one
# after a keyset position ($2, $3); at most $2 / $4 rows.
LIST_FIRST_SQL: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations"  # noqa: S608
    " WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2"
)
LIST_AFTER_SQL: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations"  # noqa: S608
    " WHERE user_id = $1 AND (updated_at, id) < ($2, $3)"
    " ORDER BY updated_at DESC, id DESC LIMIT $4"
)
