"""Export and import as JSON Lines: one conversation per line, its messages in OpenAI chat format
plus ``id``, ``seq`` and ``created_at``. A line looks like::

    {"id": "...", "user_id": "u1", "title": "...", "metadata": {}, "created_at": "...",
     "updated_at": "...", "messages": [{"id": "...", "seq": 1, "created_at": "...",
     "role": "user", "content": "Hi"}, ...]}

Export reads the whole database (or the users asked for) in one snapshot
(:meth:`ChatHistory.iter_export`) and writes each message as it is read: on a live database
it holds every conversation that existed when it began, exactly once.

Import reads bytes: a binary stream with a bounded ``readline`` (a line over ``max_line_bytes``
is reported and skipped in pieces, never held whole), each line decoded by itself, so a line
that is not UTF-8, not JSON, nested too deeply, or holds a number of thousands of digits is
reported by its number and the other lines import. Within a line, the ``messages`` array is
parsed one message at a time and stored in chunks: memory is about twice the line (its bytes
while they are decoded, then its text) plus one chunk of messages, not the parsed line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Final, cast

from chathistory.errors import ChatHistoryError, ValidationError
from chathistory.schemas import ConversationRead, MessageRead
from chathistory.store import ChatHistory

log = logging.getLogger("chathistory")

Progress = Callable[[int], None]
#: What :func:`import_jsonl` reads: a binary stream (best: long lines are never read whole), a
#: text stream, or any iterable of lines as ``str`` or ``bytes``.
Lines = IO[bytes] | Iterable[str] | Iterable[bytes]

DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024 * 1024
#: Digits a JSON integer may have (Python's own default limit for converting them).
MAX_INTEGER_DIGITS: Final = 4300
_SKIP_PIECE: Final = 1024 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")


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


def message_record(message: MessageRead, previous: uuid.UUID | None = None) -> dict[str, Any]:
    """A message as the file carries it; ``parent_id`` only when it does not follow
    ``previous``, the message before it in the file (SPEC 11: a conversation that never
    branched is written as before)."""
    record: dict[str, Any] = {
        "id": str(message.id),
        "seq": message.seq,
        "created_at": _time(message.created_at),
        **message.to_openai(),
    }
    if message.metadata:
        record["metadata"] = message.metadata
    # A streaming turn (SPEC 10) only when it is one: files of finished messages stay as they were.
    if message.status != "completed":
        record["status"] = message.status
    if message.updated_at != message.created_at:
        record["updated_at"] = _time(message.updated_at)
    if message.parent_id != previous:
        record["parent_id"] = None if message.parent_id is None else str(message.parent_id)
    return record


def _conversation_head(conversation: ConversationRead) -> str:
    head: dict[str, Any] = {
        "id": str(conversation.id),
        "user_id": conversation.user_id,
        "title": conversation.title,
        "metadata": conversation.metadata,
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
    }
    # The lifecycle (SPEC 9) only when set: files of conversations without it stay as they were.
    if conversation.archived:
        head["archived"] = True
    if conversation.pinned:
        head["pinned"] = True
    if conversation.expires_at is not None:
        head["expires_at"] = _time(conversation.expires_at)
    if conversation.current_message_id is not None:
        head["current_message_id"] = str(conversation.current_message_id)
    return _dumps(head)[:-1] + ',"messages":['  # last, so messages can stream after the head


async def export_jsonl(
    store: ChatHistory,
    out: IO[str],
    *,
    user_ids: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the conversations of ``user_ids`` (every user when ``None``) to ``out``, as they
    were when the export began (one snapshot; writes meanwhile are not in the file)."""
    report = ExportReport()
    first = True
    previous: uuid.UUID | None = None
    async with aclosing(store.iter_export(user_ids)) as items:
        async for item in items:
            if isinstance(item, ConversationRead):
                if report.conversations:
                    out.write("]}\n")
                out.write(_conversation_head(item))
                report.conversations += 1
                first, previous = True, None
                continue
            out.write(("" if first else ",") + _dumps(message_record(item, previous)))
            previous = item.id
            first = False
            report.messages += 1
            if progress:
                progress(1)
    if report.conversations:
        out.write("]}\n")
    return report


