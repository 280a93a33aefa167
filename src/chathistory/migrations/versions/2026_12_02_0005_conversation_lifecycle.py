"""Conversation lifecycle (SPEC 9): ``archived``, ``pinned`` and ``expires_at``.

Three columns on ``conversations`` (no new table, so nothing Citus-specific: Citus propagates
ALTER TABLE and CREATE INDEX to the shards). The booleans are NOT NULL with a server default of
false, so existing rows are neither archived nor pinned (PostgreSQL 11+ adds such a column
without rewriting the table). The indexes keep every filtered listing keyset-paged on an index
range, each starting with ``user_id``; a partial index finds the expired conversations to purge.
On PostgreSQL the columns come in one short transaction and each index is built with
``CREATE INDEX CONCURRENTLY``: readers and writers go on.

Revision ID: 0005_conversation_lifecycle
Revises: 0004_message_search
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from functools import partial

import sqlalchemy as sa
from alembic import op

from chathistory.migrations import online
from chathistory.models import UTCDateTime

revision: str = "0005_conversation_lifecycle"
down_revision: str | None = "0004_message_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LISTINGS = {
    "ix_conversations_user_id_archived_updated_at_id": ["archived"],
    "ix_conversations_user_id_pinned_updated_at_id": ["pinned"],
    "ix_conversations_user_id_archived_pinned_updated_at_id": ["archived", "pinned"],
}


def upgrade() -> None:
    bind = op.get_bind()
    online.ddl(
        bind,
        "add the lifecycle columns",
        done=lambda: online.postgres(bind) and online.has_column(bind, "conversations", "pinned"),
        apply=_add_columns,
    )
    for name, flags in _LISTINGS.items():
        online.create_index(
            bind,
            name,
            partial(
                op.create_index,
                name,
                "conversations",
                [
                    "user_id",
                    *flags,
                    sa.literal_column("updated_at").desc(),
                    sa.literal_column("id").desc(),
                ],
                unique=False,
                postgresql_concurrently=True,
            ),
        )
    online.create_index(
        bind,
        "ix_conversations_user_id_expires_at",
        lambda: op.create_index(
            "ix_conversations_user_id_expires_at",
            "conversations",
            ["user_id", "expires_at"],
            unique=False,
            postgresql_where=sa.text("expires_at IS NOT NULL"),
            sqlite_where=sa.text("expires_at IS NOT NULL"),
            postgresql_concurrently=True,
        ),
    )


def _add_columns() -> None:
    op.add_column(
        "conversations",
        sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "conversations",
        sa.Column("pinned", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("conversations", sa.Column("expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_conversations_user_id_expires_at", table_name="conversations")
    for name in reversed(_LISTINGS):
        op.drop_index(name, table_name="conversations")
    # Plain ALTER TABLE ... DROP COLUMN on both backends (SQLite 3.35+): no table rebuild, so
    # the messages that reference the conversations stay as they are.
    for column in ("expires_at", "pinned", "archived"):
        op.drop_column("conversations", column)
