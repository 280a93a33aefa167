"""Items (SPEC 15): ``item`` and ``item_id`` on ``messages``, the role ``item``, and a unique
index of item ids per conversation.

``item`` holds an item exactly as it was given (JSONB on PostgreSQL; NULL for a message
appended the chat way), ``item_id`` its id (given, or made by the store). An item that is a chat
message too fills the chat columns as that message; an item with no chat form (reasoning, a
hosted tool call, compaction, a type the store does not know) is a row of role ``item`` with no
content, which every chat view leaves out. So the role CHECK admits ``item``, the
``content_present`` CHECK lets an ``item`` row go without content, and a new CHECK wants an
``item`` row to hold its item.

Both columns are NULL-able, so adding them rewrites nothing; nothing is backfilled. On
PostgreSQL the columns and the CHECKs (added ``NOT VALID``) go in one short transaction, each
CHECK is then validated in a transaction of its own (a scan under a lock that lets reads and
writes go on), and the unique index on ``(conversation_id, item_id, user_id) WHERE item_id IS
NOT NULL`` is built ``CONCURRENTLY`` (it carries ``user_id``, so Citus takes it as it is, and
propagates every statement to the shards). On SQLite the columns are added with ``ALTER TABLE``
and the two CHECKs are loosened in the table's stored definition (SQLite's documented
``PRAGMA writable_schema`` procedure for a change that no stored row can violate: no data is
moved, no table rebuilt, so the tables that reference ``messages`` stay as they are).

Downgrade keeps every row: an ``item`` row becomes an assistant message with empty content
(its seq and place in the tree stay), the columns, the index and the new CHECK go, the old
CHECKs come back (``chathistory.migrations.downgrading`` reports the items it loses first).

Revision ID: 0012_items
Revises: 0011_sqlite_search
Create Date: 2026-12-08
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from chathistory.migrations import online

revision: str = "0012_items"
down_revision: str | None = "0011_sqlite_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_messages_conversation_id_item_id_user_id"
_ITEM_PRESENT = ("ck_messages_item_present", "role <> 'item' OR item IS NOT NULL")
# name: (before, after)
_LOOSENED = {
    "ck_messages_role": (
        "role IN ('system', 'user', 'assistant', 'tool')",
        "role IN ('system', 'user', 'assistant', 'tool', 'item')",
    ),
    "ck_messages_content_present": (
        "content IS NOT NULL OR (role = 'assistant' AND "
        "(tool_calls IS NOT NULL OR extras IS NOT NULL))",
        "content IS NOT NULL OR role = 'item' OR (role = 'assistant' AND "
        "(tool_calls IS NOT NULL OR extras IS NOT NULL))",
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    if not online.postgres(bind):
        name, rule = _ITEM_PRESENT
        op.execute(f"ALTER TABLE messages ADD COLUMN item JSON CONSTRAINT {name} CHECK ({rule})")
        op.add_column("messages", sa.Column("item_id", sa.Text(), nullable=True))
        _rewrite_checks(bind, dict(_LOOSENED))
    else:
        online.ddl(
            bind,
            "add messages.item and messages.item_id",
            done=lambda: online.has_column(bind, "messages", "item_id"),
            apply=_add_columns,
        )
        for name in (*_LOOSENED, _ITEM_PRESENT[0]):
            online.transaction(
                bind,
                f"validate {name}",
                partial(op.execute, f"ALTER TABLE messages VALIDATE CONSTRAINT {name}"),
            )
    online.create_index(
        bind,
        INDEX,
        partial(
            op.create_index,
            INDEX,
            "messages",
            ["conversation_id", "item_id", "user_id"],
            unique=True,
            postgresql_where=sa.text("item_id IS NOT NULL"),
            sqlite_where=sa.text("item_id IS NOT NULL"),
            postgresql_concurrently=True,
        ),
    )


def _add_columns() -> None:
    op.add_column("messages", sa.Column("item", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("item_id", sa.Text(), nullable=True))
    for name, (_before, after) in _LOOSENED.items():
        op.execute(f"ALTER TABLE messages DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE messages ADD CONSTRAINT {name} CHECK ({after}) NOT VALID")
    name, rule = _ITEM_PRESENT
    op.execute(f"ALTER TABLE messages ADD CONSTRAINT {name} CHECK ({rule}) NOT VALID")


def _rewrite_checks(bind: Any, changes: dict[str, tuple[str, str]]) -> None:
    """Replace the rule of each named CHECK (``before`` by ``after``) in the stored definition
    of SQLite's ``messages`` table, by the ``writable_schema`` procedure of
    https://www.sqlite.org/lang_altertable.html#otheralter: the new rules admit every row the
    old ones did, so no stored row needs checking; the schema version is bumped so every
    connection reads the new definition."""
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
    ).scalar_one()
    for name, (before, after) in changes.items():
        old = f"CONSTRAINT {name} CHECK ({before})"
        if sql.count(old) != 1:
            raise RuntimeError(f"messages' {name} is not the one this migration knows: {sql}")
        sql = sql.replace(old, f"CONSTRAINT {name} CHECK ({after})")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text(
                "UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'messages'"
            ),
            {"sql": sql},
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")


_EMPTY = "'\"\"'"  # JSON "" (an empty string), as SQL text


def downgrade() -> None:
    bind = op.get_bind()
    postgres = online.postgres(bind)
    empty = f"{_EMPTY}::jsonb" if postgres else _EMPTY
    op.execute(
        f"UPDATE messages SET role = 'assistant', content = {empty} WHERE role = 'item'"  # noqa: S608 - constant text
    )
    op.drop_index(INDEX, table_name="messages")
    if postgres:
        op.execute(f"ALTER TABLE messages DROP CONSTRAINT {_ITEM_PRESENT[0]}")
        for name, (before, _after) in _LOOSENED.items():
            op.execute(f"ALTER TABLE messages DROP CONSTRAINT {name}")
            op.execute(f"ALTER TABLE messages ADD CONSTRAINT {name} CHECK ({before})")
    else:
        _rewrite_checks(
            bind, {name: (after, before) for name, (before, after) in _LOOSENED.items()}
        )
    op.drop_column("messages", "item_id")
    op.drop_column("messages", "item")
