"""Context windows (SPEC section 4): examples, then properties over random conversations."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from chathistory import ChatHistory, ConversationNotFoundError, ValidationError
from chathistory.db import create_engine
from chathistory.store.context import OFF_LOOP_BYTES
from chathistory.tokens import REPLY_PRIMING, TokenCounter, counter


def call(id: str) -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def cost(message: dict[str, Any]) -> int:
    return counter().count_message(message)


async def test_everything_fits(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    stored = await store.add_messages(
        user,
        conv.id,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [call("a")]},
            {"role": "tool", "tool_call_id": "a", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ],
    )
    window = await store.get_context_window(user, conv.id, 10_000)
    assert window.messages == [m.to_openai() for m in stored]
    assert not window.truncated
    assert window.token_count == REPLY_PRIMING + sum(m.token_count or 0 for m in stored)
    assert window.token_count == counter().count_messages(window.messages)
    assert window.exact
    assert window.encoding == "o200k_base"


async def test_budget_keeps_system_and_newest(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    system = [{"role": "system", "content": "rule one"}, {"role": "system", "content": "rule two"}]
    turns = [
        {"role": "user" if n % 2 else "assistant", "content": f"turn {n} " * 5} for n in range(20)
    ]
    await store.add_messages(user, conv.id, system + turns)
    budget = REPLY_PRIMING + sum(map(cost, system)) + sum(map(cost, turns[-3:])) + 1
    window = await store.get_context_window(user, conv.id, budget)
    assert window.messages == system + turns[-3:]
    assert window.truncated
    assert window.token_count <= budget
    with pytest.raises(ValidationError) as info:
        await store.get_context_window(user, conv.id, REPLY_PRIMING + cost(system[0]))
    assert info.value.errors[0].loc == ("max_tokens",)


async def test_tool_pairs_are_never_split(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    parallel = {"role": "assistant", "content": None, "tool_calls": [call("x"), call("y")]}
    results = [
        {"role": "tool", "tool_call_id": "x", "content": "rx " * 20},
        {"role": "tool", "tool_call_id": "y", "content": "ry " * 20},
    ]
    final = {"role": "assistant", "content": "done"}
    await store.add_messages(
        user, conv.id, [{"role": "user", "content": "go"}, parallel, *results, final]
    )
    # Room for the final answer and one result, not for the whole call group.
    budget = REPLY_PRIMING + cost(final) + cost(results[1]) + 2
    window = await store.get_context_window(user, conv.id, budget)
    assert window.messages == [final]
    assert window.truncated
    budget = REPLY_PRIMING + cost(final) + sum(map(cost, results)) + cost(parallel)
    window = await store.get_context_window(user, conv.id, budget)
    assert window.messages == [parallel, *results, final]


async def test_crashed_tool_run_is_left_out(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    messages = [
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": [call("w"), call("t")]},
        {"role": "tool", "tool_call_id": "w", "content": "sunny"},
        {"role": "user", "content": "hello?"},  # the time tool crashed
        {"role": "tool", "tool_call_id": "t", "content": "late"},  # answered too late to replay
        {"role": "assistant", "content": "sorry"},
    ]
    await store.add_messages(user, conv.id, messages)
    window = await store.get_context_window(user, conv.id, 10_000)
    assert window.messages == [messages[0], messages[3], messages[5]]
    assert not window.truncated


async def test_context_errors(store: ChatHistory, user: str, other_user: str) -> None:
    conv = await store.create_conversation(user)
    empty = await store.get_context_window(user, conv.id, 100)
    assert empty.messages == []
    assert empty.token_count == REPLY_PRIMING
    for bad in (0, -5, True):
        with pytest.raises(ValidationError):
            await store.get_context_window(user, conv.id, bad)
    with pytest.raises(ConversationNotFoundError):
        await store.get_context_window(other_user, conv.id, 100)
    with pytest.raises(ConversationNotFoundError):
        await store.get_context_window(user, uuid.uuid4(), 100)


async def test_model_picks_its_encoding(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await store.add_message(user, conv.id, "user", "漢字かなカナ, emoji 🙂 and words")
    gpt4 = await store.get_context_window(user, conv.id, 1000, model="gpt-4")
    gpt4o = await store.get_context_window(user, conv.id, 1000, model="gpt-4o-mini")
    assert (gpt4.encoding, gpt4o.encoding) == ("cl100k_base", "o200k_base")
    assert gpt4.token_count == counter("cl100k_base").count_messages(gpt4.messages)
    assert gpt4o.token_count == counter("o200k_base").count_messages(gpt4o.messages)


async def test_a_large_recount_runs_off_the_event_loop(
    store: ChatHistory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages counted for another encoding than the stored counts are counted ahead, read by
    read: on a worker thread once they pass OFF_LOOP_BYTES, so the event loop keeps serving;
    a small recount stays on the loop. The counts are the same either way."""
    threads: list[int] = []
    count_message = TokenCounter.count_message

    def recording(self: TokenCounter, message: Any) -> int:
        threads.append(threading.get_ident())
        return count_message(self, message)

    monkeypatch.setattr(TokenCounter, "count_message", recording)
    loop_thread = threading.get_ident()
    conv = await store.create_conversation(user)
    await store.add_message(user, conv.id, "user", "short question")
    small = await store.get_context_window(user, conv.id, 1_000_000, model="gpt-4")
    assert threads and set(threads) == {loop_thread}

    words = "lorem ipsum dolor sit amet " * 3_500  # ~94 KB a message
    await store.add_messages(
        user, conv.id, [{"role": "user", "content": f"{n} {words}"} for n in range(4)]
    )
    threads.clear()
    large = await store.get_context_window(user, conv.id, 1_000_000, model="gpt-4")
    assert len(threads) == 5 and loop_thread not in threads
    assert not large.truncated and large.encoding == small.encoding == "cl100k_base"
    assert large.token_count == counter("cl100k_base").count_messages(large.messages)
    assert 4 * len(words) > OFF_LOOP_BYTES


