"""Branches (SPEC 11): ``parent_id`` and ``fork`` on messages, ``current_message_id`` and
``branched`` on conversations, the table ``conversation_paths`` (a branched conversation's
active branch, one row per run), and three partial indexes.

Every stored conversation is one chain, so each message's parent is the message one seq
before it (the first has none), no message starts a run (``fork`` NULL), the current message
is the last one, ``branched`` is false and ``conversation_paths`` holds nothing (the active
branch is every message in seq order).
The columns and the table come first, in one short transaction (they are NULL-able or have a
constant default, so adding them rewrites nothing). The backfill then sets ``parent_id`` and
``current_message_id`` a batch of conversations at a time in primary-key order (``UPDATE ...
FROM`` joining each message to the one before it on ``(conversation_id, user_id, seq)``, the
unique index), one short transaction per batch that touches only rows not linked yet, so an
interrupted backfill resumes; expect about a minute per ten million messages on PostgreSQL.
The partial indexes (only messages that start a run, none yet, and tool turns) are built with
``CREATE INDEX CONCURRENTLY``. Readers and writers go on throughout. Citus propagates the ALTER TABLEs and indexes (the joins are on the
distribution column) and the new table is distributed like the others.

Revision ID: 0007_branches
Revises: 0006_streaming_turns
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from alembic import op

from chathistory.migrations import online
from chathistory.migrations.citus import distribute_new_table
from chathistory.models import PARTIAL_INDEXES

revision: str = "0007_branches"
down_revision: str | None = "0006_streaming_turns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500  # conversations per backfill transaction


def upgrade() -> None:
    bind = op.get_bind()
    online.ddl(
        bind,
        "add the branch columns and conversation_paths",
        done=lambda: online.postgres(bind) and online.has_table(bind, "conversation_paths"),
        apply=_create,
    )
    online.backfill(bind, "link messages to their parents", lambda after: _batch(bind, after))
    for name, column, where in PARTIAL_INDEXES:
        online.create_index(
            bind,
            name,
            partial(
                op.create_index,
                name,
                "messages",
                ["conversation_id", column],
                unique=False,
                postgresql_where=sa.text(where),
                sqlite_where=sa.text(where),
                postgresql_concurrently=True,
            ),
        )


def _create() -> None:
    # conversations before messages: the order in which an append locks them (the other order
    # could deadlock with one)
    op.add_column("conversations", sa.Column("current_message_id", sa.Uuid(), nullable=True))
    op.add_column(
        "conversations",
        sa.Column("branched", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("messages", sa.Column("parent_id", sa.Uuid(), nullable=True))
    op.add_column("messages", sa.Column("fork", sa.Integer(), nullable=True))
    op.create_table(
        "conversation_paths",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("lo", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("hi", sa.Integer(), nullable=False),
        sa.CheckConstraint("lo >= 1 AND hi >= lo", name=op.f("ck_conversation_paths_range")),
        sa.ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            name=op.f("fk_conversation_paths_conversation_id_user_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "conversation_id", "lo", "user_id", name=op.f("pk_conversation_paths")
        ),
    )
    distribute_new_table(op.get_bind(), "conversation_paths")


def _batch(bind: Any, after: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """One batch of :data:`BATCH` conversations in primary-key order: each message not linked
    yet gets the one a seq before it as parent, each conversation its last message as current."""
    conversations = sa.table(
        "conversations",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.String()),
        sa.column("message_count", sa.Integer()),
        sa.column("current_message_id", sa.Uuid()),
    )
    messages = sa.table(
        "messages",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.String()),
        sa.column("conversation_id", sa.Uuid()),
        sa.column("seq", sa.Integer()),
        sa.column("parent_id", sa.Uuid()),
    )
    before = messages.alias("before")
    last = messages.alias("last")
    c = conversations.c
    query = sa.select(c.id, c.user_id).order_by(c.id, c.user_id).limit(BATCH)
    if after is not None:
        query = query.where(sa.tuple_(c.id, c.user_id) > sa.tuple_(*after))
    keys = [tuple(row) for row in bind.execute(query).all()]
    if not keys:
        return None
    pairs = [(user_id, id_) for id_, user_id in keys]
    bind.execute(
        sa.update(messages)
        .values(parent_id=before.c.id)
        .where(
            before.c.user_id == messages.c.user_id,
            before.c.conversation_id == messages.c.conversation_id,
            before.c.seq == messages.c.seq - 1,
            messages.c.parent_id.is_(None),
            sa.tuple_(messages.c.user_id, messages.c.conversation_id).in_(pairs),
        )
    )
    bind.execute(
        sa.update(conversations)
        .values(current_message_id=last.c.id)
        .where(
            last.c.user_id == c.user_id,
            last.c.conversation_id == c.id,
            last.c.seq == c.message_count,
            c.current_message_id.is_(None),
            sa.tuple_(c.user_id, c.id).in_(pairs),
        )
    )
    return keys[-1]


def downgrade() -> None:
    for name, _, _ in reversed(PARTIAL_INDEXES):
        op.drop_index(name, table_name="messages")
    op.drop_table("conversation_paths")
    op.drop_column("conversations", "branched")
    op.drop_column("conversations", "current_message_id")
    op.drop_column("messages", "fork")
    op.drop_column("messages", "parent_id")
