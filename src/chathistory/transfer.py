"""Export and import as JSON Lines: one conversation per line, its messages in OpenAI chat format
plus ``id``, ``seq`` and ``created_at``. Both directions stream: an export writes each message as
it is read (a conversation is never held whole), an import holds one line at a time.

A line looks like::

    {"id": "...", "user_id": "u1", "title": "...", "metadata": {}, "created_at": "...",
     "updated_at": "...", "messages": [{"id": "...", "seq": 1, "created_at": "...",
     "role": "user", "content": "Hi"}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from chathistory.errors import ChatHistoryError, ValidationError
from chathistory.schemas import ConversationRead, MessageRead
from chathistory.store import ChatHistory

Progress = Callable[[int], None]


@dataclass
class ExportReport:
    conversations: int = 0
    messages: int = 0


@dataclass
class ImportReport:
    created: int = 0
    skipped: int = 0
    messages: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def _dumps(value: Any) -> str:
    # Sorted keys: PostgreSQL (JSONB) does not keep key order, and files must compare equal.
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True
    )


def _time(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def message_record(message: MessageRead) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": str(message.id),
        "seq": message.seq,
        "created_at": _time(message.created_at),
        **message.to_openai(),
    }
    if message.metadata:
        record["metadata"] = message.metadata
    return record


def _conversation_head(conversation: ConversationRead) -> str:
    head = {
        "id": str(conversation.id),
        "user_id": conversation.user_id,
        "title": conversation.title,
        "metadata": conversation.metadata,
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
    }
    return _dumps(head)[:-1] + ',"messages":['  # last, so messages can stream after the head


async def _conversations(store: ChatHistory, user_id: str) -> AsyncIterator[ConversationRead]:
    cursor = None
    while True:
        page = await store.list_conversations(user_id, limit=100, cursor=cursor)
        for conversation in page.data:
            yield conversation
        if not page.has_more:
            return
        cursor = page.next_cursor


async def export_jsonl(
    store: ChatHistory,
    out: IO[str],
    *,
    user_ids: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the conversations of ``user_ids`` (every user when ``None``) to ``out``."""
    report = ExportReport()
    users: AsyncIterator[str] | Iterable[str] = (
        store.iter_user_ids() if user_ids is None else user_ids
    )
    async for user_id in _aiter(users):
        async for conversation in _conversations(store, user_id):
            out.write(_conversation_head(conversation))
            first = True
            async for message in store.iter_messages(user_id, conversation.id):
                out.write(("" if first else ",") + _dumps(message_record(message)))
                first = False
                report.messages += 1
                if progress:
                    progress(1)
            out.write("]}\n")
            report.conversations += 1
    return report


async def import_jsonl(
    store: ChatHistory,
    lines: Iterable[str],
    *,
    user_id: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import conversations line by line. A bad line is reported with its number and nothing
    of it is stored; the other lines import. Re-importing skips what is already there."""
    report = ImportReport()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_no_constants)
            if not isinstance(record, dict):
                raise ValidationError("a line must hold one JSON object")
            if user_id is not None and record.get("user_id") != user_id:
                continue
            created = await store.import_conversation(record)
        except json.JSONDecodeError as exc:
            report.errors.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
        except ChatHistoryError as exc:
            report.errors.append((number, str(exc)))
        else:
            count = len(record.get("messages") or ())
            if created:
                report.created += 1
                report.messages += count
            else:
                report.skipped += 1
        if progress:
            progress(len(line.encode()))
    return report


def _no_constants(name: str) -> Any:
    raise ValidationError(f"{name} is not a JSON number")


async def _aiter(items: AsyncIterator[str] | Iterable[str]) -> AsyncIterator[str]:
    if isinstance(items, AsyncIterator):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
