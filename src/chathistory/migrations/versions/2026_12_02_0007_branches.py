"""Branches (SPEC 11): ``parent_id`` and ``fork`` on messages, ``current_message_id`` and
``branched`` on conversations, the table ``conversation_paths`` (a branched conversation's
active branch, one row per run), and three partial indexes.

Every stored conversation is one chain, so each message's parent is the message one seq
before it (the first has none), no message starts a run (``fork`` NULL), the current message
is the last one, ``branched`` is false and ``conversation_paths`` holds nothing (the active
branch is every message in seq order).
The backfill sets ``parent_id`` and ``current_message_id`` a batch of conversations at a time
(``UPDATE ... FROM`` joining each message to the one before it on ``(conversation_id,
user_id, seq)``, the unique index), each batch its own statement; expect about a minute per
ten million messages on PostgreSQL. The new columns are NULL-able or have a constant default,
so adding them rewrites nothing; the partial indexes hold only messages that start a run (none
yet) and tool turns. Citus propagates the ALTER TABLEs and indexes (the joins are on the
distribution column) and the new table is distributed like the others.

Revision ID: 0007_branches
Revises: 0006_streaming_turns
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from chathistory.migrations.citus import distribute_new_table
from chathistory.models import PARTIAL_INDEXES

revision: str = "0007_branches"
down_revision: str | None = "0006_streaming_turns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500  # conversations per backfill statement


def upgrade() -> None:
    op.add_column("messages", sa.Column("parent_id", sa.Uuid(), nullable=True))
    op.add_column("messages", sa.Column("fork", sa.Integer(), nullable=True))
    op.add_column("conversations", sa.Column("current_message_id", sa.Uuid(), nullable=True))
    op.add_column(
        "conversations",
        sa.Column("branched", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
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
    _backfill(op.get_bind())
    for name, column, where in PARTIAL_INDEXES:
        op.create_index(
            name,
            "messages",
            ["conversation_id", column],
            unique=False,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def _backfill(bind: Any) -> None:
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
    after: tuple[Any, Any] | None = None
    while True:
        query = (
            sa.select(conversations.c.user_id, conversations.c.id)
            .where(conversations.c.message_count > 0)
            .order_by(conversations.c.user_id, conversations.c.id)
            .limit(BATCH)
        )
        if after is not None:
            query = query.where(
                sa.tuple_(conversations.c.user_id, conversations.c.id) > sa.tuple_(*after)
            )
        keys = [tuple(row) for row in bind.execute(query).all()]
        if not keys:
            return
        bind.execute(
            sa.update(messages)
            .values(parent_id=before.c.id)
            .where(
                before.c.user_id == messages.c.user_id,
                before.c.conversation_id == messages.c.conversation_id,
                before.c.seq == messages.c.seq - 1,
                sa.tuple_(messages.c.user_id, messages.c.conversation_id).in_(keys),
            )
        )
        bind.execute(
            sa.update(conversations)
            .values(current_message_id=last.c.id)
            .where(
                last.c.user_id == conversations.c.user_id,
                last.c.conversation_id == conversations.c.id,
                last.c.seq == conversations.c.message_count,
                sa.tuple_(conversations.c.user_id, conversations.c.id).in_(keys),
            )
        )
        after = keys[-1]


def downgrade() -> None:
    for name, _, _ in reversed(PARTIAL_INDEXES):
        op.drop_index(name, table_name="messages")
    op.drop_table("conversation_paths")
    op.drop_column("conversations", "branched")
    op.drop_column("conversations", "current_message_id")
    op.drop_column("messages", "fork")
    op.drop_column("messages", "parent_id")
