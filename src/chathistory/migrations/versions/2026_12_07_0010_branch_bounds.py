"""Branch work bounded by the request (SPEC 11): sibling numbers kept with the tree
(``children`` and ``sibling`` on messages, ``roots`` on conversations) and the table
``tool_call_sites`` (where each tool call was made).

A read of a branched conversation used to count each message's siblings (the children of its
parent) in the database, so a page with a message regenerated 10,000 times counted 10,000 rows.
The counts now live with the tree: a message some message forked from keeps its number of
children, a message that starts a run its place among them, a conversation with new first
messages their number; an append that forks updates one row, and a read takes the numbers
from the rows it reads (a message's parent is the one before it on its branch). A tool result
appended to a branched conversation used to walk the branch's tool turns back to its call; it
now looks the call id up in ``tool_call_sites`` (and among the results, by the index of
``messages.tool_call_id``).

The columns are NULL-able and the table is new, so adding them rewrites nothing (one short
transaction). Two backfills follow, one short transaction per batch, each batch computing
the same values again if it runs twice (so an interrupted backfill resumes): the branched
conversations a batch at a time in primary-key order (only the messages that start a run are
read), and the messages with tool calls, a window of :data:`WINDOW` message keys at a time in
primary-key order (an index-only range; only rows with tool calls come back), their sites
inserted with ``ON CONFLICT DO NOTHING``; expect a few seconds per million messages.
Downgrade drops the table and the columns: every value is derived from ``fork``, ``seq`` and
``tool_calls``, which stay.

Revision ID: 0010_branch_bounds
Revises: 0008_refusal_search
Create Date: 2026-12-07
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

from chathistory.migrations import online
from chathistory.migrations.citus import distribute_new_table

revision: str = "0010_branch_bounds"
down_revision: str | None = "0008_refusal_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 200  # branched conversations per backfill transaction
WINDOW = 5_000  # message keys per window of the tool call backfill

_CONVERSATIONS = sa.table(
    "conversations",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("branched", sa.Boolean()),
    sa.column("roots", sa.Integer()),
)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_MESSAGES = sa.table(
    "messages",
    sa.column("id", sa.Uuid()),
    sa.column("tool_calls", _JSON),
    sa.column("user_id", sa.String()),
    sa.column("conversation_id", sa.Uuid()),
    sa.column("seq", sa.Integer()),
    sa.column("fork", sa.Integer()),
    sa.column("children", sa.Integer()),
    sa.column("sibling", sa.Integer()),
)


def upgrade() -> None:
    bind = op.get_bind()
    online.ddl(
        bind,
        "add the sibling number columns",
        done=lambda: online.postgres(bind) and online.has_column(bind, "messages", "sibling"),
        apply=_create,
    )
    online.backfill(
        bind, "number the siblings of branched conversations", lambda a: _batch(bind, a)
    )
    online.backfill(bind, "record where tool calls were made", lambda a: _sites(bind, a))


def _create() -> None:
    op.add_column("conversations", sa.Column("roots", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("children", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("sibling", sa.Integer(), nullable=True))
    op.create_table(
        "tool_call_sites",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            name=op.f("fk_tool_call_sites_conversation_id_user_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "conversation_id", "call_id", "seq", "user_id", name=op.f("pk_tool_call_sites")
        ),
    )
    distribute_new_table(op.get_bind(), "tool_call_sites")


_SITES = sa.table(
    "tool_call_sites",
    sa.column("conversation_id", sa.Uuid()),
    sa.column("call_id", sa.Text()),
    sa.column("seq", sa.Integer()),
    sa.column("user_id", sa.String()),
)


def _sites(bind: Any, after: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """One window of :data:`WINDOW` message keys: the sites of the tool calls of its messages."""
    m = _MESSAGES.c
    keys = sa.select(m.id, m.user_id).order_by(m.id, m.user_id).limit(WINDOW)
    if after is not None:
        keys = keys.where(sa.tuple_(m.id, m.user_id) > sa.tuple_(*after))
    window = [tuple(row) for row in bind.execute(keys).all()]
    if not window:
        return None
    low, high = window[0], window[-1]
    found = bind.execute(
        sa.select(m.user_id, m.conversation_id, m.seq, m.tool_calls).where(
            sa.tuple_(m.id, m.user_id) >= sa.tuple_(*low),
            sa.tuple_(m.id, m.user_id) <= sa.tuple_(*high),
            m.tool_calls.is_not(None),
        )
    ).all()
    sites = [
        {"conversation_id": conv, "call_id": call["id"], "seq": seq, "user_id": user}
        for user, conv, seq, calls in found
        for call in calls or ()
        if isinstance(call, dict) and isinstance(call.get("id"), str)
    ]
    insert: Any = postgresql.insert if online.postgres(bind) else sqlite.insert
    sites.sort(key=lambda site: site["user_id"])
    for start in range(0, len(sites), 1000):  # far under the bound parameter limits
        bind.execute(insert(_SITES).on_conflict_do_nothing(), sites[start : start + 1000])
    return window[-1]


def _batch(bind: Any, after: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """One batch of :data:`BATCH` branched conversations: each parent some message forked from
    gets its child count, each message that starts a run its place, each conversation with new
    first messages their count."""
    c = _CONVERSATIONS.c
    m = _MESSAGES.c
    query = sa.select(c.id, c.user_id).where(c.branched).order_by(c.id, c.user_id).limit(BATCH)
    if after is not None:
        query = query.where(sa.tuple_(c.id, c.user_id) > sa.tuple_(*after))
    keys = [tuple(row) for row in bind.execute(query).all()]
    if not keys:
        return None
    for conversation_id, user_id in keys:
        owned = (m.conversation_id == conversation_id, m.user_id == user_id)
        forks = bind.execute(
            sa.select(m.seq, m.fork).where(*owned, m.fork.is_not(None)).order_by(m.seq)
        ).all()
        families: dict[int, list[int]] = defaultdict(list)
        for seq, fork in forks:
            families[int(fork)].append(int(seq))
        # a parent's child that goes straight on (the message after it, with no fork) is first
        nexts = {parent + 1 for parent in families if parent > 0}
        straight = (
            {
                int(seq) - 1
                for (seq,) in bind.execute(
                    sa.select(m.seq).where(*owned, m.seq.in_(nexts), m.fork.is_(None))
                ).all()
            }
            if nexts
            else set()
        )
        straight.add(0)  # the first message goes straight on from the root
        for parent, children in families.items():
            first = 1 if parent in straight else 0
            if parent > 0:
                bind.execute(
                    sa.update(_MESSAGES)
                    .where(*owned, m.seq == parent)
                    .values(children=first + len(children))
                )
            else:
                bind.execute(
                    sa.update(_CONVERSATIONS)
                    .where(c.id == conversation_id, c.user_id == user_id)
                    .values(roots=first + len(children))
                )
            bind.execute(
                sa.update(_MESSAGES)
                .where(*owned, m.seq == sa.bindparam("at"))
                .values(sibling=sa.bindparam("place")),
                [
                    {"at": seq, "place": place}
                    for place, seq in enumerate(children, start=first + 1)
                ],
            )
    return keys[-1]


def downgrade() -> None:
    op.drop_table("tool_call_sites")
    op.drop_column("messages", "sibling")
    op.drop_column("messages", "children")
    op.drop_column("conversations", "roots")
