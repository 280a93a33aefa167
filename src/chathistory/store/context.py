"""The context window (SPEC section 4): the messages to send to an LLM within a token budget.

The leading system messages, then the newest contiguous run that fits, oldest first. Tool
calls and their results stay together: an assistant message with tool calls is kept only with
all its results right after it (one whose calls were never all answered is left out, with the
results it did get), and a tool result only with its call. Both budgets count: the caller's
``max_tokens`` and the store's ``max_response_bytes``.

The choosing is pure (:class:`Budget`, :class:`Selection`: no database); :func:`window` reads
for it, backwards from the newest message in chunks through the ``(conversation_id, seq)``
index, so the cost follows what fits, not the history's length.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from chathistory import tokens
from chathistory.errors import ValidationError
from chathistory.models import ITEM_ROLE
from chathistory.schemas import ContextWindow, input_message
from chathistory.store import branches, limits
from chathistory.store.rows import WINDOW_COLUMNS, M, settled

_FIRST_CHUNK: Final = 32
_SYSTEM_CHUNK: Final = 8
_MAX_CHUNK: Final = 1024
OFF_LOOP_BYTES: Final = 256 * 1024
"""Bytes of messages to count (content and tool calls) above which counting leaves the event
loop for a worker thread."""


class Budget:
    """What a context window may still take: tokens (the caller's ``max_tokens``, the reply's
    priming counted from the start) and bytes of content and tool calls.

    A message costs its stored token count when that was counted with the window's encoding
    (``stored_counts``), else it is counted now: :meth:`count` counts a read's worth of such
    messages ahead, on a worker thread once they pass :data:`OFF_LOOP_BYTES` (the event loop
    keeps serving other requests while megabytes of text are tokenized)."""

    def __init__(
        self, max_tokens: int, max_bytes: int, counter: tokens.TokenCounter, stored_counts: bool
    ) -> None:
        self.max_tokens = max_tokens
        self.max_bytes = max_bytes
        self.tokens = tokens.REPLY_PRIMING
        self.bytes = 0
        self.counter = counter
        self.stored_counts = stored_counts
        self._counted: dict[int, int] = {}  # seq -> tokens, of messages counted here

    @property
    def bytes_left(self) -> int:
        return self.max_bytes - self.bytes

    def _stored(self, row: Any) -> int | None:
        if self.stored_counts and row.token_count is not None:
            return int(row.token_count)
        return None

    async def count(self, rows: Sequence[Any]) -> None:
        """Count ahead the tokens of the ``rows`` that have no stored count to use."""
        todo = [row for row in rows if self._stored(row) is None and row.seq not in self._counted]
        if not todo:
            return
        work = functools.partial(self._count_all, todo)
        heavy = sum(row.size for row in todo) > OFF_LOOP_BYTES
        counts = await asyncio.to_thread(work) if heavy else work()
        self._counted.update(zip((row.seq for row in todo), counts, strict=True))

    def _count_all(self, rows: Sequence[Any]) -> list[int]:
        return [self.counter.count_message(row._mapping) for row in rows]

    def cost(self, row: Any) -> int:
        """The tokens one message costs."""
        stored = self._stored(row)
        if stored is not None:
            return stored
        if row.seq not in self._counted:
            self._counted[row.seq] = self.counter.count_message(row._mapping)
        return self._counted[row.seq]

    def take(self, group: Sequence[Any]) -> bool:
        """Count the group in if it fits in both budgets; ``False`` (and nothing taken) if not."""
        more_tokens = sum(self.cost(row) for row in group)
        more_bytes = sum(row.size for row in group)
        if self.tokens + more_tokens > self.max_tokens or self.bytes + more_bytes > self.max_bytes:
            return False
        self.tokens += more_tokens
        self.bytes += more_bytes
        return True


class Selection:
    """The newest run, chosen from rows fed newest first, in whole groups (a message, or an
    assistant message with all of its tool results right after it). A message still streaming
    (``in_progress`` and updated since ``stale_before``, SPEC 10) is left out with its tool
    results, like a call never answered; an ``incomplete`` one is kept as it is."""

    def __init__(self, budget: Budget, stale_before: datetime | None = None) -> None:
        self.budget = budget
        self.stale_before = stale_before
        self._taken: list[Any] = []  # newest first
        self._pending: list[Any] = []  # tool results seen since the last non-tool message

    def feed(self, rows: Sequence[Any]) -> bool:
        """Take what fits of ``rows``; ``True`` once a group did not fit (the run is over)."""
        for row in rows:
            if row.role == ITEM_ROLE:  # an item with no chat form: in no chat view
                continue
            if row.role == "tool":
                self._pending.append(row)
                continue
            if row.status == "in_progress" and _streaming(row, self.stale_before):
                self._pending = []
                continue
            group = [row]
            if row.tool_calls:
                wanted = {call["id"] for call in row.tool_calls}
                results = [t for t in self._pending if t.tool_call_id in wanted]
                if {t.tool_call_id for t in results} != wanted:
                    self._pending = []  # never all answered: leave it out, with its results
                    continue
                group = [*results, row]  # newest first, like `_taken`
            self._pending = []  # results not right after their call cannot be replayed
            if not self.budget.take(group):
                return True
            self._taken += group
        return False

    @property
    def run(self) -> list[Any]:
        """The chosen rows, oldest first."""
        return self._taken[::-1]


def _streaming(row: Any, stale_before: datetime | None) -> bool:
    updated_at = row.updated_at or row.created_at
    return settled(row.status, updated_at, stale_before) == "in_progress"


async def window(
    conn: AsyncConnection,
    size: ColumnElement[int],
    user_id: str,
    conversation_id: uuid.UUID,
    budget: Budget,
    stale_before: datetime,
) -> ContextWindow:
    branched, _ = await branches.active(conn, user_id, conversation_id)  # 404 here
    owned = (M.conversation_id == conversation_id, M.user_id == user_id)

    async def read(**bounds: Any) -> Sequence[Any]:
        found: Sequence[Any]
        if not branched:  # every message, in one statement
            query = limits.bounded_range(WINDOW_COLUMNS, owned, size, **bounds)
            found = (await conn.execute(query)).all()
        else:
            rows = await branches.read_active(
                conn, size, user_id, conversation_id, columns=WINDOW_COLUMNS, **bounds
            )
            found = [_Row(row) for row in rows]
        return found

    system = await _system_prefix(read, budget)
    if not system and budget.tokens > budget.max_tokens:  # the reply's priming alone
        raise ValidationError(f"must be at least {budget.tokens}", loc=("max_tokens",))
    after_seq = system[-1].seq if system else 0
    run, truncated = await _newest_run(read, after_seq, Selection(budget, stale_before))
    return ContextWindow(
        messages=[input_message(row) for row in [*system, *run]],
        token_count=budget.tokens,
        max_tokens=budget.max_tokens,
        truncated=truncated,
        encoding=budget.counter.encoding,
        exact=budget.counter.exact,
    )


class _Row:
    """A row read along a branch (a mapping), with the attribute access of a result row."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[Any, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


