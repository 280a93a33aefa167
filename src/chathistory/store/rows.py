"""Rows to read models and back, and the small rules every room shares (limits, parsing, the
forward-only ``updated_at``). No database access here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import pydantic
from sqlalchemy import ColumnElement, case, literal

from chathistory.errors import ValidationError
from chathistory.models import conversations, messages
from chathistory.schemas import ConversationRead, MessageCreate, MessageRead, from_pydantic

C = conversations.c
M = messages.c
MAX_PAGE: Final = 100

CONVERSATION_COLUMNS: Final = (
    C.id,
    C.user_id,
    C.title,
    C.metadata,
    C.created_at,
    C.updated_at,
    C.message_count,
)
WINDOW_COLUMNS: Final = (
    M.seq,
    M.role,
    M.content,
    M.name,
    M.tool_calls,
    M.tool_call_id,
    M.token_count,
)


def parse(model: type[pydantic.BaseModel], data: Any) -> Any:
    """``data`` as ``model``, or a :class:`ValidationError` naming each bad field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc) from None


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"must be an integer from 1 to {MAX_PAGE}", loc=("limit",))


def forward(now: datetime) -> ColumnElement[Any]:
    """``updated_at`` never moves back, whatever the clocks of several app servers say."""
    stamp = literal(now, C.updated_at.type)
    return case((C.updated_at < stamp, stamp), else_=C.updated_at)


def conversation(row: Mapping[Any, Any]) -> ConversationRead:
    return ConversationRead.model_construct(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
    )


def message(row: Mapping[Any, Any]) -> MessageRead:
    return MessageRead.model_construct(
        id=row["id"],
        conversation_id=row["conversation_id"],
        user_id=row["user_id"],
        seq=row["seq"],
        role=row["role"],
        content=row["content"],
        name=row["name"],
        tool_calls=row["tool_calls"],
        tool_call_id=row["tool_call_id"],
        metadata=row["metadata"],
        token_count=row["token_count"],
        created_at=row["created_at"],
    )


def same_message(given: MessageCreate, stored: MessageRead, conversation_id: Any) -> bool:
    """Whether an append of ``given`` replays ``stored`` (idempotency)."""
    return (
        stored.conversation_id == conversation_id
        and stored.role == given.role
        and stored.content == given.content
        and stored.name == given.name
        and stored.tool_calls == given.stored_tool_calls()
        and stored.tool_call_id == given.tool_call_id
        and stored.metadata == given.metadata
    )
