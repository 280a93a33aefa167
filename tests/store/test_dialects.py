"""The backend is chosen once (``store/dialects/``): the rooms never test it themselves, and
each PostgreSQL statement takes the parameters its named tuple lists. No database needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chathistory.store import dialects
from chathistory.store.dialects.postgresql import appends, branched, listing, params, reads

STORE = Path(dialects.__file__).parent.parent
NOT_ROOMS = {"database.py"}  # it chooses the dialect
BACKEND_TESTS = re.compile(
    r"\.postgres\b|dialect\.name\b|postgresql\.insert|sqlite\.insert|if postgres\b"
)


def test_the_rooms_never_test_the_backend() -> None:
    rooms = [p for p in STORE.glob("*.py") if p.name not in NOT_ROOMS]
    assert len(rooms) > 10
    found = [
        f"{room.name}: {line.strip()}"
        for room in rooms
        for line in room.read_text().splitlines()
        if BACKEND_TESTS.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []


def test_each_statement_takes_its_tuples_parameters() -> None:
    """What each module checks at import, shown to fail on a statement that differs."""
    params.takes(params.Read, reads.RANGE_SQL.values())
    params.takes(params.BudgetedRead, [*reads.PAGE_SQL.values(), *branched.PAGE_SHARE_SQL.values()])
    params.takes(params.PageAfter, [s for (_, _, after), s in listing.LIST_SQL.items() if after])
    params.takes(params.Append, [appends.APPEND_SQL[False]])
    params.takes(params.Append, [appends.BRANCHED_APPEND_SQL[True]], less=1)
    with pytest.raises(RuntimeError):
        params.takes(params.Read, reads.PAGE_SQL.values())
    with pytest.raises(RuntimeError):
        params.takes(params.Append, [appends.APPEND_SQL[True]])