Read = Callable[..., Awaitable[Sequence[Any]]]


async def _system_prefix(read: Read, budget: Budget) -> list[Any]:
    """The conversation's leading system messages, read forwards in small LIMITed pages
    (a LIMIT keeps the planner on the index, whatever the conversation's length); an error
    as soon as they pass the token or byte budget."""
    prefix: list[Any] = []
    after = 0
    while True:
        rows = await read(
            ascending=True, limit=_SYSTEM_CHUNK, past=after, max_bytes=budget.bytes_left
        )
        await budget.count(list(itertools.takewhile(lambda row: row.role == "system", rows)))
        for row in rows:
            if row.role == ITEM_ROLE:
                continue
            if row.role != "system":
                return prefix
            if not budget.take([row]):
                raise ValidationError(
                    "the leading system messages alone need more than "
                    f"{budget.max_tokens} tokens or {budget.max_bytes} bytes",
                    loc=("max_tokens",),
                )
            prefix.append(row)
        if len(rows) < _SYSTEM_CHUNK:
            return prefix
        after = rows[-1].seq


async def _newest_run(read: Read, after_seq: int, selection: Selection) -> tuple[list[Any], bool]:
    """Feed the selection from the newest message backwards: chunks start small and grow
    fourfold (few statements; rows read stay within four times what fits, plus the first
    chunk). Every message costs at least TOKENS_PER_MESSAGE, which bounds how many can fit at
    all; the byte budget bounds what one read returns."""
    budget = selection.budget
    most = (budget.max_tokens - budget.tokens) // tokens.TOKENS_PER_MESSAGE + 1
    chunk = min(_FIRST_CHUNK, most)
    below: int | None = None
    while True:
        room = budget.bytes_left
        rows = await read(ascending=False, limit=chunk, past=after_seq, until=below, max_bytes=room)
        await budget.count(rows)
        if selection.feed(rows):
            return selection.run, True
        if len(rows) < chunk:
            # Fewer rows than asked: the history ended, or the byte budget cut the read
            # (the row that crossed it came back; it did not fit, or was left out).
            return selection.run, sum(row.size for row in rows) > room
        below = rows[-1].seq
        chunk = min(_MAX_CHUNK, chunk * 4, most)
