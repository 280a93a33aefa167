"""Export and import as JSON Lines: one conversation per line, its messages in OpenAI chat format
plus ``id``, ``seq`` and ``created_at``. A line looks like::

    {"id": "...", "user_id": "u1", "title": "...", "metadata": {}, "created_at": "...",
     "updated_at": "...", "messages": [{"id": "...", "seq": 1, "created_at": "...",
     "role": "user", "content": "Hi"}, ...]}

Export reads the whole database (or the users asked for) in one snapshot
(:meth:`ChatHistory.iter_export`) and writes each message as it is read: on a live database
it holds every conversation that existed when it began, exactly once.

Import reads bytes: a binary stream read a line at a time, each line decoded by itself, so a
line that is not UTF-8, not JSON, nested too deeply, or holds a number of thousands of digits is
reported by its number and the other lines import. No line is too long: a line of up to
``line_buffer_bytes`` is read into memory; a longer one (a long conversation) is copied to a
temporary file in pieces and parsed from there a piece at a time. Within a line, the
``messages`` array is parsed one message at a time (once to check the whole line, once more for
the store) and stored in chunks: memory holds at most ``line_buffer_bytes`` of a line, one
message and one chunk of messages, however long the conversation.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import re
import tempfile
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

#: A line up to this size is read into memory whole; a longer one is read from a temporary file.
DEFAULT_LINE_BUFFER_BYTES: Final = 8 * 1024 * 1024
#: The least :func:`default_max_value_chars` gives: 64 MiB.
DEFAULT_MAX_VALUE_CHARS: Final = 64 * 1024 * 1024
#: Digits a JSON integer may have (Python's own default limit for converting them).
MAX_INTEGER_DIGITS: Final = 4300
_PIECE: Final = 1024 * 1024  # what a long line is read in
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
    line_buffer_bytes: int = DEFAULT_LINE_BUFFER_BYTES,
    max_value_chars: int | None = None,
) -> ImportReport:
    """Import conversations line by line. A bad line is reported with its number (and never
    with its text) and nothing of it is stored; the other lines import. Re-importing skips
    what is already there.

    From a binary stream, a line of up to ``line_buffer_bytes`` is read into memory whole; a
    longer one (a long conversation: no line is too long) is copied to a temporary file and
    read from there one message at a time. There a single message (or other value) of more
    than ``max_value_chars`` characters of JSON makes the line a bad one; by default that is
    :func:`default_max_value_chars` of the store's content limit."""
    if isinstance(line_buffer_bytes, bool) or not isinstance(line_buffer_bytes, int):
        raise ValidationError("must be a positive integer", loc=("line_buffer_bytes",))
    if line_buffer_bytes < 1:
        raise ValidationError("must be a positive integer", loc=("line_buffer_bytes",))
    report = ImportReport()
    value_limit = max_value_chars or default_max_value_chars(store.max_content_chars)
    reader = _Reader(lines, line_buffer_bytes)
    number = 0
    while (got := reader.next()) is not None:
        number += 1
        text, size = got
        del got
        try:
            outcome = await _import_line(store, text, user_id, value_limit, reader.piece)
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
        finally:
            if isinstance(text, _Spooled):
                text.file.close()  # the temporary file is gone with it
        del text  # before the next line is read: one line at a time
        if progress:
            progress(size)
    return report


def default_max_value_chars(max_content_chars: int) -> int:
    """The longest message (in characters of JSON) an import reads from a long line: room for
    the store's content limit written as JSON escapes (up to 12 characters for one), plus
    1 MiB for a message's other fields; never under 64 MiB (a message's audio data does not
    count against the content limit)."""
    return max(DEFAULT_MAX_VALUE_CHARS, 12 * max_content_chars + 1024 * 1024)


class _BadLine(Exception):
    """A line that cannot be read; the message never quotes it."""


