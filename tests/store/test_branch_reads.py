"""A branched conversation read in one statement (PostgreSQL,
``store/dialects/postgresql/branched.py``) reads exactly what the general path reads: the same
messages, sibling numbers, pages and cursors, forward and backward, with and without the byte
budget, and appends after the newest message go on the active branch. The general path is a
store that never saw the conversation (its hint is empty); SQLite has only the general path,
and must agree too."""

from __future__ import annotations

import random
import uuid

from chathistory import ChatHistory
from chathistory.schemas import MessageRead


def _key(messages: list[MessageRead]) -> list[tuple[object, ...]]:
    return [(m.id, m.seq, m.parent_id, m.sibling_count, m.sibling_index) for m in messages]


async def _tree(store: ChatHistory, user: str) -> uuid.UUID:
    """Regenerations, edits and new first messages, many runs, the active branch through
    several of them, ending on the newest message."""
    rng = random.Random(7)
    conv = (await store.create_conversation(user)).id
    made = await store.add_messages(user, conv, [{"role": "user", "content": "q0"}])
    ids = [made[0].id]
    for n in range(60):
        choice = rng.random()
        if choice < 0.2 and len(ids) > 2:  # regenerate or edit something earlier
            parent = rng.choice(ids[:-1])
            new = await store.add_messages(
                user, conv, [{"role": "assistant", "content": f"r{n}", "parent_id": parent}]
            )
        elif choice < 0.25:  # a new first message
            new = await store.add_messages(
                user, conv, [{"role": "user", "content": f"f{n}", "parent_id": None}]
            )
        else:
            new = await store.add_messages(user, conv, [{"role": "user", "content": f"m{n}"}])
        ids.append(new[0].id)
    return conv


async def _pages(store: ChatHistory, user: str, conv: uuid.UUID, order: str, limit: int) -> list:
    pages = []
    cursor = None
    while True:
        page = await store.list_messages(user, conv, limit=limit, order=order, cursor=cursor)
        pages.append((_key(page.data), page.has_more))
        if not page.has_more:
            return pages
        cursor = page.next_cursor


async def test_one_statement_reads_match_the_general_path(store: ChatHistory, user: str) -> None:
    conv = await _tree(store, user)
    await store.get_chat_history(user, conv)  # the store now knows it branched
    for limit in (1, 3, 7, 50):
        fresh = ChatHistory(store.engine)  # knows nothing: the general path
        assert _key(await store.get_chat_history(user, conv, limit=limit)) == _key(
            await fresh.get_chat_history(user, conv, limit=limit)
        )
        for order in ("asc", "desc"):
            hinted = await _pages(store, user, conv, order, limit)
            fresh = ChatHistory(store.engine)
            assert hinted == await _pages(fresh, user, conv, order, limit)
    # the whole branch, oldest first, with sibling numbers as the tree says
    everything = await store.get_chat_history(user, conv)
    assert [m.parent_id for m in everything[1:]] == [m.id for m in everything[:-1]]
    # carrying on after the newest message: the branch grows, nothing else changes
    before = _key(await store.get_chat_history(user, conv))
    added = await store.add_message(user, conv, "user", "more")
    after = await store.get_chat_history(user, conv)
    assert _key(after[:-1]) == before
    assert (after[-1].id, after[-1].parent_id) == (added.id, before[-1][0])
    fresh = ChatHistory(store.engine)
    assert _key(await fresh.get_chat_history(user, conv)) == _key(after)


async def test_a_byte_budget_on_a_branched_page(store: ChatHistory, user: str) -> None:
    conv = await _tree(store, user)
    await store.get_chat_history(user, conv)
    big = "x" * 3000
    for _ in range(4):
        await store.add_message(user, conv, "user", big)
    budgeted = store.with_response_budget(7000)
    fresh = ChatHistory(store.engine).with_response_budget(7000)
    for order in ("asc", "desc"):
        assert await _pages(budgeted, user, conv, order, 10) == await _pages(
            fresh, user, conv, order, 10
        )
