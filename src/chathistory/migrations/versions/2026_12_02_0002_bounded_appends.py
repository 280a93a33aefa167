"""Bounded appends: what an append checks no longer depends on the history's length.

- ``open_tool_calls``: the calls still awaiting a result, so that checking a tool result is a
  primary-key lookup instead of a scan of the conversation's history. Backfilled from the
  stored messages: for each (conversation, call id), the newest assistant message that called
  it, unless a tool message after it answered it.
- ``conversations.has_user_message``: whether the conversation ever had a user message (the
  first one titles an untitled conversation, later ones never do), instead of a search for an
  earlier user message. Backfilled from the stored messages.

The backfills are three statements over the whole tables; on large tables run
``chathistory db upgrade`` in a maintenance window (they read every assistant message with tool
calls and every user message once, and the answers through the
``(conversation_id, tool_call_id)`` index).

Revision ID: 0002_bounded_appends
Revises: 0001_initial
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chathistory.migrations.citus import distribute_new_table

revision: str = "0002_bounded_appends"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CALLED = {
    "postgresql": (
        "SELECT m.user_id, m.conversation_id, call.value ->> 'id' AS call_id, max(m.seq) AS seq"
        " FROM messages AS m, jsonb_array_elements(m.tool_calls) AS call"
        " WHERE m.tool_calls IS NOT NULL"
        " GROUP BY m.user_id, m.conversation_id, call.value ->> 'id'"
    ),
    "sqlite": (
        "SELECT m.user_id, m.conversation_id, json_extract(call.value, '$.id') AS call_id,"
        " max(m.seq) AS seq"
        " FROM messages AS m, json_each(m.tool_calls) AS call"
        " WHERE m.tool_calls IS NOT NULL"
        " GROUP BY m.user_id, m.conversation_id, json_extract(call.value, '$.id')"
    ),
}


def upgrade() -> None:
    op.create_table(
        "open_tool_calls",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            name=op.f("fk_open_tool_calls_conversation_id_user_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "conversation_id", "call_id", "user_id", name=op.f("pk_open_tool_calls")
        ),
    )
    distribute_new_table(op.get_bind(), "open_tool_calls")  # on Citus, like the others
    called = _CALLED[op.get_bind().dialect.name]
    op.execute("INSERT INTO open_tool_calls (user_id, conversation_id, call_id, seq) " + called)
    op.execute(
        "DELETE FROM open_tool_calls WHERE EXISTS (SELECT 1 FROM messages AS t"
        " WHERE t.conversation_id = open_tool_calls.conversation_id"
        " AND t.user_id = open_tool_calls.user_id"
        " AND t.tool_call_id = open_tool_calls.call_id"
        " AND t.seq > open_tool_calls.seq)"
    )

    op.add_column(
        "conversations",
        sa.Column("has_user_message", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.execute(
        "UPDATE conversations SET has_user_message = true WHERE EXISTS (SELECT 1 FROM messages"
        " AS m WHERE m.conversation_id = conversations.id AND m.user_id = conversations.user_id"
        " AND m.role = 'user')"
    )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("has_user_message")
    op.drop_table("open_tool_calls")
