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
    " tool_call_id, metadata, token_count, created_at, extras"
)
_SIZE: Final = (
    "coalesce(octet_length(content::text), 0) + coalesce(octet_length(tool_calls::text), 0)"
    " + coalesce(octet_length(extras::text), 0)"
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

# An append in ONE statement (the common case: no client ids, no tool calls or results): the
# conversation's UPDATE takes the row lock, hands out the seq numbers, moves updated_at
# forward and titles it from its first user message ever; the INSERT takes its numbers.
# $1 conversation, $2 user, $3 how many, $4 now, $5 the batch has a user message, $6 the title
# that message gives (or NULL), then one array per column. jsonb values go in as JSON text (the
# engine's codec). No row comes back when the conversation is not the user's.
APPEND_SQL: Final = (
    "WITH c AS (UPDATE conversations SET message_count = message_count + $3,"
    " updated_at = greatest(updated_at, $4), has_user_message = has_user_message OR $5,"
    " title = CASE WHEN title IS NULL AND NOT has_user_message THEN $6 ELSE title END"
    " WHERE id = $1 AND user_id = $2 RETURNING message_count)"
    " INSERT INTO messages (id, user_id, conversation_id, seq, role, content, name,"
    " tool_calls, tool_call_id, metadata, token_count, created_at)"
    " SELECT m.id, $2, $1, c.message_count - $3 + m.ord, m.role, m.content, m.name, NULL,"
    " NULL, m.metadata, m.token_count, $4 FROM c, unnest($7::uuid[], $8::text[], $9::jsonb[],"
    " $10::text[], $11::jsonb[], $12::int[]) WITH ORDINALITY"
    " AS m(id, role, content, name, metadata, token_count, ord) RETURNING seq"
)
