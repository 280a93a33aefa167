"""Byte budgets for what a read returns: a message page and a context window stop at
``max_response_bytes`` of message content and tool calls (the JSON text the database stores),
inside the database, so neither the server nor the client holds more than the budget plus one
message, however large the stored messages are.

The database numbers the rows of a read by their running size and returns those that start
within the budget; :func:`within_bytes` then drops the one that crosses it (a read always
returns at least one row, so a page can always move on). On PostgreSQL a page first reads
without the running size: every row's size, and the content only of rows within their share
of the budget (:data:`~chathistory.store.dialects.postgresql.reads.PAGE_SHARE_SQL`);
:func:`starting_within` makes the same cut from the sizes, and only a large row among those
kept needs the running size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, cast, func, select

from chathistory.models import messages

_M = messages.c


def stored_size(length: Any, kind: Any) -> ColumnElement[int]:
    """Bytes of a message's content, tool calls and extras as stored (JSON text): ``length``
    of each cast to ``kind``, as a dialect measures them (its ``size``)."""
    total: ColumnElement[int] = func.coalesce(length(cast(_M.content, kind)), 0)
    for column in (_M.tool_calls, _M.extras):
        total = total + func.coalesce(length(cast(column, kind)), 0)
    return total


def bounded_range(
    columns: Sequence[ColumnElement[Any]],
    owned: Iterable[ColumnElement[bool]],
    size: ColumnElement[int],
    *,
    ascending: bool,
    limit: int | None,
    past: int | None = None,
    until: int | None = None,
    max_bytes: int | None = None,
) -> Select[Any]:
    """Rows of one conversation with ``past < seq < until`` in seq order, at most ``limit``;
    with ``max_bytes``, only rows that start within that many bytes (each with its ``size``)."""
    query = select(*columns).where(*owned)
    if past is not None:
        query = query.where(_M.seq > past)
    if until is not None:
        query = query.where(_M.seq < until)
    order = _M.seq.asc() if ascending else _M.seq.desc()
    if max_bytes is None:
        return query.order_by(order).limit(limit)
    rows = query.add_columns(size.label("size")).order_by(order).limit(limit).subquery()
    running = func.sum(rows.c.size).over(
        order_by=rows.c.seq.asc() if ascending else rows.c.seq.desc()
    )
    numbered = select(rows, running.label("running")).subquery()
    kept = [numbered.c[column.name] for column in rows.c]
    return (
        select(*kept)
        .where(numbered.c.running - numbered.c.size <= max_bytes)
        .order_by(numbered.c.seq.asc() if ascending else numbered.c.seq.desc())
    )


def starting_within(sizes: Sequence[int], max_bytes: int) -> int:
    """How many rows of these ``sizes`` start within ``max_bytes``: what the database's
    running-size cut keeps (at most one past the budget; always the first)."""
    used = 0
    for index, size in enumerate(sizes):
        if used > max_bytes:
            return index
        used += size
    return len(sizes)


def within_bytes(sizes: Sequence[int], max_bytes: int) -> int:
    """How many rows of these ``sizes`` fit in ``max_bytes``; at least one."""
    used = 0
    for index, size in enumerate(sizes):
        used += size
        if used > max_bytes and index > 0:
            return index
    return len(sizes)


__all__ = ["bounded_range", "starting_within", "stored_size", "within_bytes"]
