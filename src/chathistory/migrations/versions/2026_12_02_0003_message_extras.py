"""Message extras: an assistant message's refusal, annotations, audio and function_call, as
OpenAI's SDK returns them, stored whole (SPEC 13). A nullable column (no rewrite of existing
rows on PostgreSQL); the "content present" check also admits an assistant message that has only
extras (a refusal, an audio answer). SQLite rebuilds the table to change a check (batch mode).

Revision ID: 0003_message_extras
Revises: 0002_bounded_appends
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_message_extras"
down_revision: str | None = "0002_bounded_appends"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_PRESENT = "content IS NOT NULL OR (role = 'assistant' AND tool_calls IS NOT NULL)"
_NEW_PRESENT = (
    "content IS NOT NULL OR (role = 'assistant' AND (tool_calls IS NOT NULL OR extras IS NOT NULL))"
)


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("extras", _json(), nullable=True))
        batch.drop_constraint(op.f("ck_messages_content_present"), type_="check")
        batch.create_check_constraint("content_present", _NEW_PRESENT)
        batch.create_check_constraint(
            "extras_only_assistant", "extras IS NULL OR role = 'assistant'"
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(op.f("ck_messages_extras_only_assistant"), type_="check")
        batch.drop_constraint(op.f("ck_messages_content_present"), type_="check")
        batch.create_check_constraint("content_present", _OLD_PRESENT)
        batch.drop_column("extras")
