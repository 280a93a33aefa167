"""Search's bounds (docs/search.md): hits within the response byte budget, and each page's
work bounded by index candidates and a walk of the newest rows, counted in rows."""

from __future__ import annotations

import pytest

from chathistory import ChatHistory, ValidationError, pagination
from chathistory.db import create_engine
from chathistory.store import search, search_syntax


async def test_hits_stop_at_the_response_byte_budget(backend_url: str, user: str) -> None:
    store = ChatHistory(create_engine(backend_url), owns_engine=True, max_response_bytes=25_000)
    try:
        conv = await store.create_conversation(user)
        big = "needle " + "x" * 10_000
        await store.add_messages(user, conv.id, [{"role": "user", "content": big}] * 5)
        first = await store.search_messages(user, "needle", limit=100)
        # 10 KB each: the first two fit 25 KB, the third would cross it.
        assert len(first.data) == 2 and first.has_more
        sizes = [len(hit.message.content or "") for hit in first.data]
        assert sum(sizes) <= 25_000
        seen = [hit.message.id for hit in first.data]
        cursor = first.next_cursor
        while cursor is not None:
            page = await store.search_messages(user, "needle", limit=100, cursor=cursor)
            assert 1 <= len(page.data) <= 2 or not page.has_more
            seen += [hit.message.id for hit in page.data]
            cursor = page.next_cursor if page.has_more else None
        assert len(seen) == len(set(seen)) == 5
        # One message over the whole budget still comes back alone, so a walk moves on.
        huge = await store.add_message(user, conv.id, "user", "needle " + "y" * 40_000)
        alone = await store.search_messages(user, "needle", limit=100)
        assert [hit.message.id for hit in alone.data] == [huge.id] and alone.has_more
    finally:
        await store.close()


async def test_a_page_looks_at_a_bounded_number_of_rows(
    store: ChatHistory, backend_url: str, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "PROBE_ROWS", 10)
    monkeypatch.setattr(search, "MAX_CANDIDATES", 20)
    monkeypatch.setattr(search, "WALK_ROWS", 30)
    conv = await store.create_conversation(user)
    texts = [
        f"alpha one beta two {'zanzibar' if n % 25 == 0 else ''} {'gamma' if n < 60 else ''}"
        for n in range(100)
    ]
    # One append each: the newest rows are the last texts (a batch's messages share a time).
    stored = [await store.add_message(user, conv.id, "user", text) for text in texts]
    newest_first = sorted(stored, key=lambda m: (m.created_at, m.id), reverse=True)
    # Rare words: 4 candidates, every hit in one page.
    rare = await store.search_messages(user, "zanzibar", limit=10)
    assert len(rare.data) == 4 and not rare.has_more
    # Shapes that match nothing among 100 candidates: each page probes the newest 10 rows,
    # then walks 30, no more (on PostgreSQL "alpha" is met in the probe, so no index read;
    # "gamma", absent from the newest 40, is read from the index until 20 candidates, then
    # walked). SQLite's FTS5 answers the phrases and exclusions of its candidates in its
    # index: "gamma -gamma" has none there.
    on_postgres = not backend_url.startswith("sqlite")
    many = " OR ".join(f"absent{n}" for n in range(search.INDEX_WORDS + 1))  # no index read
    for query in ("alpha -alpha", '"alpha beta"', "alpha -one", "alpha", "gamma -gamma", many):
        pages, cursor = 0, None
        found = 0
        while True:
            page = await store.search_messages(
                user, query, limit=10, cursor=cursor, role="tool" if query == "alpha" else None
            )
            pages += 1
            found += len(page.data)
            if not page.has_more:
                break
            assert page.next_cursor is not None
            _, message_id = pagination.decode_search_cursor(page.next_cursor)
            # The page stopped after exactly 30 more rows of the history.
            assert message_id == newest_first[30 * pages - 1].id, query
            cursor = page.next_cursor
        walks = on_postgres or query != "gamma -gamma"
        assert found == 0 and pages == (4 if walks else 1), query  # 30 + 30 + 30 + 10 rows


def test_snippets_read_no_further_than_the_excerpt() -> None:
    read = []
    real = search_syntax._spans

    def counted(text: str):  # type: ignore[no-untyped-def]
        for span in real(text):
            read.append(span)
            yield span

    long_text = "needle " + "word " * 100_000
    try:
        search_syntax._spans = counted  # type: ignore[assignment]
        cut = search_syntax.snippet(long_text, frozenset({"needle"}))
    finally:
        search_syntax._spans = real  # type: ignore[assignment]
    assert cut.startswith("<mark>needle</mark>") and cut.endswith("…")
    assert len(read) < 100  # words of the excerpt, not the 100,001 of the text


async def test_refusal_parts_are_searched(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    parts = [{"type": "refusal", "refusal": "I will not discuss okapis"}]
    stored = await store.add_message(user, conv.id, "assistant", parts)
    page = await store.search_messages(user, "okapis")
    assert [hit.message.id for hit in page.data] == [stored.id]
    assert "<mark>okapis</mark>" in page.data[0].snippet


async def test_a_long_title_is_counted_in_characters(store: ChatHistory, user: str) -> None:
    with pytest.raises(ValidationError, match="at most 255 characters, not 300"):
        await store.create_conversation(user, title="t" * 300)
