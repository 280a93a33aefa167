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
from chathistory.schemas import (
    EXTRAS,
    ConversationRead,
    MessageCreate,
    MessageRead,
    from_pydantic,
)

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
    C.archived,
    C.pinned,
    C.expires_at,
    C.current_message_id,
)
WINDOW_COLUMNS: Final = (
    M.extras,
    M.status,
    M.updated_at,
    M.created_at,
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


CONVERSATION_FIELDS: Final = frozenset(ConversationRead.model_fields)
MESSAGE_FIELDS: Final = frozenset(MessageRead.model_fields)
new = object.__new__
# A pydantic model's four slots, set through their own descriptors: what object.__setattr__
# ends up calling, without looking each name up on the class first (a sixth of a row's build).
# The record builders of PostgreSQL's hot reads use them too (dialects/postgresql/records.py).
_slots = pydantic.BaseModel.__dict__
set_dict: Final = _slots["__dict__"].__set__
set_fields: Final = _slots["__pydantic_fields_set__"].__set__
set_extra: Final = _slots["__pydantic_extra__"].__set__
set_private: Final = _slots["__pydantic_private__"].__set__


def conversation(row: Mapping[Any, Any]) -> ConversationRead:
    """A read model of a stored row, built without validation (the row is the store's own):
    what ``model_construct`` does, without its per-field loop (a fifth of its cost, which
    counts on the hot reads)."""
    model = new(ConversationRead)
    width = len(row) == _CONVERSATION_WIDTH
    data = dict(row) if width else {n: row[n] for n in CONVERSATION_NAMES}
    data["object"] = "conversation"
    set_dict(model, data)
    set_fields(model, CONVERSATION_FIELDS)
    set_extra(model, None)
    set_private(model, None)
    return model


def settled(status: str, updated_at: datetime, stale_before: datetime | None) -> str:
    """A message's status as every read returns it: an ``in_progress`` message not updated
    since ``stale_before`` (now less the stream timeout, SPEC 10) reads as ``incomplete``."""
    if status == "in_progress" and stale_before is not None and updated_at < stale_before:
        return "incomplete"
    return status


def message(row: Mapping[Any, Any], stale_before: datetime | None) -> MessageRead:
    """A read model of a stored message row (see :func:`conversation`), its status settled
    at ``stale_before`` (:func:`settled`; ``None`` for rows just written)."""
    model = new(MessageRead)
    data = {name: row[name] for name in STORED_NAMES}
    if data["updated_at"] is None:  # never updated: NULL reads as created_at
        data["updated_at"] = data["created_at"]
    if data["status"] != "completed":
        data["status"] = settled(data["status"], data["updated_at"], stale_before)
    data["sibling_count"] = data["sibling_index"] = 1
    extras = row["extras"] or _NONE
    data.update(
        object="message",
        refusal=extras.get("refusal"),
        annotations=extras.get("annotations"),
        audio=extras.get("audio"),
        function_call=extras.get("function_call"),
    )
    set_dict(model, data)
    set_fields(model, MESSAGE_FIELDS)
    set_extra(model, None)
    set_private(model, None)
    return model


# The stored columns: every field but ``object``, which is a constant.
CONVERSATION_NAMES: Final = tuple(f for f in ConversationRead.model_fields if f != "object")
_CONVERSATION_WIDTH: Final = len(CONVERSATION_NAMES)
# A message row's columns, but ``extras`` (refusal, annotations, audio, function_call) and the
# sibling numbers (counted for branched conversations, SPEC 11: :func:`numbered`).
_SIBLINGS: Final = ("sibling_count", "sibling_index")
STORED_NAMES: Final = tuple(
    f for f in MessageRead.model_fields if f not in ("object", *_SIBLINGS, *EXTRAS)
)
_NONE: Final[Mapping[str, Any]] = {}


def numbered(model: MessageRead, count: int, index: int) -> None:
    """Set a read message's sibling numbers (it is the store's own, not yet handed out)."""
    model.__dict__["sibling_count"] = count
    model.__dict__["sibling_index"] = index


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
        and stored.status == given.status
        and ("parent_id" not in given.model_fields_set or stored.parent_id == given.parent_id)
        and (given.stored_extras() or {})
        == {k: v for k in EXTRAS if (v := getattr(stored, k)) is not None}
    )
