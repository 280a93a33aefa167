"""Table models: ``conversations``, ``messages``, ``open_tool_calls`` and ``message_search`` on
the package's own MetaData.

Every table carries ``user_id``; every primary, unique and foreign key includes it, so the schema
can be distributed by ``user_id`` on Citus unchanged (and one user's ids never collide with, or
reveal, another user's).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

ROLES = ("system", "user", "assistant", "tool")
# The role of a row holding an item with no chat form (SPEC 15): no chat view reads it.
ITEM_ROLE = "item"
STATUSES = ("completed", "in_progress", "incomplete")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Branches (SPEC 11) read the few messages that start a run of the tree (``fork`` set): by seq
# (the run holding a message), by fork (a message's other children); tool pairing along a
# branch walks its tool turns by seq. Partial: other messages are not in them.
PARTIAL_INDEXES = (
    ("ix_messages_conversation_id_seq_forks", "seq", "fork IS NOT NULL"),
    ("ix_messages_conversation_id_fork", "fork", "fork IS NOT NULL"),
    (
        "ix_messages_conversation_id_seq_tool_turns",
        "seq",
        "tool_calls IS NOT NULL OR tool_call_id IS NOT NULL",
    ),
)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    value = (ms & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (rand >> 68 << 64)
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite a sortable UTC text. Always returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> Any:
    """JSON on SQLite, JSONB on PostgreSQL; Python ``None`` is SQL NULL (not JSON ``null``)."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(SQLModel, registry=registry(metadata=metadata)):
    pass


class Conversation(Base, table=True):
    __tablename__ = "conversations"
    __table_args__ = (CheckConstraint("message_count >= 0", name="message_count_nonnegative"),)

    id: uuid.UUID = Field(primary_key=True)
    user_id: str = Field(sa_column_kwargs={"primary_key": True}, max_length=255)
    title: str | None = Field(default=None, sa_type=String(255), nullable=True)
    metadata_: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", json_type(), nullable=False)
    )
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    message_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # Whether it ever had a user message: the first one titles an untitled conversation.
    has_user_message: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    # The lifecycle (SPEC 9): archived and pinned sections, and an instant from which the
    # conversation is gone for every call (the purge deletes it).
    archived: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    pinned: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    # Branches (SPEC 11): the last message of the active branch; whether it ever branched
    # (until then the active branch is every message in seq order, and ``conversation_paths``
    # holds nothing for it).
    current_message_id: uuid.UUID | None = Field(default=None, nullable=True)
    branched: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    # How many first messages it has, once a new one was added (NULL: one at most).
    roots: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))


