"""Message extras: an assistant message's refusal, annotations, audio and function_call, as
OpenAI's SDK returns them, stored whole (SPEC 13). A nullable column (no rewrite of existing
rows on PostgreSQL); the "content present" check also admits an assistant message that has only
extras (a refusal, an audio answer). SQLite rebuilds the table to change a check (batch mode).
PostgreSQL adds the column and the checks ``NOT VALID`` in one short transaction, then validates
each check in a transaction of its own (a scan under a lock that lets reads and writes go on).

Revision ID: 0003_message_extras
Revises: 0002_bounded_appends
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chathistory.migrations import online

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


_CHECKS = {
    "ck_messages_content_present": _NEW_PRESENT,
    "ck_messages_extras_only_assistant": "extras IS NULL OR role = 'assistant'",
}


def upgrade() -> None:
    bind = op.get_bind()
    if not online.postgres(bind):
        with op.batch_alter_table("messages") as batch:
            batch.add_column(sa.Column("extras", _json(), nullable=True))
            batch.drop_constraint(op.f("ck_messages_content_present"), type_="check")
            batch.create_check_constraint("content_present", _NEW_PRESENT)
            batch.create_check_constraint(
                "extras_only_assistant", "extras IS NULL OR role = 'assistant'"
            )
        return
    online.ddl(
        bind,
        "add messages.extras",
        done=lambda: online.has_column(bind, "messages", "extras"),
        apply=_add_extras,
    )
    for name in _CHECKS:
        online.transaction(bind, f"validate {name}", partial(op.execute, _validate(name)))


def _add_extras() -> None:
    op.add_column("messages", sa.Column("extras", _json(), nullable=True))
    op.execute("ALTER TABLE messages DROP CONSTRAINT ck_messages_content_present")
    for name, rule in _CHECKS.items():
        op.execute(f"ALTER TABLE messages ADD CONSTRAINT {name} CHECK ({rule}) NOT VALID")


def _validate(name: str) -> str:
    return f"ALTER TABLE messages VALIDATE CONSTRAINT {name}"


def downgrade() -> None:
    # The extras go (``chathistory db downgrade`` says how many messages hold some). A message
    # that holds nothing else (no content, no tool calls) would fail the old check: its content
    # becomes its refusal as a refusal part, or else an empty string; its row stays.
    # Two statements, no CASE: Citus takes only immutable functions in a multi-shard UPDATE.
    if op.get_bind().dialect.name == "postgresql":
        refusal = "extras -> 'refusal'"
        as_part = (
            f"""jsonb_set('[{{"type": "refusal", "refusal": ""}}]', '{{0,refusal}}', {refusal})"""
        )
        is_text, empty = f"jsonb_typeof({refusal}) = 'string'", """'""'::jsonb"""
    else:
        refusal = "json_extract(extras, '$.refusal')"
        as_part = (
            f"""json_set('[{{"type": "refusal", "refusal": ""}}]', '$[0].refusal', {refusal})"""
        )
        is_text, empty = "json_type(extras, '$.refusal') = 'text'", """'""'"""
    extras_only = "content IS NULL AND tool_calls IS NULL AND extras IS NOT NULL"
    op.execute(f"UPDATE messages SET content = {as_part} WHERE {extras_only} AND {is_text}")  # noqa: S608
    op.execute(f"UPDATE messages SET content = {empty} WHERE {extras_only}")  # noqa: S608
    # SQLite changes a CHECK only by rebuilding the table (batch mode; PostgreSQL alters it in
    # place). Nothing references ``messages`` at this revision (``message_search`` went with
    # 0004), so dropping the old table cascades nowhere; its indexes are created again.
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(op.f("ck_messages_extras_only_assistant"), type_="check")
        batch.drop_constraint(op.f("ck_messages_content_present"), type_="check")
        batch.create_check_constraint("content_present", _OLD_PRESENT)
        batch.drop_column("extras")