@dataclass
class _Spooled:
    """A line too long for memory, in a temporary file (its bytes after any BOM)."""

    file: IO[bytes]


async def _import_line(
    store: ChatHistory,
    text: str | _BadLine | _Spooled,
    user_id: str | None,
    value_limit: int,
    piece: int,
) -> tuple[bool, int] | None:
    if isinstance(text, _BadLine):
        raise text
    line = _Line(text.file if isinstance(text, _Spooled) else text, value_limit, piece)
    head = line.head()
    if head is None:  # a blank line
        return None
    if user_id is not None and head.get("user_id") != user_id:
        return None
    if line.messages_at is None:  # no "messages" array: the store says what is wrong, if any
        return await store.import_conversation(head), 0
    return await store.import_conversation(head, line.messages()), line.count


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "not JSON this importer reads: nested too deeply"
    if isinstance(exc, _BadLine | ChatHistoryError):
        return str(exc)
    log.debug("import: unexpected failure", exc_info=exc)
    return f"could not be imported ({type(exc).__name__})"


# -- reading lines ---------------------------------------------------------------------------


class _Reader:
    """Lines one call at a time, each as its text (a long one in a temporary file, or what is
    wrong with it) and its size in bytes. Not a generator: that would keep the last line alive
    while it reads the next."""

    def __init__(self, source: Lines, buffer_bytes: int) -> None:
        self.buffer_bytes = buffer_bytes
        self.piece = min(buffer_bytes + 1, _PIECE)
        self.first = True
        self.stream: io.BufferedIOBase | io.RawIOBase | None = None
        self.items: Iterator[str | bytes] = iter(())
        if isinstance(source, io.BufferedIOBase | io.RawIOBase):
            self.stream = source
        else:
            self.items = iter(cast(Iterable[str | bytes], source))

    def next(self) -> tuple[str | _BadLine | _Spooled, int] | None:
        first, self.first = self.first, False
        line: str | bytes | None
        if self.stream is not None:
            line = self.stream.readline(self.buffer_bytes + 1)  # the newline does not count
            if not line:
                return None
            if len(line) > self.buffer_bytes and not line.endswith(b"\n"):
                return self._spool(self.stream, line, first)
        else:  # lines given whole: they are in memory already
            line = next(self.items, None)
            if line is None:
                return None
        if isinstance(line, bytes):
            return _decode(line, first), len(line)
        size = len(line.encode("utf-8", "surrogatepass"))
        return line.removeprefix("\ufeff") if first else line, size

    def _spool(
        self, stream: io.BufferedIOBase | io.RawIOBase, start: bytes, first: bool
    ) -> tuple[_Spooled, int]:
        """The rest of a long line copied, with its ``start``, to a temporary file, in pieces
        (never whole in memory); the line and its size."""
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by import_jsonl
        try:
            size = len(start)
            spool.write(start.removeprefix(b"\xef\xbb\xbf") if first else start)
            while not start.endswith(b"\n"):
                start = stream.readline(self.piece)
                if not start:
                    break
                size += len(start)
                spool.write(start)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return _Spooled(spool), size


def _decode(line: bytes, first: bool) -> str | _BadLine:
    try:
        return line.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(exc.start)