async def import_jsonl(
    store: ChatHistory,
    lines: Lines,
    *,
    user_id: str | None = None,
    progress: Progress | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ImportReport:
    """Import conversations line by line. A bad line is reported with its number (and never
    with its text) and nothing of it is stored; the other lines import. Re-importing skips
    what is already there. A line over ``max_line_bytes`` bytes is a bad line."""
    report = ImportReport()
    reader = _Reader(lines, max_line_bytes)
    number = 0
    while (got := reader.next()) is not None:
        number += 1
        text, size = got
        del got
        try:
            outcome = await _import_line(store, text, user_id)
        except Exception as exc:  # a bad line is a bad line, not a dead run
            report.errors.append((number, _reason(exc)))
        else:
            if outcome is not None:
                created, count = outcome
                if created:
                    report.created += 1
                    report.messages += count
                else:
                    report.skipped += 1
        del text  # before the next line is read: one line in memory at a time
        if progress:
            progress(size)
    return report


class _BadLine(Exception):
    """A line that cannot be read; the message never quotes it."""


async def _import_line(
    store: ChatHistory, text: str | _BadLine, user_id: str | None
) -> tuple[bool, int] | None:
    if isinstance(text, _BadLine):
        raise text
    if not text or text.isspace():
        return None
    line = _Line(text)
    head = line.head()
    if user_id is not None and head.get("user_id") != user_id:
        return None
    if line.messages_at is None:  # no "messages" array: the store says what is wrong, if any
        return await store.import_conversation(head), 0
    return await store.import_conversation(head, line.messages()), line.count


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "not JSON this importer reads: nested too deeply"
    if isinstance(exc, _BadLine | ChatHistoryError):
        return str(exc)
    log.debug("import: unexpected failure", exc_info=exc)
    return f"could not be imported ({type(exc).__name__})"


# -- reading lines ---------------------------------------------------------------------------


class _Reader:
    """Lines one call at a time, each as its text (or what is wrong with it) and its size in
    bytes. Not a generator: that would keep the last line alive while it reads the next."""

    def __init__(self, source: Lines, limit: int) -> None:
        self.limit = limit
        self.first = True
        self.stream: io.BufferedIOBase | io.RawIOBase | None = None
        self.items: Iterator[str | bytes] = iter(())
        if isinstance(source, io.BufferedIOBase | io.RawIOBase):
            self.stream = source
        else:
            self.items = iter(cast(Iterable[str | bytes], source))

    def next(self) -> tuple[str | _BadLine, int] | None:
        first, self.first = self.first, False
        line: str | bytes | None
        if self.stream is not None:
            line = self.stream.readline(self.limit + 1)  # the newline does not count
            if not line:
                return None
            if len(line) > self.limit and not line.endswith(b"\n"):
                rest = self._skip_rest(self.stream, min(self.limit + 1, _SKIP_PIECE))
                return _too_long(self.limit), len(line) + rest
        else:
            line = next(self.items, None)
            if line is None:
                return None
        if isinstance(line, bytes):
            size = len(line)
            if size - line.endswith(b"\n") > self.limit:
                return _too_long(self.limit), size
            return _decode(line, first), size
        size = len(line.encode("utf-8", "surrogatepass"))
        if size - line.endswith("\n") > self.limit:
            return _too_long(self.limit), size
        return line.removeprefix("\ufeff") if first else line, size

    @staticmethod
    def _skip_rest(stream: io.BufferedIOBase | io.RawIOBase, piece_size: int) -> int:
        """Read past the rest of a line that is too long, in pieces; its size."""
        size = 0
        while True:
            piece = stream.readline(piece_size)
            size += len(piece)
            if not piece or piece.endswith(b"\n"):
                return size


def _decode(line: bytes, first: bool) -> str | _BadLine:
    try:
        return line.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        return _BadLine(f"not UTF-8 text: byte {exc.start + 1} of the line is invalid")


def _too_long(limit: int) -> _BadLine:
    return _BadLine(f"longer than the maximum line size of {limit:,} bytes; not read")


# -- parsing one line ------------------------------------------------------------------------


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _BadLine(f"not JSON this importer reads: a number over {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _no_constants(name: str) -> Any:
    raise ValidationError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_no_constants)


class _Line:
    """One line's JSON object, read without building its ``messages`` list: :meth:`head` parses
    every other key and checks the whole line (the messages are parsed and dropped one by one);
    :meth:`messages` then parses them again, one at a time, for the store."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.messages_at: int | None = None
        self.count = 0
        self._end = 0

    def head(self) -> dict[str, Any]:
        text = self.text
        pos = _skip(text, 0)
        if not text.startswith("{", pos):
            raise _BadLine("a line must hold one JSON object")
        head: dict[str, Any] = {}
        pos = _skip(text, pos + 1)
        closed = text.startswith("}", pos)
        while not closed:
            if not text.startswith('"', pos):
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, pos
                )
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not text.startswith(":", pos):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
            pos = _skip(text, pos + 1)
            if key == "messages" and text.startswith("[", pos):
                head.pop(key, None)
                self.messages_at = pos
                self.count = sum(1 for _ in self._array(pos))
                pos = self._end
            else:
                head[key], pos = _DECODER.raw_decode(text, pos)
                if key == "messages":  # a later key wins, as in json.loads
                    self.messages_at = None
            pos = _skip(text, pos)
            closed = text.startswith("}", pos)
            if not closed:
                if not text.startswith(",", pos):
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
                pos = _skip(text, pos + 1)
        end = _skip(text, pos + 1)  # past the closing brace
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return head

    def messages(self) -> Iterator[Any]:
        assert self.messages_at is not None
        return self._array(self.messages_at)

    def _array(self, pos: int) -> Iterator[Any]:
        """The items of the array at ``pos``, one at a time; its end is then ``self._end``."""
        text = self.text
        pos = _skip(text, pos + 1)
        if text.startswith("]", pos):
            self._end = pos + 1
            return
        while True:
            item, pos = _DECODER.raw_decode(text, pos)
            yield item
            pos = _skip(text, pos)
            if text.startswith("]", pos):
                self._end = pos + 1
                return
            if not text.startswith(",", pos):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
            pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()
