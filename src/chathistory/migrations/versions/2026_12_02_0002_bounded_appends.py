"""Bounded appends: what an append checks no longer depends on the history's length.

- ``open_tool_calls``: the calls still awaiting a result, so that checking a tool result is a
  primary-key lookup instead of a scan of the conversation's history. Backfilled from the
  stored messages: for each (conversation, call id), the newest assistant message that called
  it, unless a tool message after it answered it.
- ``conversations.has_user_message``: whether the conversation ever had a user message (the
  first one titles an untitled conversation, later ones never do), instead of a search for an
  earlier user message. Backfilled from the stored messages.

The table and the column come first, in one short transaction (``ALTER TABLE ... ADD COLUMN``
with a constant default rewrites nothing). The backfill then walks the conversations in
primary-key order, :data:`BATCH` at a time, one short transaction each: the batch's open calls
are written again from its messages (read through the ``(conversation_id, seq)`` and
``(conversation_id, tool_call_id)`` indexes) and ``has_user_message`` set; a batch run twice
gives the same rows, so an interrupted upgrade resumes. Readers and writers go on throughout.

Revision ID: 0002_bounded_appends
Revises: 0001_initial
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from chathistory.migrations import online
from chathistory.migrations.citus import distribute_new_table

revision: str = "0002_bounded_appends"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500  # conversations per backfill transaction

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
    bind = op.get_bind()
    online.ddl(bind, "create open_tool_calls", done=lambda: _created(bind), apply=_create)
    online.backfill(bind, "backfill open calls and has_user_message", lambda a: _batch(bind, a))


def _created(bind: Any) -> bool:
    return online.postgres(bind) and online.has_table(bind, "open_tool_calls")


def _create() -> None:
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
    op.add_column(
        "conversations",
        sa.Column("has_user_message", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def _batch(bind: Any, after: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """One batch of :data:`BATCH` conversations in primary-key order: their open calls written
    again from their messages, and ``has_user_message`` set where a user message exists."""
    query = "SELECT id, user_id FROM conversations"
    if after is not None:
        query += " WHERE (id, user_id) > (:id, :user_id)"
    select = sa.text(query + f" ORDER BY id, user_id LIMIT {BATCH}").columns(
        id=sa.Uuid(), user_id=sa.String()
    )
    if after is not None:
        select = select.bindparams(
            sa.bindparam("id", after[0], type_=sa.Uuid()), sa.bindparam("user_id", after[1])
        )
    keys = [tuple(row) for row in bind.execute(select)]
    if not keys:
        return None
    ids = sa.bindparam("ids", [key[0] for key in keys], expanding=True, type_=sa.Uuid())
    bind.execute(
        sa.text("DELETE FROM open_tool_calls WHERE conversation_id IN :ids").bindparams(ids)
    )
    called = _CALLED[bind.dialect.name].replace(
        " GROUP BY", " AND m.conversation_id IN :ids GROUP BY"
    )
    bind.execute(
        sa.text(
            "INSERT INTO open_tool_calls (user_id, conversation_id, call_id, seq) " + called
        ).bindparams(ids)
    )
    bind.execute(
        sa.text(
            "DELETE FROM open_tool_calls WHERE EXISTS (SELECT 1 FROM messages AS t"
            " WHERE t.conversation_id = open_tool_calls.conversation_id"
            " AND t.user_id = open_tool_calls.user_id"
            " AND t.tool_call_id = open_tool_calls.call_id"
            " AND t.seq > open_tool_calls.seq) AND open_tool_calls.conversation_id IN :ids"
        ).bindparams(ids)
    )
    bind.execute(
        sa.text(
            "UPDATE conversations SET has_user_message = true WHERE NOT has_user_message"
            " AND EXISTS (SELECT 1 FROM messages AS m WHERE m.conversation_id = conversations.id"
            " AND m.user_id = conversations.user_id AND m.role = 'user')"
            " AND conversations.id IN :ids"
        ).bindparams(ids)
    )
    return keys[-1]


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN on both backends (SQLite 3.35+), never a batch rebuild:
    # on SQLite a rebuild drops the old ``conversations``, and with foreign keys on that
    # deletes every message, open call and branch path through their ON DELETE CASCADE (and
    # loses the DESC order of its index). Both are derived data: the upgrade fills them again.
    op.drop_column("conversations", "has_user_message")
    op.drop_table("open_tool_calls")