def _not_utf8(start: int) -> _BadLine:
    return _BadLine(f"not UTF-8 text: byte {start + 1} of the line is invalid")


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
    :meth:`messages` then parses them again, one at a time, for the store. The line is a text
    in memory or a file read a piece at a time (:class:`_Text`)."""

    def __init__(self, source: str | IO[bytes], value_limit: int, piece: int) -> None:
        self.source = source
        self.value_limit = value_limit
        self.piece = piece
        self.messages_at: int | None = None  # which key (0, 1, ...) holds the messages
        self.count = 0

    def _text(self) -> _Text:
        return _Text(self.source, self.value_limit, self.piece)

    def head(self) -> dict[str, Any] | None:
        """The line's keys but its messages; ``None`` for a blank line."""
        text = self._text()
        opening = text.peek()
        if not opening:
            return None
        if opening != "{":
            raise _BadLine("a line must hold one JSON object")
        text.pos += 1
        head: dict[str, Any] = {}
        for index, key in enumerate(text.keys()):
            if key == "messages" and text.peek() == "[":
                head.pop(key, None)
                self.messages_at = index
                self.count = sum(1 for _ in text.array())
            else:
                head[key] = text.value()
                if key == "messages":  # a later key wins, as in json.loads
                    self.messages_at = None
        if text.peek():
            raise text.error("Extra data")
        return head

    def messages(self) -> Iterator[Any]:
        text = self._text()
        text.peek()
        text.pos += 1  # past the "{" that head() found
        for index, key in enumerate(text.keys()):
            if index == self.messages_at:
                yield from text.array()
                return
            if key == "messages" and text.peek() == "[":
                for _ in text.array():  # an earlier "messages", not the one that counts
                    pass
            else:
                text.value()


class _Text:
    """A cursor over a line's JSON text: in memory, or decoded from a file piece by piece,
    keeping only what the value being parsed needs (at most ``limit`` characters of it)."""

    def __init__(self, source: str | IO[bytes], limit: int, piece: int) -> None:
        self.pos = 0
        self.base = 0  # characters of the line before ``buffer``
        self.limit = limit
        self.piece = piece
        self.file: IO[bytes] | None = None
        if isinstance(source, str):
            self.buffer, self.done = source, True
        else:
            source.seek(0)
            self.buffer, self.done, self.file = "", False, source
            self.decoder = codecs.getincrementaldecoder("utf-8")()
            self.bytes_read = 0

    def _more(self, wanted: int) -> bool:
        """Read on (at least ``wanted`` bytes, a piece at least), dropping what is parsed;
        ``False`` at the end of the line."""
        if self.done or self.file is None:
            return False
        data = self.file.read(max(wanted, self.piece))
        pending = len(self.decoder.getstate()[0])
        try:
            more = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.bytes_read - pending + exc.start) from None
        self.bytes_read += len(data)
        self.done = not data
        self.base += self.pos
        self.buffer = self.buffer[self.pos :] + more
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character but whitespace (``""`` at the end of the line)."""
        while True:
            self.pos = _skip(self.buffer, self.pos)
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._more(0):
                return ""

    def error(self, message: str, at: int | None = None) -> _BadLine:
        column = self.base + (self.pos if at is None else at) + 1
        return _BadLine(f"not JSON: {message} at column {column}")

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                item, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                cut = exc.msg.startswith("Unterminated") or exc.pos >= len(self.buffer) - 16
                if self.done or not cut:
                    raise self.error(exc.msg, exc.pos) from None
            else:  # a number at the end of what is read may go on
                if self.done or len(self.buffer) - end >= 3:
                    self.pos = end
                    return item
            unparsed = len(self.buffer) - self.pos
            if unparsed > self.limit:
                raise _BadLine(f"holds a value over {self.limit:,} characters of JSON; not read")
            self._more(unparsed)  # doubles what is read of the value: linear time

    def keys(self) -> Iterator[str]:
        """The keys of an object whose "{" is behind: each once the cursor is at its value;
        the caller parses the value before asking for the next key."""
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            if self.peek() != '"':
                raise self.error("Expecting property name enclosed in double quotes")
            key = self.value()
            if self.peek() != ":":
                raise self.error("Expecting ':' delimiter")
            self.pos += 1
            yield key
            found = self.peek()
            self.pos += 1
            if found == "}":
                return
            if found != ",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)

    def array(self) -> Iterator[Any]:
        """The items of the array at the cursor, one at a time."""
        self.peek()
        self.pos += 1  # past "["
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            found = self.peek()
            self.pos += 1
            if found == "]":
                return
            if found != ",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()
