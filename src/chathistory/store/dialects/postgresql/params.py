"""The parameters of PostgreSQL's hand-written statements, in their ``$n`` order: one
:class:`~typing.NamedTuple` per statement shape, built with keywords and passed as
``driver.fetch(statement, *params)``, so the order is named in code. :func:`takes` checks at
import that each statement uses exactly as many parameters as its tuple holds."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, NamedTuple

MAX_SEQ: Final = 2**31 - 1  # the ``until`` of a range open upwards
MAX_SIZE: Final = 2**31 - 1  # a row's size is an int4


class Read(NamedTuple):
    """A range of messages (``RANGE_SQL``, and the branched ``RANGE_SQL``)."""

    conversation_id: uuid.UUID
    user_id: str
    past: int
    until: int
    limit: int | None
    now: datetime


class BudgetedRead(NamedTuple):
    """A range of messages within a byte budget (``PAGE_SQL``: the page's bytes;
    ``PAGE_SHARE_SQL``, and the branched one: each row's share of them)."""

    conversation_id: uuid.UUID
    user_id: str
    past: int
    until: int
    limit: int | None
    budget: int
    now: datetime


class FirstPage(NamedTuple):
    """The first page of a user's conversations (``LIST_SQL[..., False]``)."""

    user_id: str
    now: datetime
    limit: int


class PageAfter(NamedTuple):
    """The page after a keyset position (``LIST_SQL[..., True]``)."""

    user_id: str
    now: datetime
    updated_at: datetime
    id: uuid.UUID
    limit: int


class Append(NamedTuple):
    """A one-statement append (``APPEND_SQL`` and its forms): for a batch each message column
    is an array, one value a message, and ``parents`` holds each message's parent within the
    batch; for one message (``[True]``) each column is its value and ``parents`` is left out
    (:meth:`one`: the message follows the current one)."""

    conversation_id: uuid.UUID
    user_id: str
    how_many: int
    now: datetime
    has_user_message: bool
    title: str | None
    ids: Any
    roles: Any
    contents: Any
    names: Any
    metadata: Any
    token_counts: Any
    words: Any
    last_id: uuid.UUID
    parents: Any

    def one(self) -> tuple[Any, ...]:
        """The parameters of the one-message form: all but ``parents``."""
        return self[:-1]


class Parents(NamedTuple):
    """The parents' child counts of a branched read (``branched._PARENTS_SQL``)."""

    conversation_id: uuid.UUID
    user_id: str
    seqs: list[int]


_PARAMETER = re.compile(r"\$(\d+)")


def takes(params: type[tuple[Any, ...]], statements: Iterable[str], *, less: int = 0) -> None:
    """Raise :class:`RuntimeError` unless each statement's parameters are ``$1`` to ``$n``,
    ``n`` the fields of ``params`` (but ``less``)."""
    count = len(params._fields) - less  # type: ignore[attr-defined]
    for statement in statements:
        used = {int(n) for n in _PARAMETER.findall(statement)}
        if used != set(range(1, count + 1)):
            raise RuntimeError(f"a statement's parameters are not {params.__name__}'s")


__all__ = [
    "MAX_SEQ",
    "MAX_SIZE",
    "Append",
    "BudgetedRead",
    "FirstPage",
    "PageAfter",
    "Parents",
    "Read",
    "takes",
]
