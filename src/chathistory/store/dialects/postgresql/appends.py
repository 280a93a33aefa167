"""PostgreSQL's append in one statement (the common case: no client ids, no tool calls or
results, no parent named): the same rules as :func:`chathistory.store.appending.append`, one
round trip, the row lock held for that one statement only. The statements, the form the
server's version takes (chosen once) and the call that runs them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from chathistory.models import utcnow
from chathistory.schemas import MessageCreate, MessageRead, title_from
from chathistory.store import rows, search
from chathistory.store.appending import Rules, row
from chathistory.store.dialects.postgresql.params import Append, takes
from chathistory.store.dialects.postgresql.search import PostgresSearch

if TYPE_CHECKING:
    from chathistory.store.database import Database


# An append in ONE statement (the common case: no client ids, no tool calls or results, a
# conversation that never branched): the conversation's UPDATE takes the row lock, hands out
# the seq numbers, moves updated_at forward, titles it from its first user message ever and
# makes the last new message current, returning the message that was current (each new
# message follows the one before it, SPEC 11); the INSERT takes the numbers.
# The parameters are :class:`.params.Append`'s: the batch's count, now, whether it has a user
# message and the title that message gives (or NULL), then one array per column, the words of
# each message for search as tsvector text (NULL: nothing to index), inserted in the same
# statement, the last new message's id and each message's parent within the batch (NULL for
# the first, which follows the current message). jsonb values go in as JSON text (the engine's
# codec). One message (``APPEND_SQL[True]``, most appends) gives its values as they are,
# without the parents (it follows the current message): no arrays to build, send and take
# apart, and no set returning functions to plan (with unnamed statements, a seventh of the
# server's work).
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


def _branched(statement: str) -> str:
    """The branched form of a one-statement append (see :mod:`.branched`)."""
    if _LINEAR not in statement or statement.count(_INSERT) != 1:
        raise RuntimeError("the append statement changed shape: see appends._branched")
    return statement.replace(_LINEAR, _AT_NEWEST).replace(_INSERT, _GROW + _INSERT)


BRANCHED_APPEND_SQL: Final = {one: _branched(text) for one, text in APPEND_SQL.items()}
BRANCHED_APPEND_LOCKING_SQL: Final = {
    one: _branched(text) for one, text in APPEND_LOCKING_SQL.items()
}


_FORMS: Final = (APPEND_SQL, APPEND_LOCKING_SQL, BRANCHED_APPEND_SQL, BRANCHED_APPEND_LOCKING_SQL)
takes(Append, [form[False] for form in _FORMS])  # a batch's
takes(Append, [form[True] for form in _FORMS], less=1)  # one message's: without the parents


class Appends:
    """:meth:`append_at_once` of :class:`~.Postgres`, and the statement it runs."""

    _db: Database
    _append: Mapping[bool, str] | None = None  # the append for the server's version
    _append_branched: Mapping[bool, str] = BRANCHED_APPEND_SQL

    def statement(self, driver: Any, one: bool, branched: bool = False) -> str:
        """The one-statement append for this server (:data:`APPEND_SQL` from PostgreSQL 18,
        which returns old values; :data:`APPEND_LOCKING_SQL` before, chosen once), in its form
        for ``one`` message or for a batch; the ``branched`` form (:mod:`.branched`)."""
        if self._append is None:
            major = driver.get_server_version().major
            self._append = APPEND_SQL if major >= 18 else APPEND_LOCKING_SQL
            self._append_branched = (
                BRANCHED_APPEND_SQL if major >= 18 else BRANCHED_APPEND_LOCKING_SQL
            )
        return (self._append_branched if branched else self._append)[one]

    async def append_at_once(
        self,
        rules: Rules,
        user_id: str,
        conversation_id: uuid.UUID,
        batch: list[MessageCreate],
    ) -> list[MessageRead] | None:
        """:func:`~chathistory.store.appending.append` in one statement (:data:`APPEND_SQL`):
        the same rules, one round trip, the row lock held for that one statement only."""
        db = self._db
        now = utcnow()
        stored = [row(rules, user_id, conversation_id, message, 0, now) for message in batch]
        first_user = next((m for m in batch if m.role == "user"), None)
        columns = (
            [r["id"] for r in stored],
            [r["role"] for r in stored],
            [json.dumps(r["content"]) for r in stored],
            [r["name"] for r in stored],
            [json.dumps(r["metadata"]) for r in stored],
            [r["token_count"] for r in stored],
            search.words_column(stored, db.engine, PostgresSearch.words),
        )
        parents = [None, *(r["id"] for r in stored[:-1])]  # (one message follows the current one)
        one = len(stored) == 1  # its values as they are, not in arrays (APPEND_SQL[True])
        ids, roles, contents, names, metadata, token_counts, words = (
            [column[0] for column in columns] if one else columns
        )
        arguments = Append(
            conversation_id=conversation_id,
            user_id=user_id,
            how_many=len(batch),
            now=now,
            has_user_message=first_user is not None,
            title=None if first_user is None else title_from(first_user.text()),
            ids=ids,
            roles=roles,
            contents=contents,
            names=names,
            metadata=metadata,
            token_counts=token_counts,
            words=words,
            last_id=stored[-1]["id"],
            parents=parents,
        )
        params = arguments.one() if one else arguments
        # a conversation seen branched: first the branched form (BRANCHED_APPEND_SQL)
        forms = (True, False) if conversation_id in db.branched else (False,)
        async with db.driver() as driver:
            for branched in forms:
                seqs = await driver.fetch(self.statement(driver, one, branched), *params)
                if seqs:
                    break
        if not seqs:  # not the user's, expired, or branched elsewhere: the general path tells
            return None
        first_seq = min(record["seq"] for record in seqs)
        parent_of = {record["seq"]: record["parent_id"] for record in seqs}
        for offset, stored_row in enumerate(stored):
            stored_row["seq"] = first_seq + offset
            stored_row["parent_id"] = parent_of[first_seq + offset]
        return [rows.message(r, None) for r in stored]


__all__ = [
    "APPEND_LOCKING_SQL",
    "APPEND_SQL",
    "BRANCHED_APPEND_LOCKING_SQL",
    "BRANCHED_APPEND_SQL",
    "Appends",
]
