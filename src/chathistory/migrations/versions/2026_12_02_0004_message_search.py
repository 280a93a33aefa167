"""Search (SPEC 8): ``message_search``, the words of every message with searchable text.

PostgreSQL: a table of ``tsvector``s with a GIN index over ``(user_id, words)`` (the
``btree_gin`` extension, trusted since PostgreSQL 13, so the database owner may create it) and
a b-tree over ``(user_id, created_at, message_id)``; rows go with their message (foreign key, on
delete cascade). On Citus the table is distributed by ``user_id`` like the others.

SQLite: the same columns in a table with an ``INTEGER PRIMARY KEY`` (a rowid no rebuild or
VACUUM renumbers), an FTS5 index over ``words`` kept by triggers, and a trigger that removes a
message's row with the message. A future migration that rebuilds ``messages`` on SQLite (batch
mode) drops that trigger with the table and must create it again (``MESSAGES_TRIGGER``).

Backfill: every stored message is read once, in batches of 1,000 by primary key, its words
cut in Python (``chathistory.store.search_syntax``, the rules every search uses) and inserted,
one short transaction per batch on PostgreSQL (a message that has its row already is skipped,
so an interrupted backfill resumes). It reads ``messages`` and locks none of it, so readers and
writers go on; the indexes are then built with ``CREATE INDEX CONCURRENTLY``. Expect about
10-20 s per million messages of Python work plus the index build.

Revision ID: 0004_message_search
Revises: 0003_message_extras
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chathistory.migrations import online
from chathistory.migrations.citus import distribute_new_table
from chathistory.store import search_syntax

revision: str = "0004_message_search"
down_revision: str | None = "0003_message_extras"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000

MESSAGES_TRIGGER = (
    "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN"
    " DELETE FROM message_search WHERE message_id = old.id AND user_id = old.user_id; END"
)
_SQLITE = [
    "CREATE TABLE message_search ("
    " search_rowid INTEGER PRIMARY KEY,"
    " message_id CHAR(32) NOT NULL,"
    " user_id VARCHAR(255) NOT NULL,"
    " conversation_id CHAR(32) NOT NULL,"
    " created_at DATETIME NOT NULL,"
    " words TEXT NOT NULL,"
    " CONSTRAINT uq_message_search_message_id_user_id UNIQUE (message_id, user_id))",
    "CREATE INDEX ix_message_search_user_id_created_at_message_id"
    " ON message_search (user_id, created_at, message_id)",
    "CREATE VIRTUAL TABLE message_search_fts USING fts5("
    "words, content='message_search', content_rowid='search_rowid', tokenize='ascii')",
    "CREATE TRIGGER message_search_insert AFTER INSERT ON message_search BEGIN"
    " INSERT INTO message_search_fts (rowid, words) VALUES (new.search_rowid, new.words); END",
    "CREATE TRIGGER message_search_delete AFTER DELETE ON message_search BEGIN"
    " INSERT INTO message_search_fts (message_search_fts, rowid, words)"
    " VALUES ('delete', old.search_rowid, old.words); END",
    MESSAGES_TRIGGER,
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
    else:
        online.ddl(
            bind,
            "create message_search",
            done=lambda: online.has_table(bind, "message_search"),
            apply=_create,
        )
    online.backfill(bind, "backfill message_search", lambda after: _batch(bind, after))
    if bind.dialect.name != "sqlite":  # indexes after the bulk insert: built once
        online.create_index(
            bind,
            "ix_message_search_user_id_created_at_message_id",
            lambda: op.create_index(
                "ix_message_search_user_id_created_at_message_id",
                "message_search",
                ["user_id", "created_at", "message_id"],
                postgresql_concurrently=True,
            ),
        )
        online.create_index(
            bind,
            "ix_message_search_user_id_words",
            lambda: op.create_index(
                "ix_message_search_user_id_words",
                "message_search",
                ["user_id", "words"],
                postgresql_using="gin",
                postgresql_concurrently=True,
            ),
        )


def _create() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_table(
        "message_search",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("words", postgresql.TSVECTOR(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id", "user_id"],
            ["messages.id", "messages.user_id"],
            name=op.f("fk_message_search_message_id_user_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "user_id", name=op.f("pk_message_search")),
    )
    distribute_new_table(op.get_bind(), "message_search")  # on Citus, like the others


def _batch(bind: Any, after: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """The search rows of the next :data:`BATCH` messages by primary key, but for the
    messages that have one already (written by an earlier, interrupted run)."""
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    messages = sa.table(
        "messages",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.String()),
        sa.column("conversation_id", sa.Uuid()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("content", json),
        sa.column("extras", json),
    )
    target = sa.table(
        "message_search",
        sa.column("message_id", sa.Uuid()),
        sa.column("user_id", sa.String()),
        sa.column("conversation_id", sa.Uuid()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("words", sa.Text()),
    )
    postgres = bind.dialect.name == "postgresql"
    words = sa.bindparam("words", type_=postgresql.TSVECTOR() if postgres else sa.Text())
    insert = target.insert().values(words=words)
    indexed = (
        sa.select(target.c.message_id)
        .where(target.c.message_id == messages.c.id, target.c.user_id == messages.c.user_id)
        .exists()
    )
    query = (
        sa.select(messages, indexed.label("indexed"))
        .order_by(messages.c.id, messages.c.user_id)
        .limit(BATCH)
    )
    if after is not None:
        query = query.where(sa.tuple_(messages.c.id, messages.c.user_id) > sa.tuple_(*after))
    rows = bind.execute(query).all()
    if not rows:
        return None
    batch = []
    for row in rows:
        text = None if row.indexed else search_syntax.searchable_text(row.content, row.extras)
        if text is None:
            continue
        batch.append(
            {
                "message_id": row.id,
                "user_id": row.user_id,
                "conversation_id": row.conversation_id,
                "created_at": row.created_at,
                "words": search_syntax.tsvector_text(text)
                if postgres
                else search_syntax.index_text(text),
            }
        )
    if batch:
        bind.execute(insert, batch)
    return (rows[-1].id, rows[-1].user_id)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS messages_search_delete")
        op.execute("DROP TABLE message_search_fts")
        op.execute("DROP TABLE message_search")
    else:
        op.drop_table("message_search")
