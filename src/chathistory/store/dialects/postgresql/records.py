"""The rows PostgreSQL's hand-written statements return, as asyncpg hands them over, and the read
models built from them: the columns of every hot statement in the read models' order (checked
at import), unpacked by position rather than looked up by name."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from chathistory.schemas import ConversationRead, MessageRead
from chathistory.store.rows import (
    CONVERSATION_FIELDS,
    CONVERSATION_NAMES,
    MESSAGE_FIELDS,
    STORED_NAMES,
    new,
    set_dict,
    set_extra,
    set_fields,
    set_private,
    settled,
)

MESSAGE_COLUMNS: Final = (
    "id, conversation_id, user_id, seq, role, content, name, tool_calls,"
    " tool_call_id, metadata, token_count, created_at, status, updated_at, parent_id, extras"
)
MESSAGE_NAMES: Final = tuple(name.strip() for name in MESSAGE_COLUMNS.split(","))
CONVERSATION_COLUMNS: Final = (
    "id, user_id, title, metadata, created_at, updated_at, message_count,"
    " archived, pinned, expires_at, current_message_id"
)
# A row's size: the bytes of its content, tool calls and extras as JSON text (concat skips a
# NULL and writes jsonb as its text, as ::text does). One call each: every function named in a
# statement is looked up again when an unnamed statement is parsed.
SIZE: Final = "octet_length(concat(content, tool_calls, extras))"
_MESSAGE_WIDTH: Final = len(MESSAGE_NAMES)


def message_record(record: Any, stale_before: datetime | None) -> MessageRead:
    """:func:`~chathistory.store.rows.message` of a row of :data:`MESSAGE_COLUMNS` as asyncpg
    returns it (a trailing ``size`` column is left out): its values are in the read model's
    order (checked below), so they are unpacked and go into a dict display, built at its size
    in one step, instead of being looked up one name at a time (half the cost, which counts on
    the hot reads)."""
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
    model = new(MessageRead)
    set_dict(model, data)
    set_fields(model, MESSAGE_FIELDS)
    set_extra(model, None)
    set_private(model, None)
    return model


def conversation_record(record: Any) -> ConversationRead:
    """:func:`~chathistory.store.rows.conversation` of a row of :data:`CONVERSATION_COLUMNS` as
    asyncpg returns it (see :func:`message_record`)."""
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
    model = new(ConversationRead)
    set_dict(
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
    set_fields(model, CONVERSATION_FIELDS)
    set_extra(model, None)
    set_private(model, None)
    return model


# message_record and conversation_record name the columns of the hot statements in this order.
if (
    (*STORED_NAMES, "extras") != MESSAGE_NAMES
    or tuple(name.strip() for name in CONVERSATION_COLUMNS.split(",")) != CONVERSATION_NAMES
    or list(vars(message_record((*STORED_NAMES, None), None)).values())[: len(STORED_NAMES)]
    != list(STORED_NAMES)
    or list(vars(conversation_record(CONVERSATION_NAMES)).values())[:-1] != list(CONVERSATION_NAMES)
):
    raise RuntimeError("the hot statements' columns must be in the read models' order")

__all__ = [
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "MESSAGE_NAMES",
    "SIZE",
    "conversation_record",
    "message_record",
]
