"""Search reads refusal content parts: index again the stored messages that hold one.

Search reads the text of ``{"type": "refusal", "refusal": "..."}`` content parts as it reads
text parts (``chathistory.store.search_syntax.searchable_text``). Messages stored before that
hold such a part have no ``message_search`` row, or one without the refusal's words; this
migration gives each of them its row again, computed by the same rules as every search.

The messages are walked in primary-key order ``(id, user_id)``, a window of
:data:`WINDOW` keys at a time (an index-only range, whatever the table holds). In each window
the database returns only the messages whose content may hold a refusal part (PostgreSQL:
``content @> '[{"type": "refusal"}]'``; SQLite: the JSON text holds ``"refusal"``), Python
confirms each and cuts its words, and then, one user at a time, their ``message_search`` rows are
deleted and inserted again (on SQLite the FTS5 index follows through its triggers). Every
statement that writes names ``user_id``, so on Citus each goes to one shard; no statement
updates a table. Messages without refusal parts are read as keys only and not touched. On
PostgreSQL each window is a short transaction of its own (a window run twice gives the same
rows, so an interrupted walk resumes). Expect a few seconds per million messages.

Downgrade does nothing: the rows stay valid (a refusal's words stay findable), and the schema
is unchanged.

Revision ID: 0008_refusal_search
Revises: 0007_branches
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chathistory.migrations import online
from chathistory.store import search_syntax

revision: str = "0008_refusal_search"
down_revision: str | None = "0007_branches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WINDOW = 5_000  # message keys per window of the walk

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_MESSAGES = sa.table(
    "messages",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("conversation_id", sa.Uuid()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("content", _JSON),
    sa.column("extras", _JSON),
)
_SEARCH = sa.table(
    "message_search",
    sa.column("message_id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("conversation_id", sa.Uuid()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("words", sa.Text()),
)


def upgrade() -> None:
    bind = op.get_bind()
    online.backfill(bind, "index refusal parts", lambda after: _window(bind, after))


def _window(bind: Any, after: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """Index again the messages with refusal parts among the next :data:`WINDOW` keys after
    ``after``; the last key of the window (``None`` at the end of the table)."""
    postgres = bind.dialect.name == "postgresql"
    m = _MESSAGES.c
    key = sa.tuple_(m.id, m.user_id)
    if postgres:
        may_refuse = sa.text("""messages.content @> '[{"type": "refusal"}]'::jsonb""")
    else:
        may_refuse = sa.text("""CAST(messages.content AS TEXT) LIKE '%"refusal"%'""")
    window = sa.select(m.id, m.user_id).order_by(m.id, m.user_id).offset(WINDOW - 1).limit(1)
    found = sa.select(_MESSAGES).where(may_refuse).order_by(m.id, m.user_id)
    if after is not None:
        window = window.where(key > sa.tuple_(*after))
        found = found.where(key > sa.tuple_(*after))
    last = bind.execute(window).first()
    if last is not None:
        found = found.where(key <= sa.tuple_(*last))
    _index(bind, [row for row in bind.execute(found) if _holds_refusal(row.content)], postgres)
    return None if last is None else (last[0], last[1])


def _holds_refusal(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(part, dict)
        and part.get("type") == "refusal"
        and isinstance(part.get("refusal"), str)
        for part in content
    )


def _index(bind: Any, rows: list[Any], postgres: bool) -> None:
    """Delete and insert again the ``message_search`` rows of ``rows``, one user at a time."""
    cut = search_syntax.tsvector_text if postgres else search_syntax.index_text
    words = sa.bindparam("words", type_=postgresql.TSVECTOR() if postgres else sa.Text())
    insert = _SEARCH.insert().values(words=words)
    for user_id, of_user in groupby(sorted(rows, key=lambda r: r.user_id), lambda r: r.user_id):
        mine = list(of_user)
        bind.execute(
            sa.delete(_SEARCH).where(
                _SEARCH.c.user_id == user_id, _SEARCH.c.message_id.in_([r.id for r in mine])
            )
        )
        batch = []
        for row in mine:
            text = search_syntax.searchable_text(row.content, row.extras)
            if text is not None:
                batch.append(
                    {
                        "message_id": row.id,
                        "user_id": user_id,
                        "conversation_id": row.conversation_id,
                        "created_at": row.created_at,
                        "words": cut(text),
                    }
                )
        if batch:
            bind.execute(insert, batch)


def downgrade() -> None:
    """Nothing to undo: the rows stay valid and the schema is unchanged."""