class Message(Base, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            ondelete="CASCADE",
        ),
        # (conversation_id, seq) is unique; user_id rides along because Citus wants the
        # distribution column in every unique key. conversation_id fixes user_id, so the
        # constraint is the same, and the index serves every per-conversation range scan.
        UniqueConstraint("conversation_id", "seq", "user_id"),
        CheckConstraint("role IN ('system', 'user', 'assistant', 'tool', 'item')", name="role"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint(
            "(role = 'tool') = (tool_call_id IS NOT NULL)", name="tool_call_id_iff_tool"
        ),
        CheckConstraint(
            "tool_calls IS NULL OR role = 'assistant'", name="tool_calls_only_assistant"
        ),
        CheckConstraint(
            "content IS NOT NULL OR role = 'item' OR (role = 'assistant' AND "
            "(tool_calls IS NOT NULL OR extras IS NOT NULL))",
            name="content_present",
        ),
        CheckConstraint("extras IS NULL OR role = 'assistant'", name="extras_only_assistant"),
        CheckConstraint("role <> 'item' OR item IS NOT NULL", name="item_present"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        CheckConstraint("status = 'completed' OR role = 'assistant'", name="status_only_assistant"),
        # Serves "has this tool call been answered yet?" when a tool result is appended.
        Index(
            "ix_messages_conversation_id_tool_call_id",
            "conversation_id",
            "tool_call_id",
            postgresql_where=text("tool_call_id IS NOT NULL"),
            sqlite_where=text("tool_call_id IS NOT NULL"),
        ),
        # An item's id finds it (SPEC 15): unique in its conversation.
        Index(
            "ix_messages_conversation_id_item_id_user_id",
            "conversation_id",
            "item_id",
            "user_id",
            unique=True,
            postgresql_where=text("item_id IS NOT NULL"),
            sqlite_where=text("item_id IS NOT NULL"),
        ),
        *(
            Index(
                name,
                "conversation_id",
                column,
                postgresql_where=text(where),
                sqlite_where=text(where),
            )
            for name, column, where in PARTIAL_INDEXES
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    user_id: str = Field(sa_column_kwargs={"primary_key": True}, max_length=255)
    conversation_id: uuid.UUID = Field(nullable=False)
    seq: int = Field(sa_column=Column(Integer, nullable=False))
    role: str = Field(sa_type=String(16), nullable=False)
    content: Any = Field(default=None, sa_column=Column(json_type(), nullable=True))
    name: str | None = Field(default=None, sa_type=String(64), nullable=True)
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(json_type(), nullable=True)
    )
    tool_call_id: str | None = Field(default=None, sa_type=Text, nullable=True)
    metadata_: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", json_type(), nullable=False)
    )
    token_count: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # An assistant message's refusal, annotations, audio and function_call, as OpenAI returns
    # them (SPEC 13); NULL when it has none.
    extras: dict[str, Any] | None = Field(
        default=None, sa_column=Column(json_type(), nullable=True)
    )
    # Streaming turns (SPEC 10): an assistant message stored while it streams is in_progress
    # until an update finishes it. updated_at is NULL until the first update (it then reads as
    # created_at), so migration 0006 adds both columns without rewriting the table.
    status: str = Field(
        default="completed",
        sa_column=Column(String(16), nullable=False, server_default=text("'completed'")),
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    # Branches (SPEC 11): the message this one follows (NULL for a first message), and for a
    # message that starts a run — its parent is not the message one seq before — the parent's
    # seq (0 for a new first message); NULL for every other message.
    parent_id: uuid.UUID | None = Field(default=None, nullable=True)
    fork: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # Sibling numbers kept with the tree (migration 0010), so a read takes them from the rows
    # it reads instead of counting: ``children``, the number of children of a message some
    # message forked from (NULL: none did, so it has at most the one that goes straight on);
    # ``sibling``, the 1-based place of a message that starts a run among its parent's
    # children (NULL: 1, the child that goes straight on is always the first).
    children: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    sibling: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # Items (SPEC 15): the item exactly as given (NULL for a message appended the chat way) and
    # its id, given or made by the store. An item with no chat form has role ``item``.
    item: dict[str, Any] | None = Field(default=None, sa_column=Column(json_type(), nullable=True))
    item_id: str | None = Field(default=None, sa_type=Text, nullable=True)


class OpenToolCall(Base, table=True):
    """A tool call still awaiting its result: the newest assistant message of the conversation
    that called ``call_id`` (its ``seq``), until a tool message answers it.

    The append path checks a batch of tool results against this table with one statement of
    primary-key lookups, however long the history is; a result deletes its row, and an
    assistant message that reuses an id makes the row point at it.
    """

    __tablename__ = "open_tool_calls"
    __table_args__ = (
        ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            ondelete="CASCADE",
        ),
    )

    conversation_id: uuid.UUID = Field(primary_key=True)
    call_id: str = Field(sa_column_kwargs={"primary_key": True}, sa_type=Text)
    user_id: str = Field(sa_column_kwargs={"primary_key": True}, max_length=255)
    seq: int = Field(sa_column=Column(Integer, nullable=False))


class ToolCallSite(Base, table=True):
    """Where a tool call was made: the seq of each assistant message that called ``call_id``
    (every one, on every branch). A tool result appended to a branched conversation is checked
    by looking its call id up here and among the tool results (an index of
    ``messages.tool_call_id``), instead of walking the branch's tool turns (store/tool_sites.py).
    """

    __tablename__ = "tool_call_sites"
    __table_args__ = (
        ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            ondelete="CASCADE",
        ),
    )

    conversation_id: uuid.UUID = Field(primary_key=True)
    call_id: str = Field(sa_column_kwargs={"primary_key": True}, sa_type=Text)
    seq: int = Field(sa_column=Column(Integer, primary_key=True))
    user_id: str = Field(sa_column_kwargs={"primary_key": True}, max_length=255)


