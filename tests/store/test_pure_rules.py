"""The store's pure rules, tested directly with no database: branch paths (``store/paths.py``),
search's words, queries and snippets (``store/search_syntax.py``), the context window's chooser
(``store/context.py``: :class:`Budget` and :class:`Selection`), tool pairing's plan
(``store/tool_pairing.py``) and the byte budgets of reads (``store/limits.py``). The same rules
run through every backend in the other tests of this folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chathistory import ValidationError, tokens
from chathistory.schemas import MessageCreate
from chathistory.store import limits, paths, search_syntax, tool_pairing
from chathistory.store.context import Budget, Selection
from chathistory.store.search_syntax import parse_query, snippet, words

# -- paths ----------------------------------------------------------------------------------

TWO_RUNS: paths.Path = [(1, 3), (6, 9)]


def test_linear() -> None:
    assert paths.linear(0) == []
    assert paths.linear(1) == [(1, 1)]
    assert paths.linear(5) == [(1, 5)]


def test_extended_joins_a_following_run_and_keeps_the_input() -> None:
    assert paths.extended([], 1, 3) == [(1, 3)]
    path = [(1, 3)]
    assert paths.extended(path, 4, 6) == [(1, 6)]  # right after the last range: one range
    assert paths.extended(path, 6, 7) == [(1, 3), (6, 7)]  # a gap: a range of its own
    assert path == [(1, 3)]


def test_up_to() -> None:
    assert paths.up_to(TWO_RUNS, 1) == [(1, 1)]
    assert paths.up_to(TWO_RUNS, 3) == [(1, 3)]
    assert paths.up_to(TWO_RUNS, 6) == [(1, 3), (6, 6)]
    assert paths.up_to(TWO_RUNS, 9) == TWO_RUNS
    assert paths.up_to([], 4) == []


def test_clipped_bounds_are_exclusive_and_in_reading_order() -> None:
    assert list(paths.clipped(TWO_RUNS, True, None, None)) == [(0, 4), (5, 10)]
    assert list(paths.clipped(TWO_RUNS, False, None, None)) == [(5, 10), (0, 4)]
    # past=3: nothing of the first range is after it
    assert list(paths.clipped(TWO_RUNS, True, 3, None)) == [(5, 10)]
    assert list(paths.clipped(TWO_RUNS, True, 2, 7)) == [(2, 4), (5, 7)]
    assert list(paths.clipped(TWO_RUNS, False, None, 7)) == [(5, 7), (0, 4)]
    assert list(paths.clipped(TWO_RUNS, True, 3, 6)) == []  # only the gap between
    assert list(paths.clipped([], True, None, None)) == []


def test_seqs() -> None:
    assert paths.seqs(TWO_RUNS, True, 4, None, None) == [1, 2, 3, 6]
    assert paths.seqs(TWO_RUNS, False, 4, None, None) == [9, 8, 7, 6]
    assert paths.seqs(TWO_RUNS, False, 5, None, None) == [9, 8, 7, 6, 3]
    assert paths.seqs(TWO_RUNS, True, 100, None, None) == [1, 2, 3, 6, 7, 8, 9]
    assert paths.seqs(TWO_RUNS, True, 10, 2, 8) == [3, 6, 7]
    assert paths.seqs(TWO_RUNS, False, 2, None, 7) == [6, 3]
    assert paths.seqs(TWO_RUNS, True, 0, None, None) == []
    assert paths.seqs([], True, 5, None, None) == []


def test_walked() -> None:
    # Runs start at 1 and 4; the run at 4 follows message 2 (a regeneration of 3).
    assert paths.walked([1, 4], [0, 2], 5) == [(1, 2), (4, 5)]
    assert paths.walked([1, 4], [0, 2], 3) == [(1, 3)]
    assert paths.walked([1, 4], [0, 2], 4) == [(1, 2), (4, 4)]
    # A second first message (fork 0) starts a root of its own.
    assert paths.walked([1, 3], [0, 0], 4) == [(3, 4)]
    assert paths.walked([1], [0], 0) == []


# -- search_syntax --------------------------------------------------------------------------


def test_words() -> None:
    assert words("") == []
    assert words("  ,.;  ") == []
    assert words("Hello, World_2 e-mail") == ["hello", "world", "2", "e", "mail"]
    assert words("Café Ünïcode") == ["café", "ünïcode"]
    assert words("e\u0301t\u00e9") == ["e\u0301t\u00e9"]  # a combining mark stays in its word
    assert words("東京タワー") == ["東", "京", "タ", "ワ", "ー"]  # unspaced: a character a word
    assert words("東京 tower") == ["東", "京", "tower"]


def test_words_are_cut_at_the_longest_word() -> None:
    longest = search_syntax.MAX_WORD_CHARS
    assert words("a" * (longest + 50)) == ["a" * longest]
    assert words("é" * (longest + 1)) == ["é" * longest]
    assert words("a" * longest) == ["a" * longest]


def test_parse_query_groups_phrases_and_exclusions() -> None:
    query = parse_query("a b OR c")  # OR binds tighter than the implicit AND
    assert query.groups == ((("a",),), (("b",), ("c",)))
    assert query.excluded == ()
    query = parse_query('"Hello world" -spam -"bad thing"')
    assert query.groups == ((("hello", "world"),),)
    assert query.excluded == (("spam",), ("bad", "thing"))
    assert parse_query("e-mail").groups == ((("e", "mail"),),)  # punctuation: a phrase
    assert parse_query("a or b").groups == ((("a",),), (("or",),), (("b",),))  # capitals only
    assert parse_query("a OR b").matched_words() == frozenset({"a", "b"})


def test_parse_query_renders_for_each_backend() -> None:
    query = parse_query('a "b c" -d')
    assert query.to_tsquery() == "('a') & ('b' <-> 'c') & !('d')"
    assert query.to_loose_tsquery() == "('a') & ('b' & 'c')"
    assert query.to_fts5() == '(("a") AND ("b c")) NOT "d"'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!! ???",  # no word
        "-only",  # exclusions only
        '-"only this"',
        "OR a",
        "a OR",
        "a OR OR b",
        "a OR -b",
        '"not closed',
        "nul \x00",
        "lone \ud800",
        "x" * (search_syntax.MAX_QUERY_CHARS + 1),
        " ".join(["w"] * (search_syntax.MAX_QUERY_WORDS + 1)),
    ],
)
def test_parse_query_refuses(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_query(text)
    assert info.value.errors[0].loc == ("query", "q")
    assert info.value.errors[0].type == "invalid_query"


def test_parse_query_limits_are_inclusive() -> None:
    most = search_syntax.MAX_QUERY_WORDS
    assert len(parse_query(" ".join(["w"] * most)).groups) == most
    assert parse_query("x" * search_syntax.MAX_QUERY_CHARS).groups == (
        (("x" * search_syntax.MAX_WORD_CHARS,),),
    )


def test_snippet_marks_and_escapes() -> None:
    assert snippet("", {"a"}) == ""
    assert snippet("hello <world>", {"world"}) == "hello &lt;<mark>world</mark>&gt;"
    assert snippet("Tom & Jerry", {"tom", "jerry"}) == "<mark>Tom</mark> &amp; <mark>Jerry</mark>"
    assert snippet("no match here", {"absent"}) == "no match here"
    assert snippet("<b>", {"x"}) == "&lt;b&gt;"  # no word at all: the start, escaped


def test_snippet_cuts_around_the_first_match() -> None:
    text = " ".join(f"w{n}" for n in range(200))
    cut = snippet(text, {"w100"})
    before = search_syntax.SNIPPET_WORDS_BEFORE
    assert cut.startswith(f"…w{100 - before} ")
    assert "<mark>w100</mark>" in cut
    assert cut.endswith("…")
    assert len(cut.replace("<mark>", "").replace("</mark>", "")) <= (
        search_syntax.SNIPPET_MAX_CHARS + 2
    )
    start = snippet(text, {"w3"})  # within the words before: from the start, uncut there
    assert start.startswith("w0 w1 w2 <mark>w3</mark>")


# -- the context window's chooser ----------------------------------------------------------

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class Row:
    """What the chooser reads of a stored message."""

    seq: int
    role: str = "user"
    token_count: int | None = 10
    size: int = 100
    status: str = "completed"
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    created_at: datetime = NOW
    updated_at: datetime | None = None
    _mapping: dict[str, Any] = field(default_factory=dict)


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def chooser(max_tokens: int = 1000, max_bytes: int = 10_000, **kwargs: Any) -> Selection:
    budget = Budget(max_tokens, max_bytes, tokens.counter(), stored_counts=True)
    return Selection(budget, **kwargs)


def newest_first(*rows: Row) -> list[Row]:
    return sorted(rows, key=lambda row: -row.seq)


def test_budget_starts_with_the_reply_priming_and_takes_whole_groups() -> None:
    budget = Budget(30, 250, tokens.counter(), stored_counts=True)
    assert budget.tokens == tokens.REPLY_PRIMING
    assert budget.take([Row(1), Row(2)])  # 3 + 20 tokens, 200 bytes
    assert not budget.take([Row(3)])  # 33 tokens > 30: nothing taken
    assert (budget.tokens, budget.bytes, budget.bytes_left) == (23, 200, 50)
    assert budget.take([Row(4, token_count=7, size=50)])  # exactly 30 tokens and 250 bytes
    assert not budget.take([Row(5, token_count=0, size=1)])  # bytes are a budget too
    assert (budget.tokens, budget.bytes) == (30, 250)


def test_budget_counts_what_has_no_stored_count() -> None:
    counter = tokens.counter()
    message = {"role": "user", "content": "hello there", "name": None, "tool_calls": None}
    row = Row(1, token_count=None, _mapping=message)
    assert Budget(100, 100, counter, stored_counts=True).cost(row) == counter.count_message(message)
    stored = Row(2, token_count=99, _mapping=message)  # counted with another encoding
    assert Budget(100, 100, counter, stored_counts=False).cost(stored) == counter.count_message(
        message
    )


def test_selection_takes_the_newest_run_that_fits() -> None:
    rows = newest_first(*(Row(seq) for seq in range(1, 6)))
    everything = chooser()
    assert everything.feed(rows) is False
    assert [row.seq for row in everything.run] == [1, 2, 3, 4, 5]
    # 3 priming + 10 a message: three messages fit in 33 tokens, not four
    some = chooser(max_tokens=33)
    assert some.feed(rows) is True
    assert [row.seq for row in some.run] == [3, 4, 5]
    none = chooser(max_tokens=12)  # 3 + 10 > 12: not even the newest
    assert none.feed(rows) is True
    assert none.run == []
    empty = chooser()
    assert empty.feed([]) is False
    assert empty.run == []


def test_selection_keeps_a_call_with_all_of_its_results() -> None:
    rows = newest_first(
        Row(1),
        Row(2, "assistant", tool_calls=[call("a"), call("b")]),
        Row(3, "tool", tool_call_id="a"),
        Row(4, "tool", tool_call_id="b"),
        Row(5, "assistant"),
    )
    whole = chooser()
    assert whole.feed(rows) is False
    assert [row.seq for row in whole.run] == [1, 2, 3, 4, 5]
    # The call and its two results cost 30 tokens together: they fit whole or not at all.
    cut = chooser(max_tokens=3 + 10 + 29)
    assert cut.feed(rows) is True
    assert [row.seq for row in cut.run] == [5]


def test_selection_leaves_out_a_call_never_all_answered() -> None:
    rows = newest_first(
        Row(1),
        Row(2, "assistant", tool_calls=[call("a"), call("b")]),
        Row(3, "tool", tool_call_id="a"),  # b never answered
        Row(4),
    )
    chosen = chooser()
    assert chosen.feed(rows) is False
    assert [row.seq for row in chosen.run] == [1, 4]


def test_selection_leaves_out_results_not_right_after_their_call() -> None:
    rows = newest_first(
        Row(1, "assistant", tool_calls=[call("a")]),
        Row(2),  # a message between the call and its result
        Row(3, "tool", tool_call_id="a"),
    )
    chosen = chooser()
    chosen.feed(rows)
    assert [row.seq for row in chosen.run] == [2]


def test_selection_leaves_out_what_still_streams() -> None:
    stale_before = NOW - timedelta(minutes=5)
    rows = newest_first(
        Row(1),
        Row(2, "assistant", status="in_progress", updated_at=NOW - timedelta(minutes=10)),
        Row(3),
        Row(4, "assistant", status="in_progress", updated_at=NOW),  # still streaming
    )
    chosen = chooser(stale_before=stale_before)
    assert chosen.feed(rows) is False
    assert [row.seq for row in chosen.run] == [1, 2, 3]  # a stale one reads as incomplete
    no_clock = chooser()  # without a stale time every in_progress message is streaming
    no_clock.feed(rows)
    assert [row.seq for row in no_clock.run] == [1, 3]


# -- tool pairing's plan -------------------------------------------------------------------


def msg(role: str, *calls: str, answers: str | None = None) -> MessageCreate:
    data: dict[str, Any] = {"role": role, "content": None if calls else "x"}
    if calls:
        data["tool_calls"] = [call(c) for c in calls]
    if answers is not None:
        data["tool_call_id"] = answers
    return MessageCreate.model_validate(data)


def test_plan_of_a_batch_without_tools() -> None:
    plan = tool_pairing.plan([msg("user"), msg("assistant")], [1, 2])
    assert plan == tool_pairing.Plan()
    assert not plan.touches_database
    assert tool_pairing.plan([], []) == tool_pairing.Plan()


def test_plan_opens_calls_and_answers_them_in_the_batch() -> None:
    opened = tool_pairing.plan([msg("assistant", "a", "b")], [7])
    assert opened.opened == {"a": 7, "b": 7}
    assert opened.closing == set()
    assert opened.touches_database
    answered = tool_pairing.plan([msg("assistant", "a", "b"), msg("tool", answers="a")], [7, 8])
    assert answered.opened == {"b": 7}
    # a call made again in the batch and answered there supersedes a stored one: drop it
    assert answered.closing == {"a"}
    assert (answered.answers_stored, answered.bad) == ({}, [])


def test_plan_answers_stored_calls() -> None:
    plan = tool_pairing.plan([msg("tool", answers="old"), msg("user")], [3, 4])
    assert plan.answers_stored == {"old": 0}
    assert plan.closing == {"old"}
    assert plan.opened == {}
    assert plan.bad == []


def test_plan_finds_second_answers() -> None:
    twice_stored = tool_pairing.plan(
        [msg("tool", answers="old"), msg("tool", answers="old")], [3, 4]
    )
    assert twice_stored.bad == [1]
    assert twice_stored.answers_stored == {"old": 0}
    twice_in_batch = tool_pairing.plan(
        [msg("assistant", "a"), msg("tool", answers="a"), msg("tool", answers="a")], [1, 2, 3]
    )
    assert twice_in_batch.bad == [2]
    assert twice_in_batch.answers_stored == {}


def test_plan_reopens_a_reused_id() -> None:
    plan = tool_pairing.plan(
        [msg("assistant", "a"), msg("tool", answers="a"), msg("assistant", "a")], [1, 2, 3]
    )
    assert plan.opened == {"a": 3}
    assert plan.closing == set()  # the stored row, if any, is replaced by the upsert
    after_stored = tool_pairing.plan([msg("tool", answers="a"), msg("assistant", "a")], [5, 6])
    assert after_stored.answers_stored == {"a": 0}
    assert after_stored.opened == {"a": 6}
    assert after_stored.closing == {"a"}


# -- limits --------------------------------------------------------------------------------


def test_starting_within() -> None:
    assert limits.starting_within([], 100) == 0
    assert limits.starting_within([10, 10, 10], 15) == 2  # the second starts at 10 <= 15
    assert limits.starting_within([10, 10, 10], 10) == 2  # starts exactly at the budget
    assert limits.starting_within([10, 10, 10], 9) == 1
    assert limits.starting_within([10, 10, 10], 30) == 3
    assert limits.starting_within([500, 1], 0) == 1  # always the first
    assert limits.starting_within([0, 0, 5], 0) == 3  # empty rows start at 0


def test_within_bytes() -> None:
    assert limits.within_bytes([], 100) == 0
    assert limits.within_bytes([10, 10, 10], 20) == 2  # exactly the budget fits
    assert limits.within_bytes([10, 10, 10], 19) == 1
    assert limits.within_bytes([10, 10, 10], 30) == 3
    assert limits.within_bytes([500, 1], 10) == 1  # at least one
    assert limits.within_bytes([5, 500], 10) == 1
    assert limits.within_bytes([0, 0, 0], 0) == 3
