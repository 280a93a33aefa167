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
from chathistory.store import sql

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


_CONVERSATION_FIELDS: Final = frozenset(ConversationRead.model_fields)
_MESSAGE_FIELDS: Final = frozenset(MessageRead.model_fields)
_new = object.__new__
# A pydantic model's four slots, set through their own descriptors: what object.__setattr__
# ends up calling, without looking each name up on the class first (a sixth of a row's build).
_slots = pydantic.BaseModel.__dict__
_set_dict: Final = _slots["__dict__"].__set__
_set_fields: Final = _slots["__pydantic_fields_set__"].__set__
_set_extra: Final = _slots["__pydantic_extra__"].__set__
_set_private: Final = _slots["__pydantic_private__"].__set__


def conversation(row: Mapping[Any, Any]) -> ConversationRead:
    """A read model of a stored row, built without validation (the row is the store's own):
    what ``model_construct`` does, without its per-field loop (a fifth of its cost, which
    counts on the hot reads)."""
    model = _new(ConversationRead)
    width = len(row) == _CONVERSATION_WIDTH
    data = dict(row) if width else {n: row[n] for n in _CONVERSATION_NAMES}
    data["object"] = "conversation"
    _set_dict(model, data)
    _set_fields(model, _CONVERSATION_FIELDS)
    _set_extra(model, None)
    _set_private(model, None)
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
    model = _new(MessageRead)
    data = {name: row[name] for name in _STORED_NAMES}
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
    _set_dict(model, data)
    _set_fields(model, _MESSAGE_FIELDS)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def message_record(record: Any, stale_before: datetime | None) -> MessageRead:
    """:func:`message` of a row of :data:`sql.MESSAGE_COLUMNS` as asyncpg returns it (a trailing
    ``size`` column is left out): its values are in the read model's order (checked below), so
    they are unpacked and go into a dict display, built at its size in one step, instead of
    being looked up one name at a time (half the cost, which counts on the hot reads)."""
    (
        id,
        conversation_id,
        user_id,
        seq,
        role,
        content,
        name,
        tool_calls,
        tool_call_id,
        metadata,
        token_count,
        created_at,
        status,
        updated_at,
        parent_id,
        extras,
    ) = record[:_MESSAGE_WIDTH]
    if updated_at is None:
        updated_at = created_at
    if status != "completed":
        status = settled(status, updated_at, stale_before)
    data = {
        "id": id,
        "conversation_id": conversation_id,
        "user_id": user_id,
        "seq": seq,
        "role": role,
        "content": content,
        "name": name,
        "tool_calls": tool_calls,
        "tool_call_id": tool_call_id,
        "metadata": metadata,
        "token_count": token_count,
        "created_at": created_at,
        "status": status,
        "updated_at": updated_at,
        "parent_id": parent_id,
        "sibling_count": 1,
        "sibling_index": 1,
        "object": "message",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if extras:
        data["refusal"] = extras.get("refusal")
        data["annotations"] = extras.get("annotations")
        data["audio"] = extras.get("audio")
        data["function_call"] = extras.get("function_call")
    model = _new(MessageRead)
    _set_dict(model, data)
    _set_fields(model, _MESSAGE_FIELDS)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def conversation_record(record: Any) -> ConversationRead:
    """:func:`conversation` of a row of :data:`sql.CONVERSATION_COLUMNS` as asyncpg returns it
    (see :func:`message_record`)."""
    (
        id,
        user_id,
        title,
        metadata,
        created_at,
        updated_at,
        message_count,
        archived,
        pinned,
        expires_at,
        current_message_id,
    ) = record
    model = _new(ConversationRead)
    _set_dict(
        model,
        {
            "id": id,
            "user_id": user_id,
            "title": title,
            "metadata": metadata,
            "created_at": created_at,
            "updated_at": updated_at,
            "message_count": message_count,
            "archived": archived,
            "pinned": pinned,
            "expires_at": expires_at,
            "current_message_id": current_message_id,
            "object": "conversation",
        },
    )
    _set_fields(model, _CONVERSATION_FIELDS)
    _set_extra(model, None)
    _set_private(model, None)
    return model


# The stored columns: every field but ``object``, which is a constant.
_CONVERSATION_NAMES: Final = tuple(f for f in ConversationRead.model_fields if f != "object")
_CONVERSATION_WIDTH: Final = len(_CONVERSATION_NAMES)
# A message row's columns, but ``extras`` (refusal, annotations, audio, function_call) and the
# sibling numbers (counted for branched conversations, SPEC 11: :func:`numbered`).
_SIBLINGS: Final = ("sibling_count", "sibling_index")
_STORED_NAMES: Final = tuple(
    f for f in MessageRead.model_fields if f not in ("object", *_SIBLINGS, *EXTRAS)
)
_NONE: Final[Mapping[str, Any]] = {}
# message_record and conversation_record name the columns of the hot statements in this order.
_MESSAGE_WIDTH: Final = len(sql.MESSAGE_NAMES)
if (
    (*_STORED_NAMES, "extras") != sql.MESSAGE_NAMES
    or _CONVERSATION_NAMES != sql.CONVERSATION_NAMES
    or list(vars(message_record((*_STORED_NAMES, None), None)).values())[: len(_STORED_NAMES)]
    != list(_STORED_NAMES)
    or list(vars(conversation_record(_CONVERSATION_NAMES)).values())[:-1]
    != list(_CONVERSATION_NAMES)
):
    raise RuntimeError("the hot statements' columns must be in the read models' order")


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