class ConversationPath(Base, table=True):
    """The active branch of a branched conversation (SPEC 11) as the seq ranges it runs
    through, one row per run (store/branches.py): a read takes the rows it needs, an append
    changes one, a switch the few where the branches part."""

    __tablename__ = "conversation_paths"
    __table_args__ = (
        ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            ondelete="CASCADE",
        ),
        CheckConstraint("lo >= 1 AND hi >= lo", name="range"),
    )

    conversation_id: uuid.UUID = Field(primary_key=True)
    lo: int = Field(sa_column_kwargs={"primary_key": True}, sa_type=Integer)
    user_id: str = Field(sa_column_kwargs={"primary_key": True}, max_length=255)
    hi: int = Field(sa_column=Column(Integer, nullable=False))


class MessageSearch(Base, table=True):
    """What search finds of a message (SPEC 8): its words, written with the message in the same
    transaction; a message with no searchable text has no row. This is PostgreSQL's shape
    (``words`` a ``tsvector``; GIN over ``(user_id, words)`` with ``btree_gin``). SQLite keeps
    the same columns in a table of its own shape with an FTS5 index over ``words`` (migration
    0004), outside these models."""

    __tablename__ = "message_search"
    __table_args__ = (
        ForeignKeyConstraint(
            ["message_id", "user_id"], ["messages.id", "messages.user_id"], ondelete="CASCADE"
        ),
        # Hits come newest first: the common word's plan walks this backwards.
        Index(
            "ix_message_search_user_id_created_at_message_id", "user_id", "created_at", "message_id"
        ),
        # The rare word's plan: the user's messages holding the words.
        Index("ix_message_search_user_id_words", "user_id", "words", postgresql_using="gin"),
    )

    message_id: uuid.UUID = Field(primary_key=True)
    user_id: str = Field(sa_column_kwargs={"primary_key": True}, max_length=255)
    conversation_id: uuid.UUID = Field(nullable=False)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    words: str = Field(
        sa_column=Column(Text().with_variant(TSVECTOR(), "postgresql"), nullable=False)
    )


conversations = Conversation.__table__  # type: ignore[attr-defined]
conversation_paths = ConversationPath.__table__  # type: ignore[attr-defined]
message_search = MessageSearch.__table__  # type: ignore[attr-defined]
open_tool_calls = OpenToolCall.__table__  # type: ignore[attr-defined]
tool_call_sites = ToolCallSite.__table__  # type: ignore[attr-defined]

# The listing order: a user's conversations, most recently updated first (keyset pagination).
Index(
    "ix_conversations_user_id_updated_at_id",
    conversations.c.user_id,
    conversations.c.updated_at.desc(),
    conversations.c.id.desc(),
)
# The filtered listings (SPEC 9), each keyset-paged on its own index: archived or not,
# pinned or not, and both (the UI's pinned section and the rest).
_C = conversations.c
for _flags in (("archived",), ("pinned",), ("archived", "pinned")):
    Index(
        f"ix_conversations_user_id_{'_'.join(_flags)}_updated_at_id",
        _C.user_id,
        *(_C[flag] for flag in _flags),
        _C.updated_at.desc(),
        _C.id.desc(),
    )
# The purge's expired conversations: few rows (only those with an expiry).
Index(
    "ix_conversations_user_id_expires_at",
    _C.user_id,
    _C.expires_at,
    postgresql_where=text("expires_at IS NOT NULL"),
    sqlite_where=text("expires_at IS NOT NULL"),
)
messages = Message.__table__  # type: ignore[attr-defined]

__all__ = [
    "ITEM_ROLE",
    "ROLES",
    "STATUSES",
    "Conversation",
    "ConversationPath",
    "Message",
    "MessageSearch",
    "OpenToolCall",
    "ToolCallSite",
    "conversation_paths",
    "conversations",
    "message_search",
    "messages",
    "metadata",
    "open_tool_calls",
    "tool_call_sites",
    "utcnow",
    "uuid7",
]
