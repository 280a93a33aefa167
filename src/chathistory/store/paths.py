"""A branch as seq ranges (SPEC 11; :mod:`chathistory.store.branches`): pure helpers, no
database access here."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

Path = list[tuple[int, int]]


def linear(count: int) -> Path:
    """The branch of a conversation that never branched: every message."""
    return [(1, count)] if count else []


def extended(path: Path, first: int, last: int) -> Path:
    """``path`` followed by the messages ``first`` to ``last`` (a run, or the rest of one)."""
    if path and path[-1][1] == first - 1:
        return [*path[:-1], (path[-1][0], last)]
    return [*path, (first, last)]


def up_to(path: Path, seq: int) -> Path:
    """The part of ``path`` up to and including ``seq`` (which is on it)."""
    return [(lo, min(hi, seq)) for lo, hi in path if lo <= seq]


def clipped(
    path: Path, ascending: bool, past: int | None, until: int | None
) -> Iterator[tuple[int, int]]:
    """The exclusive seq bounds ``(after, before)`` to read in each range of ``path`` that
    holds seqs with ``past < seq < until``, in reading order."""
    low = 0 if past is None else past
    high = 2**31 if until is None else until
    for lo, hi in path if ascending else reversed(path):
        after, before = max(low, lo - 1), min(high, hi + 1)
        if after + 1 < before:
            yield after, before


def seqs(path: Path, ascending: bool, limit: int, past: int | None, until: int | None) -> list[int]:
    """The seqs of the first ``limit`` messages of ``path`` with ``past < seq < until``, in
    reading order."""
    found: list[int] = []
    for after, before in clipped(path, ascending, past, until):
        span = range(after + 1, before) if ascending else range(before - 1, after, -1)
        found += span[: limit - len(found)]
        if len(found) == limit:
            break
    return found


def walked(starts: list[int], forks: list[int], seq: int) -> Path:
    """The branch ending at ``seq`` of a tree whose runs begin at ``starts`` (increasing, the
    first at 1) after the messages ``forks`` (0: a first message): run by run back to the
    root, with no database access (an import knows its tree)."""
    found: Path = []
    while seq > 0:
        run = bisect.bisect_right(starts, seq) - 1
        found.append((starts[run], seq))
        seq = forks[run]
    return found[::-1]
