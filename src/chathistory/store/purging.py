"""The purge (SPEC 9): delete the expired conversations and, with an age, those nobody updated
for that long (but pinned ones), their messages with them (the foreign keys' cascade).

Bounded batches, each its own short transaction, so a large purge never holds locks for long
(each dialect's ``purge_batch``, :mod:`chathistory.store.dialects`):

- PostgreSQL: ``SELECT id ... LIMIT n FOR UPDATE SKIP LOCKED`` picks a batch and locks it (a
  second purger skips those rows and takes others; a row an appender holds is skipped too), then
  ``DELETE ... WHERE id IN (...) AND <still due> RETURNING message_count``. An appender that
  comes after the lock waits for the batch to commit and then finds the conversation gone (404),
  as if the purge had run a moment earlier; one that came before moved ``updated_at`` past the
  cutoff, so the conversation is not due any more.
- SQLite: one ``DELETE ... WHERE id IN (SELECT ... LIMIT n) AND <still due> RETURNING`` per
  batch; the database's write lock serializes purgers and appenders.

``duty`` throttles the purge: after a batch that took ``t`` seconds it pauses ``t * (1 - duty)
/ duty`` (a duty of 0.5 pauses as long as the batch ran), so it works for that fraction of its
time and leaves the rest to the writers; 1 runs its batches back to back. What the writers wait
on beside a purge is the WAL (each batch writes its deletes' WAL, which their commits then
flush): the duty cycle halves that rate at 0.5. A dry run never pauses.

Every statement names the user. A purge of every user first finds the users with something due
(one statement over every shard on Citus, paged by user id: the documented multi-shard step),
then purges each one's conversations as above, on that user's shard.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, false, func, or_, select

from chathistory.errors import ValidationError
from chathistory.models import utcnow
from chathistory.schemas.lifecycle import PurgeReport
from chathistory.store.database import Database
from chathistory.store.rows import C

DEFAULT_BATCH: Final = 500
DEFAULT_DUTY: Final = 0.5
MAX_BATCH: Final = 10_000
_USERS_CHUNK: Final = 1000
_clock = time.perf_counter  # a batch's own time, for its pause

Progress = Callable[[int], object]
Sleep = Callable[[float], Awaitable[object]]


class _Rule:
    """One reason a conversation is due, and the order its batches take (on its index)."""

    def __init__(self, condition: ColumnElement[bool], *order: Any) -> None:
        self.condition = condition
        self.order = order


def _rules(now: datetime, older_than: timedelta | None) -> list[_Rule]:
    rules = [_Rule(C.expires_at <= now, C.expires_at, C.id)]
    if older_than is not None:
        stale = and_(C.updated_at < now - older_than, C.pinned == false())
        rules.append(_Rule(stale, C.updated_at, C.id))
    return rules


def _check(older_than: object, dry_run: object, batch_size: object, duty: object) -> None:
    if older_than is not None and (
        not isinstance(older_than, timedelta) or older_than <= timedelta(0)
    ):
        raise ValidationError("must be a positive duration (a timedelta)", loc=("older_than",))
    if not isinstance(dry_run, bool):
        raise ValidationError("must be true or false", loc=("dry_run",))
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not 1 <= batch_size <= MAX_BATCH
    ):
        raise ValidationError(f"must be an integer from 1 to {MAX_BATCH}", loc=("batch_size",))
    if isinstance(duty, bool) or not isinstance(duty, int | float) or not 0 < duty <= 1:
        raise ValidationError("must be a number above 0, at most 1", loc=("duty",))


async def purge(
    db: Database,
    *,
    older_than: timedelta | None,
    user_id: str | None,
    dry_run: bool,
    batch_size: int,
    progress: Progress | None,
    duty: float = DEFAULT_DUTY,
    sleep: Sleep = asyncio.sleep,
) -> PurgeReport:
    _check(older_than, dry_run, batch_size, duty)
    now = utcnow()
    try:
        rules = _rules(now, older_than)
    except OverflowError:
        raise ValidationError("is too long", loc=("older_than",)) from None
    due = or_(*(rule.condition for rule in rules))
    users = _one(user_id) if user_id is not None else _users_with(db, due)
    conversations_done = messages_done = 0
    async for user in users:
        if dry_run:
            found, held = await _count(db, user, due)
            conversations_done += found
            messages_done += held
            await _report(progress, found)
            continue
        for rule in rules:
            while True:
                started = _clock()
                deleted = await _batch(db, user, rule, batch_size)
                if not deleted:
                    break
                took = _clock() - started
                conversations_done += len(deleted)
                messages_done += sum(deleted)
                await _report(progress, len(deleted))
                if duty < 1:
                    await sleep(took * (1 - duty) / duty)
    return PurgeReport(conversations_done, messages_done, dry_run)


async def _report(progress: Progress | None, count: int) -> None:
    if progress is not None:
        answer = progress(count)
        if inspect.isawaitable(answer):
            await answer


async def _one(user_id: str) -> AsyncIterator[str]:
    yield user_id


async def _users_with(db: Database, due: ColumnElement[bool]) -> AsyncIterator[str]:
    """Every user with a conversation due, in order, a page at a time (over every shard)."""
    after: str | None = None
    while True:
        query = select(C.user_id).where(due).group_by(C.user_id).order_by(C.user_id)
        if after is not None:
            query = query.where(C.user_id > after)
        async with db.transaction() as conn:
            users = list((await conn.execute(query.limit(_USERS_CHUNK))).scalars())
        for user in users:
            yield user
        if len(users) < _USERS_CHUNK:
            return
        after = users[-1]


async def _count(db: Database, user_id: str, due: ColumnElement[bool]) -> tuple[int, int]:
    query = select(func.count(), func.coalesce(func.sum(C.message_count), 0)).where(
        C.user_id == user_id, due
    )
    async with db.transaction() as conn:
        found, held = (await conn.execute(query)).one()
    return int(found), int(held)


async def _batch(db: Database, user_id: str, rule: _Rule, size: int) -> list[int]:
    """Delete one batch of the user's conversations due by ``rule`` (checked again as they
    are deleted); the message counts of those deleted, empty when none was left."""
    pick = (
        select(C.id).where(C.user_id == user_id, rule.condition).order_by(*rule.order).limit(size)
    )
    async with db.transaction() as conn:
        return await db.dialect.purge_batch(conn, user_id, pick, rule.condition)
