"""Streaming turns (SPEC 10): ``status`` and ``updated_at`` on ``messages``.

``status`` is NOT NULL with a server default of ``completed``, so every stored message is
completed (PostgreSQL 11+ adds such a column without rewriting the table, and so does SQLite).
``updated_at`` is NULL until a message's first streaming update and reads as ``created_at``
until then: no backfill, no rewrite, however many messages there are.

The CHECKs (a known status; only an assistant message is ever not completed): on PostgreSQL
added ``NOT VALID`` with the columns in one short transaction, then validated each in a
transaction of its own, which scans the table under a lock that lets reads and writes go on; on SQLite written into the added column (SQLite checks existing rows as it adds
it). Citus propagates both statements to the shards.

Revision ID: 0006_streaming_turns
Revises: 0005_conversation_lifecycle
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from functools import partial

import sqlalchemy as sa
from alembic import op

from chathistory.migrations import online
from chathistory.models import STATUSES, UTCDateTime

revision: str = "0006_streaming_turns"
down_revision: str | None = "0005_conversation_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECKS = {
    "ck_messages_status": f"status IN {STATUSES!r}",
    "ck_messages_status_only_assistant": "status = 'completed' OR role = 'assistant'",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        checks = " ".join(f"CONSTRAINT {name} CHECK ({rule})" for name, rule in _CHECKS.items())
        op.execute(
            "ALTER TABLE messages ADD COLUMN status VARCHAR(16)"
            f" DEFAULT 'completed' NOT NULL {checks}"
        )
        op.add_column("messages", sa.Column("updated_at", UTCDateTime(), nullable=True))
        return
    bind = op.get_bind()
    online.ddl(
        bind,
        "add messages.status and messages.updated_at",
        done=lambda: online.has_column(bind, "messages", "status"),
        apply=_add_columns,
    )
    for name in _CHECKS:  # each its own transaction, after the ALTER TABLE's lock is gone
        online.transaction(
            bind,
            f"validate {name}",
            partial(op.execute, f"ALTER TABLE messages VALIDATE CONSTRAINT {name}"),
        )


def _add_columns() -> None:
    op.add_column(
        "messages",
        sa.Column("status", sa.String(16), server_default=sa.text("'completed'"), nullable=False),
    )
    for name, rule in _CHECKS.items():
        op.execute(f"ALTER TABLE messages ADD CONSTRAINT {name} CHECK ({rule}) NOT VALID")
    op.add_column("messages", sa.Column("updated_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN on both backends (SQLite 3.35+ drops a column whose CHECK names only
    # it; the status CHECKs go with it on PostgreSQL).
    op.drop_column("messages", "updated_at")
    if op.get_bind().dialect.name != "sqlite":
        for name in reversed(_CHECKS):
            op.execute(f"ALTER TABLE messages DROP CONSTRAINT {name}")
    op.drop_column("messages", "status")
