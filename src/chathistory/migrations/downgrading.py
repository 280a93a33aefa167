"""Downgrades that say what they lose before they run, and refuse to lose it unless told.

Every downgrade keeps every row of the tables it leaves (SQLite included: no table that others
reference with ``ON DELETE CASCADE`` is rebuilt). What it cannot keep is what the older schema
has no place for; :func:`downgrade_losses` counts it on the database at hand, per kind:

- below ``0012_items``: items as they were given (their ids, statuses and the keys the chat
  format has no place for); an item with no chat form (reasoning, a hosted tool call, an
  unknown type) keeps its row as an assistant message with empty content;
- below ``0007_branches``: each branched conversation is flattened into one chain of all its
  messages in ``seq`` order (none is deleted; after an upgrade the last one is current, each
  message's parent is the one before it, and the messages that were off the active branch are
  on it);
- below ``0006_streaming_turns``: ``in_progress``/``incomplete`` statuses (they read as
  ``completed`` after an upgrade) and the time of a message's last streaming update;
- below ``0005_conversation_lifecycle``: ``archived``, ``pinned`` and ``expires_at`` (an expired
  conversation not purged yet is visible again);
- below ``0003_message_extras``: assistant messages' refusal, annotations, audio and
  function_call (one that holds nothing else keeps its refusal as a refusal content part, or
  else gets an empty string as its content);
- to ``base``: everything (every table is dropped).

Derived data is not a loss: the search index (``0004``), the open tool calls and whether a
conversation had a user message (``0002``) are computed again by the upgrade.

    losses = await downgrade_losses(url, "0006_streaming_turns")      # nothing changes
    await downgrade(url, "0006_streaming_turns")                      # DataLossError if any
    await downgrade(url, "0006_streaming_turns", allow_data_loss=True)

Each count reads at most :data:`BOUND` + 1 rows (``count_is_lower_bound`` past it): branches
through ``conversation_paths`` (rows of branched conversations only), the other kinds through
one bounded scan of ``conversations`` or ``messages`` each. Stop writers before a downgrade: what
is written between the check and the downgrade is not in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chathistory import migrations
from chathistory.errors import ChatHistoryError, ConfigurationError

BOUND = 10_000  # rows a count reads at most (past it: "more than 10,000")
SHOWN = 5  # conversations named in the branches' report


class DataLossError(ChatHistoryError):
    """The downgrade would lose data (``losses``) and was not allowed to."""

    def __init__(self, plan: DowngradePlan) -> None:
        self.plan = plan
        listed = "; ".join(loss.detail for loss in plan.losses)
        super().__init__(
            f"downgrading to {plan.target or 'base'} would lose data: {listed}. Nothing was "
            "changed (allow the loss to downgrade anyway)"
        )


@dataclass(frozen=True, slots=True)
class Loss:
    """What the downgrade of ``revision`` would lose on this database: ``count`` of ``kind``
    (at least that many when ``count_is_lower_bound``), said in ``detail``."""

    revision: str
    kind: str
    count: int
    count_is_lower_bound: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DowngradePlan:
    """A downgrade from ``current`` to ``target`` (``None``: base): the migrations it undoes,
    newest first, and what it would lose."""

    current: str | None
    target: str | None
    undone: list[str]
    losses: list[Loss]


async def plan_downgrade(target: str | AsyncEngine, revision: str) -> DowngradePlan:
    """What downgrading to ``revision`` would undo and lose; changes nothing.
    ``ConfigurationError`` when ``revision`` is unknown or not below the database's."""
    plan: DowngradePlan = await migrations.with_connection(
        target, lambda connection: _plan(connection, revision)
    )
    return plan


async def downgrade_losses(target: str | AsyncEngine, revision: str) -> list[Loss]:
    """What downgrading to ``revision`` would lose on this database (empty: nothing)."""
    return (await plan_downgrade(target, revision)).losses


