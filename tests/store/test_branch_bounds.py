"""Branch work is bounded by the request, not by the branch (docs/bounded-work.md,
SPEC 11): each operation is measured in statements and in rows returned to the client at two
sizes of the tree (10 and 1,000 runs or tool turns, 10 and 10,000 siblings), built in bulk
straight into the tables (the store's own appends would take minutes), and must cost the same
at both."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update

from chathistory import ChatHistory, ValidationError
from chathistory.models import (
    conversation_paths,
    conversations,
    messages,
    tool_call_sites,
    uuid7,
)
from chathistory.transfer import export_jsonl

pytestmark = pytest.mark.filterwarnings("ignore")


@dataclass
class Work:
    statements: int = 0
    rows: int = 0  # rows returned to the client
    text: list[str] = field(default_factory=list)


@contextmanager
def counted(store: ChatHistory) -> Iterator[Work]:
    work = Work()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        work.statements += 1
        work.rows += len(getattr(cursor, "_rows", None) or ())
        work.text.append(statement)

    engine = store.engine.sync_engine
    event.listen(engine, "after_cursor_execute", record)
    try:
        yield work
    finally:
        event.remove(engine, "after_cursor_execute", record)


@dataclass
class Node:
    parent: int  # the parent's seq, 0 for a first message
    role: str = "user"
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def branch_of(nodes: Sequence[Node], seq: int) -> list[tuple[int, int]]:
    """The seq ranges of the branch ending at ``seq``."""
    chain: list[int] = []
    while seq:
        chain.append(seq)
        seq = nodes[seq - 1].parent
    ranges: list[tuple[int, int]] = []
    for s in reversed(chain):
        if ranges and ranges[-1][1] == s - 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


async def build(store: ChatHistory, user: str, nodes: Sequence[Node], current: int) -> uuid.UUID:
    """A branched conversation of ``nodes`` (seq = index + 1) whose active branch ends at
    ``current``, written in bulk."""
    conv = (await store.create_conversation(user)).id
    now = datetime.now(UTC)
    ids = [uuid7() for _ in nodes]
    families: dict[int, list[int]] = {}
    for n, node in enumerate(nodes):
        families.setdefault(node.parent, []).append(n + 1)
    place = {seq: i + 1 for family in families.values() for i, seq in enumerate(family)}
    forked = {p: len(f) for p, f in families.items() if any(place[s] > 1 for s in f)}
    rows = [
        {
            "id": ids[n],
            "user_id": user,
            "conversation_id": conv,
            "seq": n + 1,
            "role": node.role,
            "content": None if node.tool_calls else f"m{n + 1}",
            "name": None,
            "tool_calls": node.tool_calls,
            "tool_call_id": node.tool_call_id,
            "metadata": {},
            "created_at": now,
            "extras": None,
            "status": "completed",
            "updated_at": None,
            "parent_id": ids[node.parent - 1] if node.parent else None,
            "fork": None if node.parent == n else node.parent,
            "children": forked.get(n + 1),
            "sibling": None if node.parent == n else place[n + 1],
            "token_count": 1,
        }
        for n, node in enumerate(nodes)
    ]
    path = [
        {"conversation_id": conv, "user_id": user, "lo": lo, "hi": hi}
        for lo, hi in branch_of(nodes, current)
    ]
    async with store.engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            await conn.execute(insert(messages), rows[start : start + 2000])
        for start in range(0, len(path), 2000):
            await conn.execute(insert(conversation_paths), path[start : start + 2000])
        sites = [
            {"conversation_id": conv, "user_id": user, "call_id": c["id"], "seq": n + 1}
            for n, node in enumerate(nodes)
            for c in node.tool_calls or ()
        ]
        for start in range(0, len(sites), 2000):
            await conn.execute(insert(tool_call_sites), sites[start : start + 2000])
        await conn.execute(
            update(conversations)
            .where(conversations.c.id == conv, conversations.c.user_id == user)
            .values(
                message_count=len(nodes),
                current_message_id=ids[current - 1],
                branched=True,
                has_user_message=True,
                roots=forked.get(0),
            )
        )
    return conv


def regenerated_chat(runs: int) -> list[Node]:
    """Question, answer, ...: every answer regenerated once (one run per regeneration, and the
    conversation goes on after the newest answer), ``runs`` runs."""
    nodes = [Node(0), Node(1, "assistant")]
    for _ in range(runs - 1):
        question = len(nodes) - 1  # the question before the last answer
        nodes.append(Node(question, "assistant"))  # regenerated: starts a run
        nodes.append(Node(len(nodes)))  # the next question follows it
        nodes.append(Node(len(nodes), "assistant"))
    return nodes


def tool_chat(runs: int, turns: int) -> list[Node]:
    """A regenerated chat, then ``turns`` tool turns (a call and its result) on its branch."""
    nodes = regenerated_chat(runs)
    for n in range(turns):
        nodes.append(Node(len(nodes), "assistant", tool_calls=[call(f"c{n}")]))
        nodes.append(Node(len(nodes), "tool", tool_call_id=f"c{n}"))
    return nodes


def two_chains(runs: int) -> tuple[list[Node], int, int]:
    """Two deep chains of single-message runs from one root: A's messages, then B's, each
    following the one of its chain before it (so every one starts a run)."""
    nodes = [Node(0)]  # A and B interleaved: each message's parent is two seqs back
    last_a, last_b = 1, 1
    for _ in range(runs):
        nodes.append(Node(last_a))
        last_a = len(nodes)
        nodes.append(Node(last_b))
        last_b = len(nodes)
    return nodes, last_a, last_b


def steady(small: Work, big: Work, *, rows_slack: int = 0) -> None:
    assert big.statements == small.statements, (small.statements, big.statements)
    assert big.rows <= small.rows + rows_slack, (small.rows, big.rows)


SIZES = (10, 1000)


async def test_a_bogus_tool_result_on_a_branch(store: ChatHistory, user: str) -> None:
    work = []
    for turns in SIZES:
        nodes = tool_chat(2, turns)
        conv = await build(store, user, nodes, len(nodes))
        with counted(store) as seen, pytest.raises(ValidationError):
            await store.add_message(user, conv, "tool", "x", tool_call_id="bogus")
        with counted(store) as good:  # a result to the newest call, for contrast
            await store.add_messages(
                user,
                conv,
                [
                    {"role": "assistant", "content": None, "tool_calls": [call("new")]},
                    {"role": "tool", "content": "y", "tool_call_id": "new"},
                ],
            )
        work.append((seen, good))
    steady(work[0][1], work[1][1])
    steady(work[0][0], work[1][0])


async def test_a_page_read_with_many_siblings(store: ChatHistory, user: str) -> None:
    """Sibling numbers come from the numbers stored with the tree: no sibling is counted."""
    work = []
    for siblings in (10, 10_000):
        nodes = [Node(0)] + [Node(1, "assistant") for _ in range(siblings)]
        nodes.append(Node(len(nodes)))  # a question after the newest answer
        conv = await build(store, user, nodes, len(nodes))
        with counted(store) as seen:
            page = await store.list_messages(user, conv, limit=20)
        assert [(m.sibling_count, m.sibling_index) for m in page.data][1] == (siblings, siblings)
        work.append(seen)
    steady(*work)


async def test_a_switch_between_deep_chains(store: ChatHistory, user: str) -> None:
    work = []
    for runs in SIZES:
        nodes, last_a, last_b = two_chains(runs)
        conv = await build(store, user, nodes, last_a)
        history = await store.list_messages(user, conv, limit=1, order="desc")
        b_id = await _id_of(store, user, conv, last_b)
        with counted(store) as seen:
            await store.update_conversation(user, conv, current_message_id=b_id)
        work.append(seen)
        assert history.data[0].seq == last_a
        assert (await store.list_messages(user, conv, limit=1, order="desc")).data[0].seq == last_b
    steady(*work)


async def test_a_regeneration_on_a_deep_branch(store: ChatHistory, user: str) -> None:
    """An append with ``parent_id`` on the active branch: the common regenerate and edit."""
    work = []
    for runs in SIZES:
        nodes = regenerated_chat(runs)
        conv = await build(store, user, nodes, len(nodes))
        question = await _id_of(store, user, conv, len(nodes) - 1)
        with counted(store) as seen:
            [made] = await store.add_messages(
                user, conv, [{"role": "assistant", "content": "again", "parent_id": question}]
            )
        assert (made.sibling_count, made.sibling_index) == (2, 2)
        work.append(seen)
    steady(*work)


async def test_an_append_onto_another_deep_chain(store: ChatHistory, user: str) -> None:
    """An append with ``parent_id`` at the end of a branch that parted from the active one at
    the root: it makes that branch active, as a switch does."""
    work = []
    for runs in SIZES:
        nodes, last_a, last_b = two_chains(runs)
        conv = await build(store, user, nodes, last_a)
        b_id = await _id_of(store, user, conv, last_b)
        with counted(store) as seen:
            await store.add_messages(
                user, conv, [{"role": "user", "content": "x", "parent_id": b_id}]
            )
        work.append(seen)
    steady(*work)


async def test_importing_a_regenerated_chat(store: ChatHistory, user: str) -> None:
    work = []
    for runs in SIZES:
        nodes = tool_chat(runs, 2)
        if runs == 1000:  # one message first keeps the tool turns in one batch of the import
            # (a result whose call is in the batch before costs a walk statement)
            shifted = [
                Node(n.parent + 1 if n.parent else 1, n.role, n.tool_calls, n.tool_call_id)
                for n in nodes
            ]
            nodes = [Node(0), *shifted]
        conv = await build(store, user, nodes, len(nodes))
        out = io.StringIO()
        await export_jsonl(store, out, user_ids=[user])
        line = next(r for r in map(json.loads, out.getvalue().splitlines()) if r["id"] == str(conv))
        other = f"{user}-copy{runs}"
        with counted(store) as seen:
            assert await store.import_conversation({**line, "user_id": other})
        copied = await store.list_messages(other, conv, limit=100, order="desc")
        mine = await store.list_messages(user, conv, limit=100, order="desc")
        assert [m.id for m in copied.data] == [m.id for m in mine.data]
        # Per batch of the import (the request's own size): its insert, its search rows and
        # one lookup of the parents it names in earlier batches. Count the rest.
        batches = sum(text.startswith("INSERT INTO messages ") for text in seen.text)
        per_batch = ("INSERT INTO messages ", "INSERT INTO message_search", "SELECT messages.id, ")
        each = [text for text in seen.text if text.startswith(per_batch)]
        assert len(each) <= 3 * batches
        seen.statements -= len(each)
        seen.rows -= batches  # a parent named across a batch boundary
        work.append(seen)
    steady(*work)


async def _id_of(store: ChatHistory, user: str, conv: uuid.UUID, seq: int) -> uuid.UUID:
    async with store.engine.connect() as conn:
        value = (
            await conn.execute(
                select(messages.c.id).where(
                    messages.c.conversation_id == conv,
                    messages.c.user_id == user,
                    messages.c.seq == seq,
                )
            )
        ).scalar_one()
    return uuid.UUID(str(value))
