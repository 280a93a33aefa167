"""Initial schema: conversations and messages.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chathistory.models import UTCDateTime

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "message_count >= 0", name=op.f("ck_conversations_message_count_nonnegative")
        ),
        sa.PrimaryKeyConstraint("id", "user_id", name=op.f("pk_conversations")),
    )
    op.create_index(
        "ix_conversations_user_id_updated_at_id",
        "conversations",
        ["user_id", sa.literal_column("updated_at").desc(), sa.literal_column("id").desc()],
        unique=False,
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", _json(), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("tool_calls", _json(), nullable=True),
        sa.Column("tool_call_id", sa.Text(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "role IN ('system', 'user', 'assistant', 'tool')", name=op.f("ck_messages_role")
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_messages_seq_positive")),
        sa.CheckConstraint(
            "(role = 'tool') = (tool_call_id IS NOT NULL)",
            name=op.f("ck_messages_tool_call_id_iff_tool"),
        ),
        sa.CheckConstraint(
            "tool_calls IS NULL OR role = 'assistant'",
            name=op.f("ck_messages_tool_calls_only_assistant"),
        ),
        sa.CheckConstraint(
            "content IS NOT NULL OR (role = 'assistant' AND tool_calls IS NOT NULL)",
            name=op.f("ck_messages_content_present"),
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            name=op.f("fk_messages_conversation_id_user_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", "user_id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "conversation_id",
            "seq",
            "user_id",
            name=op.f("uq_messages_conversation_id_seq_user_id"),
        ),
    )
    op.create_index(
        "ix_messages_conversation_id_tool_call_id",
        "messages",
        ["conversation_id", "tool_call_id"],
        unique=False,
        postgresql_where=sa.text("tool_call_id IS NOT NULL"),
        sqlite_where=sa.text("tool_call_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_conversation_id_tool_call_id", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_conversations_user_id_updated_at_id", table_name="conversations")
    op.drop_table("conversations")