async def downgrade(
    target: str | AsyncEngine, revision: str, *, allow_data_loss: bool = False
) -> DowngradePlan:
    """Downgrade to ``revision`` after checking what it would lose: :class:`DataLossError`
    (nothing changed) when it would lose anything, unless ``allow_data_loss``."""
    plan = await plan_downgrade(target, revision)
    if plan.losses and not allow_data_loss:
        raise DataLossError(plan)
    if plan.undone:
        await migrations.downgrade(target, plan.target or "base")
    return plan


def _plan(connection: Connection, revision: str) -> DowngradePlan:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    current = migrations.read_revision(connection)
    try:
        wanted = None if revision == "base" else script.get_revision(revision)
        now = None if current is None else script.get_revision(current)
    except CommandError as exc:
        raise ConfigurationError(f"unknown revision: {exc}") from None
    target = None if wanted is None else wanted.revision
    undone: list[str] = []
    step = now
    while step is not None and step.revision != target:
        undone.append(step.revision)
        below = step.down_revision
        assert below is None or isinstance(below, str)  # one line of history
        step = None if below is None else script.get_revision(below)
    if step is None and target is not None:
        raise ConfigurationError(
            f"{target} is not below the database's revision ({current or 'none'}): "
            "`db downgrade` only goes down (`db upgrade` goes up)"
        )
    losses = [loss for name in undone for loss in _CHECKS.get(name, _none)(connection)]
    return DowngradePlan(current=current, target=target, undone=undone, losses=losses)


def _none(connection: Connection) -> list[Loss]:
    return []


def _bounded(connection: Connection, query: sa.Select[Any]) -> tuple[list[Any], bool]:
    rows = list(connection.execute(query.limit(BOUND + 1)).all())
    return rows[:BOUND], len(rows) > BOUND


def _at_least(count: int, more: bool) -> str:
    return f"more than {count:,}" if more else f"{count:,}"