# -- properties over random conversations ---------------------------------------------------


def _groups(
    conversation: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Reference model, written forwards: leading system messages, then replayable groups."""
    n = 0
    while n < len(conversation) and conversation[n]["role"] == "system":
        n += 1
    system, rest = conversation[:n], conversation[n:]
    groups: list[list[dict[str, Any]]] = []
    i = 0
    while i < len(rest):
        message = rest[i]
        i += 1
        if message["role"] == "tool":
            continue  # not right after its call: cannot be replayed
        if not message.get("tool_calls"):
            groups.append([message])
            continue
        block = []
        while i < len(rest) and rest[i]["role"] == "tool":
            block.append(rest[i])
            i += 1
        wanted = {c["id"] for c in message["tool_calls"]}
        answers = [t for t in block if t["tool_call_id"] in wanted]
        if {t["tool_call_id"] for t in answers} == wanted:
            groups.append([message, *answers])
    return system, groups


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    text = st.text(alphabet="ab漢🙂 .", min_size=0, max_size=40)
    out: list[dict[str, Any]] = [
        {"role": "system", "content": draw(text)} for _ in range(draw(st.integers(0, 2)))
    ]
    open_calls: list[str] = []
    for step in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["user", "assistant", "system", "tools", "late"]))
        if kind == "tools":
            ids = [f"c{step}_{k}" for k in range(draw(st.integers(1, 3)))]
            out.append({"role": "assistant", "content": None, "tool_calls": [call(i) for i in ids]})
            answered = draw(st.lists(st.sampled_from(ids), unique=True))
            out += [{"role": "tool", "tool_call_id": i, "content": draw(text)} for i in answered]
            open_calls += [i for i in ids if i not in answered]
        elif kind == "late":
            if open_calls:
                out.append(
                    {"role": "tool", "tool_call_id": open_calls.pop(), "content": draw(text)}
                )
        else:
            out.append({"role": kind, "content": draw(text)})
    return out


def _check_window(conversation: list[dict[str, Any]], budget: int, window: Any) -> None:
    system, groups = _groups(conversation)
    assert window.token_count <= budget
    assert window.token_count == counter().count_messages(window.messages)
    assert window.messages[: len(system)] == system
    run = window.messages[len(system) :]
    # The run is whole groups, the newest ones, contiguous.
    taken: list[list[dict[str, Any]]] = []
    for group in reversed(groups):
        if sum(len(g) for g in taken) >= len(run):
            break
        taken.insert(0, group)
    assert [m for g in taken for m in g] == run
    left = groups[: len(groups) - len(taken)]
    assert window.truncated == bool(left)
    if left:  # the next older group would not have fit
        assert window.token_count + sum(map(cost, left[-1])) > budget


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(conversation=conversations(), slack=st.integers(-20, 400))
def test_context_window_properties(
    request: pytest.FixtureRequest, backend: str, conversation: list[dict[str, Any]], slack: int
) -> None:
    url = str(request.getfixturevalue(f"{backend}_store_url"))
    system, _ = _groups(conversation)
    budget = max(1, REPLY_PRIMING + sum(map(cost, system)) + slack)

    async def scenario() -> None:
        async with ChatHistory.open(url, migrate=False) as store:
            user = f"prop-{uuid.uuid4()}"
            conv = await store.create_conversation(user)
            if conversation:
                await store.add_messages(user, conv.id, conversation)
            if slack < 0 and budget < REPLY_PRIMING + sum(map(cost, system)):
                with pytest.raises(ValidationError):
                    await store.get_context_window(user, conv.id, budget)
                return
            _check_window(
                conversation, budget, await store.get_context_window(user, conv.id, budget)
            )

    asyncio.run(scenario())


async def test_long_conversation_is_not_loaded(postgres_store_url: str, user: str) -> None:
    """100,000 messages; the window reads a bounded number of rows, whatever the length."""
    engine = create_engine(postgres_store_url)
    store = ChatHistory(engine, owns_engine=True)
    conv = await store.create_conversation(user, title="long")
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO messages (id, user_id, conversation_id, seq, role, content, metadata,"
            " token_count, created_at) "
            "SELECT gen_random_uuid(), $1, $2, n,"
            " CASE WHEN n % 2 = 0 THEN 'assistant' ELSE 'user' END,"
            " to_jsonb('message number ' || n), '{}'::jsonb, 8, now() "
            "FROM generate_series(1, 100000) AS n",
            (user, conv.id),
        )
        await conn.exec_driver_sql(
            "UPDATE conversations SET message_count = 100000 WHERE id = $1 AND user_id = $2",
            (conv.id, user),
        )
    statements: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        window = await store.get_context_window(user, conv.id, 4000)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        await store.close()
    assert window.truncated
    assert len(window.messages) == (4000 - REPLY_PRIMING) // 8
    assert window.messages[-1]["content"] == "message number 100000"
    assert len(statements) <= 6, statements
    # Every statement over messages is a LIMITed index range (the system prefix forwards,
    # the newest run backwards): the rows read are bounded by the limits' sum.
    over_messages = [(s, p) for s, p in statements if "FROM messages" in s]
    assert all("LIMIT" in s for s, _ in over_messages), over_messages
    limits = [p[-2] for _, p in over_messages]  # then the byte budget
    assert 2 <= len(limits) <= 5
    assert sum(limits) <= 2000, limits
    assert sum("ORDER BY messages.seq DESC" in s for s, _ in over_messages) == len(limits) - 1
