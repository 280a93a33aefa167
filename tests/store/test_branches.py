"""SPEC 11: branches — edit and regenerate keep every version; reads follow the active branch.

The example tests walk the cases a chat UI meets; the property test drives random appends,
branches and switches against a plain in-memory tree and compares every read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chathistory import ChatHistory, ValidationError
from tests.fixtures.http import asgi_client

CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def texts(messages: Any) -> list[Any]:
    return [m.content for m in messages]


async def walk(store: ChatHistory, user: str, conv: uuid.UUID, order: Any, limit: int) -> list[Any]:
    """The contents of the active branch, page by page along the cursor."""
    seen: list[Any] = []
    cursor = None
    while True:
        page = await store.list_messages(user, conv, limit=limit, order=order, cursor=cursor)
        seen += texts(page.data)
        if not page.has_more:
            return seen
        cursor = page.next_cursor


async def _chat(store: ChatHistory, user: str) -> tuple[uuid.UUID, list[Any]]:
    conv = await store.create_conversation(user)
    stored = await store.add_messages(
        user,
        conv.id,
        [
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"},
        ],
    )
    return conv.id, stored


async def test_regenerate_edit_and_switch(store: ChatHistory, user: str) -> None:
    conv, (u1, a1, u2, a2) = await _chat(store, user)
    assert [m.parent_id for m in (u1, a1, u2, a2)] == [None, u1.id, a1.id, u2.id]
    assert (await store.get_conversation(user, conv)).current_message_id == a2.id
    # Regenerate a2: a new answer to u2.
    [a2b] = await store.add_messages(
        user, conv, [{"role": "assistant", "content": "a2b", "parent_id": u2.id}]
    )
    assert (a2b.parent_id, a2b.seq) == (u2.id, 5)
    history = await store.get_chat_history(user, conv)
    assert texts(history) == ["u1", "a1", "u2", "a2b"]
    assert [(m.sibling_count, m.sibling_index) for m in history] == [(1, 1)] * 3 + [(2, 2)]
    conversation = await store.get_conversation(user, conv)
    assert (conversation.current_message_id, conversation.message_count) == (a2b.id, 5)
    # Edit u2: a new question after a1, then its answer follows it by default.
    [u2b] = await store.add_messages(
        user, conv, [{"role": "user", "content": "u2b", "parent_id": a1.id}]
    )
    [a3] = await store.add_messages(user, conv, [{"role": "assistant", "content": "a3"}])
    assert a3.parent_id == u2b.id
    history = await store.get_chat_history(user, conv)
    assert texts(history) == ["u1", "a1", "u2b", "a3"]
    assert [(m.sibling_count, m.sibling_index) for m in history][2] == (2, 2)
    # Switch back to the first answer: nothing was lost; updated_at does not move.
    before = await store.get_conversation(user, conv)
    switched = await store.update_conversation(user, conv, current_message_id=a2.id)
    assert switched.current_message_id == a2.id
    assert switched.updated_at == before.updated_at
    history = await store.get_chat_history(user, conv)
    assert texts(history) == ["u1", "a1", "u2", "a2"]
    assert [(m.sibling_count, m.sibling_index) for m in history] == [
        (1, 1),
        (1, 1),
        (2, 1),
        (2, 1),
    ]
    assert texts(await store.get_chat_history(user, conv, limit=2)) == ["u2", "a2"]
    # Every message, every branch, by seq.
    every = await store.list_messages(user, conv, branch="all")
    assert texts(every.data) == ["u1", "a1", "u2", "a2", "a2b", "u2b", "a3"]
    # The context window follows the branch.
    window = await store.get_context_window(user, conv, max_tokens=10_000)
    assert [m["content"] for m in window.messages] == ["u1", "a1", "u2", "a2"]
    # One message, off the branch, still knows its siblings.
    off = await store.get_message(user, conv, a2b.id)
    assert (off.sibling_count, off.sibling_index) == (2, 2)
    # Appending on the switched branch continues it.
    [a4] = await store.add_messages(user, conv, [{"role": "user", "content": "u3"}])
    assert a4.parent_id == a2.id
    assert texts(await store.get_chat_history(user, conv)) == ["u1", "a1", "u2", "a2", "u3"]


async def test_pages_walk_the_branch(store: ChatHistory, user: str) -> None:
    conv, (_, _, u2, a2) = await _chat(store, user)
    await store.add_messages(
        user, conv, [{"role": "assistant", "content": "x", "parent_id": u2.id}]
    )
    await store.update_conversation(user, conv, current_message_id=a2.id)
    await store.add_messages(user, conv, [{"role": "user", "content": "u3"}])
    expected = ["u1", "a1", "u2", "a2", "u3"]
    assert await walk(store, user, conv, "asc", 2) == expected
    assert await walk(store, user, conv, "desc", 2) == expected[::-1]
    newest = await store.list_messages(user, conv, order="desc", limit=3)
    assert texts(newest.data) == ["u3", "a2", "u2"] and newest.has_more


async def test_new_first_message_and_bad_parents(
    store: ChatHistory, user: str, other_user: str
) -> None:
    conv, (u1, *_) = await _chat(store, user)
    [root] = await store.add_messages(
        user, conv, [{"role": "user", "content": "again", "parent_id": None}]
    )
    assert root.parent_id is None
    assert texts(await store.get_chat_history(user, conv)) == ["again"]
    assert [
        (m.sibling_count, m.sibling_index) for m in await store.get_chat_history(user, conv)
    ] == [(2, 2)]
    theirs = await store.create_conversation(other_user)
    [foreign] = await store.add_messages(other_user, theirs.id, [{"role": "user", "content": "x"}])
    for parent in (uuid.uuid4(), foreign.id):
        with pytest.raises(ValidationError, match="not a message of this conversation"):
            await store.add_messages(
                user, conv, [{"role": "user", "content": "y", "parent_id": parent}]
            )
        with pytest.raises(ValidationError, match="not a message of this conversation"):
            await store.update_conversation(user, conv, current_message_id=parent)
    with pytest.raises(ValidationError, match="only the first message"):
        await store.add_messages(
            user,
            conv,
            [
                {"role": "user", "content": "y"},
                {"role": "assistant", "content": "z", "parent_id": u1.id},
            ],
        )
    with pytest.raises(ValidationError):
        await store.update_conversation(user, conv, {"current_message_id": None})
    assert (await store.get_conversation(user, conv)).message_count == 5


async def test_tool_results_pair_along_their_branch(store: ChatHistory, user: str) -> None:
    conv, (*_, a2) = await _chat(store, user)
    [call, result] = await store.add_messages(
        user,
        conv,
        [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22"},
        ],
    )
    # A branch from before the call cannot answer it; one from after the call can, once.
    await store.update_conversation(user, conv, current_message_id=a2.id)
    answer = {"role": "tool", "tool_call_id": "call_1", "content": "again"}
    with pytest.raises(ValidationError, match="answers no open tool call"):
        await store.add_messages(user, conv, [answer])
    [retry] = await store.add_messages(user, conv, [{**answer, "parent_id": call.id}])
    assert retry.parent_id == call.id
    with pytest.raises(ValidationError, match="answers no open tool call"):
        await store.add_messages(user, conv, [answer])  # answered on this branch already
    # A new call on a branch opens there.
    await store.add_messages(
        user,
        conv,
        [{"role": "assistant", "content": None, "tool_calls": [CALL], "parent_id": a2.id}],
    )
    await store.add_messages(user, conv, [answer])
    window = await store.get_context_window(user, conv, max_tokens=10_000)
    assert [m["role"] for m in window.messages][-2:] == ["assistant", "tool"]
    assert result.seq == 6


# -- the property test ---------------------------------------------------------------------


@dataclass
class Model:
    """The tree in memory: parents by index, the current message, the rules of SPEC 11."""

    parents: list[int | None] = field(default_factory=list)
    current: int | None = None

    def append(self, parent: int | None) -> None:
        self.parents.append(parent)
        self.current = len(self.parents) - 1

    def path(self) -> list[int]:
        chain: list[int] = []
        node = self.current
        while node is not None:
            chain.append(node)
            node = self.parents[node]
        return chain[::-1]

    def siblings(self, index: int) -> tuple[int, int]:
        family = [i for i, p in enumerate(self.parents) if p == self.parents[index]]
        return len(family), family.index(index) + 1


# ("append", None): follow the current message; ("branch", k): after message k % n (or a new
# first message for k = -1); ("switch", k): make message k % n current.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.none()),
        st.tuples(st.just("branch"), st.integers(-1, 40)),
        st.tuples(st.just("switch"), st.integers(0, 40)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.parametrize("backend_url", ["sqlite", "postgres"], indirect=True)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
async def test_branches_agree_with_a_tree_in_memory(store: ChatHistory, ops: Any) -> None:
    user = f"prop-{uuid.uuid4()}"
    conv = (await store.create_conversation(user)).id
    model = Model()
    ids: list[uuid.UUID] = []
    for op, k in ops:
        if op == "switch" and not ids:
            continue
        if op == "switch":
            assert k is not None
            target = k % len(ids)
            await store.update_conversation(user, conv, current_message_id=ids[target])
            model.current = target
            continue
        message: dict[str, Any] = {"role": "user", "content": f"m{len(ids)}"}
        parent: int | None = model.current
        if op == "branch" and k is not None:
            parent = None if k == -1 or not ids else k % len(ids)
            message["parent_id"] = None if parent is None else ids[parent]
        [stored] = await store.add_messages(user, conv, [message])
        assert stored.parent_id == (None if parent is None else ids[parent])
        ids.append(stored.id)
        model.append(parent)
    path = [f"m{i}" for i in model.path()]
    history = await store.get_chat_history(user, conv)
    assert texts(history) == path
    assert [(m.sibling_count, m.sibling_index) for m in history] == [
        model.siblings(i) for i in model.path()
    ]
    assert texts(await store.get_chat_history(user, conv, limit=3)) == path[-3:]
    assert await walk(store, user, conv, "asc", 3) == path
    assert await walk(store, user, conv, "desc", 3) == path[::-1]
    window = await store.get_context_window(user, conv, max_tokens=100_000)
    assert [m["content"] for m in window.messages] == path
    every = await store.list_messages(user, conv, branch="all")
    assert texts(every.data) == [f"m{i}" for i in range(len(ids))]
    conversation = await store.get_conversation(user, conv)
    assert conversation.message_count == len(ids)
    assert conversation.current_message_id == (
        None if model.current is None else ids[model.current]
    )


async def test_export_import_keeps_the_tree(store: ChatHistory, user: str, tmp_path: Any) -> None:
    import io

    from chathistory.transfer import export_jsonl, import_jsonl

    conv, (_, a1, u2, a2) = await _chat(store, user)
    await store.add_messages(
        user, conv, [{"role": "assistant", "content": "a2b", "parent_id": u2.id}]
    )
    await store.add_messages(user, conv, [{"role": "user", "content": "u2b", "parent_id": a1.id}])
    await store.add_messages(user, conv, [{"role": "user", "content": "new", "parent_id": None}])
    await store.update_conversation(user, conv, current_message_id=a2.id)
    linear = await store.create_conversation(user)
    await store.add_messages(user, linear.id, [{"role": "user", "content": "plain"}])
    first = io.StringIO()
    await export_jsonl(store, first, user_ids=[user])
    plain = next(line for line in first.getvalue().splitlines() if '"plain"' in line)
    assert '"parent_id"' not in plain  # a conversation that never branched is written as before
    target_url = f"sqlite:///{tmp_path / 'tree.db'}"
    async with ChatHistory.open(target_url) as target:
        report = await import_jsonl(target, io.StringIO(first.getvalue()))
        assert (report.created, report.errors) == (2, [])
        second = io.StringIO()
        await export_jsonl(target, second)
        assert second.getvalue() == first.getvalue()
        assert texts(await target.get_chat_history(user, conv)) == ["u1", "a1", "u2", "a2"]
        every = await target.list_messages(user, conv, branch="all")
        assert [m.parent_id for m in every.data] == [
            m.parent_id for m in (await store.list_messages(user, conv, branch="all")).data
        ]
        # Carries on like the original: a tool call and its result pair along the branch.
        await target.add_messages(
            user,
            conv,
            [
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "22"},
            ],
        )


async def test_search_finds_the_active_branch(store: ChatHistory, user: str) -> None:
    conv, (_, _, u2, a2) = await _chat(store, user)
    await store.add_messages(
        user, conv, [{"role": "assistant", "content": "zebra answer", "parent_id": u2.id}]
    )
    found = await store.search_messages(user, "zebra")
    assert [(h.message.content, h.message.sibling_index) for h in found.data] == [
        ("zebra answer", 2)
    ]
    await store.update_conversation(user, conv, current_message_id=a2.id)
    assert (await store.search_messages(user, "zebra")).data == []
    assert [h.message.id for h in (await store.search_messages(user, "a2")).data] == [a2.id]


async def test_the_http_api_edits_regenerates_and_switches(store: ChatHistory, user: str) -> None:

    from chathistory.http import create_app
    from tests.support.api import bearer, problem, settings

    conv, (_, a1, u2, a2) = await _chat(store, user)
    app = create_app(settings(), store=store)
    base = f"/api/{user}/conversations/{conv}"
    auth = bearer(user)
    async with asgi_client(app, base_url="http://t") as http:
        regenerated = await http.post(
            f"{base}/messages",
            json={"role": "assistant", "content": "a2b", "parent_id": str(u2.id)},
            headers=auth,
        )
        assert regenerated.status_code == 201, regenerated.text
        body = regenerated.json()
        assert (body["parent_id"], body["seq"]) == (str(u2.id), 5)
        listed = (await http.get(f"{base}/messages", headers=auth)).json()["data"]
        assert [(m["content"], m["sibling_count"], m["sibling_index"]) for m in listed][-1] == (
            "a2b",
            2,
            2,
        )
        switched = await http.patch(base, json={"current_message_id": str(a2.id)}, headers=auth)
        assert switched.json()["current_message_id"] == str(a2.id)
        listed = (await http.get(f"{base}/messages?order=desc&limit=1", headers=auth)).json()
        assert listed["data"][0]["content"] == "a2"
        every = (await http.get(f"{base}/messages?branch=all", headers=auth)).json()["data"]
        assert [m["content"] for m in every] == ["u1", "a1", "u2", "a2", "a2b"]
        bad = await http.patch(base, json={"current_message_id": str(uuid.uuid4())}, headers=auth)
        assert problem(bad, 422)["errors"][0]["loc"][-1] == "current_message_id"
        bad = await http.post(
            f"{base}/messages",
            json={"role": "user", "content": "x", "parent_id": str(uuid.uuid4())},
            headers=auth,
        )
        assert problem(bad, 422)["errors"][0]["loc"][-1] == "parent_id"
        problem(await http.get(f"{base}/messages?branch=some", headers=auth), 422)
        edited = await http.post(
            f"{base}/messages",
            json={"role": "user", "content": "u2b", "parent_id": str(a1.id)},
            headers=auth,
        )
        assert (edited.json()["sibling_count"], edited.json()["sibling_index"]) == (2, 2)


@pytest.mark.parametrize("backend_url", ["postgres", "pgbouncer", "citus"], indirect=True)
@pytest.mark.parametrize("statement", ["APPEND_SQL", "APPEND_LOCKING_SQL"])
async def test_concurrent_appends_each_follow_the_one_before(
    store: ChatHistory, user: str, statement: str
) -> None:
    """Appenders racing on one conversation: each message's parent is the message stored just
    before it, whichever form of the one-statement append the server gets (PostgreSQL 18's
    ``RETURNING old``, or the locking read before 18)."""
    import asyncio

    from chathistory.store.dialects.postgresql import Postgres, appends

    dialect = store._db.dialect
    assert isinstance(dialect, Postgres)
    dialect._append = getattr(appends, statement)  # as chosen for the server's version
    conv = (await store.create_conversation(user)).id
    ones = (store.add_message(user, conv, "user", f"m{i}") for i in range(30))
    pairs = (  # the batch form of the statement
        store.add_messages(user, conv, [{"role": "user", "content": f"p{i}"}] * 2) for i in range(5)
    )
    await asyncio.gather(*ones, *pairs)
    history = await store.get_chat_history(user, conv)
    assert [m.seq for m in history] == list(range(1, 41))
    assert [m.parent_id for m in history] == [None, *(m.id for m in history[:-1])]
    assert (await store.get_conversation(user, conv)).current_message_id == history[-1].id
