"""Opaque keyset cursors.

A cursor names the position just after the last item of a page: for conversations the
``(updated_at, id)`` of that item, for messages its ``seq`` and the list's order, for search
hits the message's ``(created_at, id)``. It is
URL-safe base64 of a small JSON document; clients must treat it as opaque. A cursor that does
not decode, or belongs to another kind of list, raises :class:`InvalidCursorError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from chathistory.errors import InvalidCursorError

Order = Literal["asc", "desc"]

_VERSION = 1
_MAX_CURSOR_CHARS = 512
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ConversationCursor:
    updated_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class MessageCursor:
    seq: int
    order: Order


def _encode(payload: dict[str, Any]) -> str:
    raw = json.dumps({"v": _VERSION, **payload}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(cursor: str, kind: str) -> dict[str, Any]:
    bad = InvalidCursorError("is not a cursor this list issued", loc=("cursor",))
    if not isinstance(cursor, str) or not 0 < len(cursor) <= _MAX_CURSOR_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(payload, dict) or payload.get("v") != _VERSION or payload.get("k") != kind:
        raise bad
    return payload


def encode_conversation_cursor(updated_at: datetime, id: uuid.UUID) -> str:
    return _encode_keyset("c", updated_at, id)


def decode_conversation_cursor(cursor: str) -> ConversationCursor:
    return ConversationCursor(*_decode_keyset(cursor, "c"))


def encode_search_cursor(created_at: datetime, id: uuid.UUID) -> str:
    """After the search hit (message) created at ``created_at`` with ``id`` (newest first)."""
    return _encode_keyset("s", created_at, id)


def decode_search_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    return _decode_keyset(cursor, "s")


def _encode_keyset(kind: str, at: datetime, id: uuid.UUID) -> str:
    delta = at - _EPOCH  # integer maths: exact to the microsecond
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _encode({"k": kind, "t": micros, "id": id.hex})


def _decode_keyset(cursor: str, kind: str) -> tuple[datetime, uuid.UUID]:
    payload = _decode(cursor, kind)
    micros, raw_id = payload.get("t"), payload.get("id")
    if type(micros) is not int or not isinstance(raw_id, str):
        raise InvalidCursorError("is not a cursor this list issued", loc=("cursor",))
    try:
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(hex=raw_id)
    except (ValueError, OverflowError):
        raise InvalidCursorError("is not a cursor this list issued", loc=("cursor",)) from None


def encode_message_cursor(seq: int, order: Order) -> str:
    return _encode({"k": "m", "s": seq, "o": order})


def decode_message_cursor(cursor: str, order: Order) -> MessageCursor:
    payload = _decode(cursor, "m")
    seq, cursor_order = payload.get("s"), payload.get("o")
    if type(seq) is not int or seq < 0 or seq > 2**31 - 1 or cursor_order not in ("asc", "desc"):
        raise InvalidCursorError("is not a cursor this list issued", loc=("cursor",))
    if cursor_order != order:
        raise InvalidCursorError(
            f"was issued for order={cursor_order}, not order={order}", loc=("cursor",)
        )
    return MessageCursor(seq, cursor_order)