_C = sa.table(
    "conversations",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("message_count", sa.Integer()),
    sa.column("archived", sa.Boolean()),
    sa.column("pinned", sa.Boolean()),
    sa.column("expires_at", sa.DateTime(timezone=True)),
)
_M = sa.table(
    "messages",
    sa.column("content", sa.JSON()),
    sa.column("tool_calls", sa.JSON()),
    sa.column("extras", sa.JSON()),
    sa.column("status", sa.String()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_P = sa.table(
    "conversation_paths",
    sa.column("conversation_id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("lo", sa.Integer()),
    sa.column("hi", sa.Integer()),
)


_I = sa.table("messages", sa.column("role", sa.String()), sa.column("item_id", sa.Text()))


def _items(connection: Connection) -> list[Loss]:
    query = sa.select(_I.c.role).where(_I.c.item_id.is_not(None))
    rows, more = _bounded(connection, query)
    if not rows:
        return []
    bare = sum(row.role == "item" for row in rows)
    detail = f"{_at_least(len(rows), more)} items would be dropped as items (kept as messages)"
    if bare:
        detail += (
            f"; {bare:,} of them have no chat message of their own and would become "
            "assistant messages with empty content"
        )
    return [Loss("0012_items", "items", len(rows), more, detail)]


def _branches(connection: Connection) -> list[Loss]:
    """Branched conversations (the only ones with ``conversation_paths`` rows) and how many of
    their messages lie off the active branch (every message but the path's)."""
    query = (
        sa.select(
            _P.c.user_id,
            _P.c.conversation_id,
            _C.c.message_count,
            sa.func.sum(_P.c.hi - _P.c.lo + 1).label("active"),
        )
        .join(_C, sa.and_(_C.c.id == _P.c.conversation_id, _C.c.user_id == _P.c.user_id))
        .group_by(_P.c.user_id, _P.c.conversation_id, _C.c.message_count)
        .order_by(_P.c.user_id, _P.c.conversation_id)
    )
    rows, more = _bounded(connection, query)
    if not rows:
        return []
    off = sum(int(row.message_count) - int(row.active) for row in rows)
    named = ", ".join(f"{row.conversation_id} of {row.user_id}" for row in rows[:SHOWN])
    named += ", …" if len(rows) > SHOWN else ""
    return [
        Loss(
            "0007_branches",
            "branches",
            len(rows),
            more,
            f"{_at_least(len(rows), more)} branched conversations ({off:,} messages off their "
            f"active branch) would be flattened into one chain each, in seq order ({named})",
        )
    ]


def _streaming(connection: Connection) -> list[Loss]:
    query = sa.select(_M.c.status, _M.c.updated_at).where(
        sa.or_(_M.c.status != "completed", _M.c.updated_at.is_not(None))
    )
    rows, more = _bounded(connection, query)
    unfinished = sum(row.status != "completed" for row in rows)
    updated = sum(row.updated_at is not None for row in rows)
    losses = []
    if unfinished:
        losses.append(
            Loss(
                "0006_streaming_turns",
                "status",
                unfinished,
                more,
                f"{_at_least(unfinished, more)} messages' status (in_progress or incomplete) "
                "would be dropped: they read as completed after an upgrade",
            )
        )
    if updated:
        losses.append(
            Loss(
                "0006_streaming_turns",
                "updated_at",
                updated,
                more,
                f"{_at_least(updated, more)} messages' updated_at (their last streaming "
                "update) would be dropped",
            )
        )
    return losses


def _lifecycle(connection: Connection) -> list[Loss]:
    query = sa.select(_C.c.archived, _C.c.pinned, _C.c.expires_at).where(
        sa.or_(_C.c.archived, _C.c.pinned, _C.c.expires_at.is_not(None))
    )
    rows, more = _bounded(connection, query)
    if not rows:
        return []
    now = datetime.now(UTC)

    def expired(value: Any) -> bool:  # aware on PostgreSQL, naive UTC on SQLite
        if value is None:
            return False
        return bool((value if value.tzinfo else value.replace(tzinfo=UTC)) <= now)

    archived = sum(bool(row.archived) for row in rows)
    pinned = sum(bool(row.pinned) for row in rows)
    expiring = sum(row.expires_at is not None for row in rows)
    gone = sum(expired(row.expires_at) for row in rows)
    detail = (
        f"{_at_least(len(rows), more)} conversations' lifecycle would be dropped "
        f"({archived:,} archived, {pinned:,} pinned, {expiring:,} with an expiry"
        + (f", {gone:,} of them expired and not purged yet: visible again" if gone else "")
        + ")"
    )
    return [Loss("0005_conversation_lifecycle", "lifecycle", len(rows), more, detail)]


def _extras(connection: Connection) -> list[Loss]:
    query = sa.select(
        sa.and_(_M.c.content.is_(None), _M.c.tool_calls.is_(None)).label("only")
    ).where(_M.c.extras.is_not(None))
    rows, more = _bounded(connection, query)
    if not rows:
        return []
    only = sum(bool(row.only) for row in rows)
    detail = (
        f"{_at_least(len(rows), more)} messages' refusal/annotations/audio/function_call "
        "would be dropped"
        + (
            f" ({only:,} of them hold nothing else: their content becomes their refusal as a "
            "refusal part, or else an empty string)"
            if only
            else ""
        )
    )
    return [Loss("0003_message_extras", "extras", len(rows), more, detail)]


def _everything(connection: Connection) -> list[Loss]:
    rows, more = _bounded(connection, sa.select(_C.c.id))
    if not rows:
        return []
    return [
        Loss(
            "0001_initial",
            "everything",
            len(rows),
            more,
            f"every table would be dropped: {_at_least(len(rows), more)} conversations and "
            "all their messages deleted",
        )
    ]


_CHECKS: dict[str, Callable[[Connection], list[Loss]]] = {
    "0012_items": _items,
    "0007_branches": _branches,
    "0006_streaming_turns": _streaming,
    "0005_conversation_lifecycle": _lifecycle,
    "0003_message_extras": _extras,
    "0001_initial": _everything,
}
