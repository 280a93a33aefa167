"""Every statement the store runs names its user, so on Citus each one routes to one shard."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, update

from chathistory import ChatHistory
from chathistory.db import create_engine
from chathistory.models import conversations, metadata
from chathistory.store.dialects.postgresql import (
    CITUS_SNAPSHOT_SQL,
    appends,
    branched,
    listing,
    reads,
)

TABLES = {table.name for table in metadata.sorted_tables}


async def _exercise(store: ChatHistory, user: str) -> None:
    """Every public method, on the happy path and on a few error paths."""
    conv = await store.create_conversation(user, title="t")
    given = uuid.uuid4()
    await store.create_conversation(user, id=given)
    await store.create_conversation(user, id=given)
    await store.get_or_create_conversation(user)
    await store.get_or_create_conversation(user, uuid.uuid4())
    await store.get_conversation(user, conv.id)
    page = await store.list_conversations(user, limit=1)
    await store.list_conversations(user, limit=1, cursor=page.next_cursor)
    await store.update_conversation(user, conv.id, title="u", metadata={"a": "b"})
    first = await store.add_message(user, conv.id, "system", "s")
    message_id = uuid.uuid4()
    await store.add_message(user, conv.id, "user", "hi", id=message_id)
    await store.add_message(user, conv.id, "user", "hi", id=message_id)
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await store.add_messages(
        user,
        conv.id,
        [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": "r"},
        ],
    )
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[{**call, "id": "d"}])
    await store.add_message(user, conv.id, "tool", "r", tool_call_id="d")
    [streamed] = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "", "status": "in_progress"}]
    )
    await store.update_message(user, conv.id, streamed.id, {"append_text": "hi"})
    await store.update_message(user, conv.id, streamed.id, {"tool_calls": [{**call, "id": "e"}]})
    await store.update_message(user, conv.id, streamed.id, {"tool_calls": [{**call, "id": "g"}]})
    await store.add_message(user, conv.id, "tool", "r", tool_call_id="g")
    await store.update_message(user, conv.id, streamed.id, {"status": "completed"})
    [regenerated] = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "again", "parent_id": streamed.parent_id}]
    )
    await store.add_messages(user, conv.id, [{"role": "user", "content": "on"}])
    await store.update_conversation(user, conv.id, current_message_id=regenerated.id)
    await store.update_conversation(user, conv.id, current_message_id=streamed.id)
    await store.list_messages(user, conv.id, branch="all", limit=3)
    await store.list_messages(user, conv.id, limit=2, order="desc")
    await store.get_chat_history(user, conv.id, limit=3)
    await store.add_message(user, conv.id, "tool", "r2", tool_call_id="g")  # open on this branch
    await store.get_message(user, conv.id, first.id)
    listed = await store.list_messages(user, conv.id, limit=2)
    await store.list_messages(user, conv.id, cursor=listed.next_cursor)
    await store.list_messages(user, conv.id, after=first.id, before=message_id, order="desc")
    await store.get_chat_history(user, conv.id)
    await store.get_chat_history(user, conv.id, limit=2)
    await store.get_context_window(user, conv.id, 1000)
    await store.get_context_window(user, conv.id, 1000, model="gpt-4")
    turn = [
        {"type": "reasoning", "id": "rs_x", "summary": []},
        {"type": "function_call", "call_id": "ic", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "ic", "output": "o"},
    ]
    await store.add_items(user, conv.id, turn)
    await store.add_items(user, conv.id, turn[:1])  # a replay
    items = await store.list_items(user, conv.id, limit=2, order="desc")
    await store.list_items(user, conv.id, after=items.last_id)
    await store.get_item(user, conv.id, "rs_x")
    await store.get_item(user, conv.id, f"msg_{first.id.hex}")
    plain = await store.create_conversation(user)
    await store.add_items(user, plain.id, turn)
    await store.list_items(user, plain.id, after="rs_x", order="asc")
    found = await store.search_messages(user, "hi", limit=1)
    await store.search_messages(user, "hi", cursor=found.next_cursor)
    await store.search_messages(user, 'hi OR "r" -x', conversation_id=conv.id, role="user")
    async for _ in store.iter_messages(user, conv.id):
        pass
    async for _ in store.iter_export([user]):  # one snapshot, two streams per user
        pass
    fresh = await store.create_conversation(user)
    await store.add_message(user, fresh.id, "user", "x")
    await store.clear_conversation(user, fresh.id)
    await store.delete_conversation(user, fresh.id)
    record = {
        "id": str(uuid.uuid4()),
        "user_id": user,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "messages": [
            {
                "id": str(uuid.uuid4()),
                "seq": 1,
                "created_at": "2026-01-01T00:00:00+00:00",
                "role": "user",
                "content": "imported",
            }
        ],
    }
    await store.import_conversation(record)
    await store.import_conversation(record)
    # The lifecycle (SPEC 9): archive and pin, the filtered lists, an expiry, the purge.
    await store.update_conversation(user, conv.id, archived=True, pinned=True)
    await store.list_conversations(user, archived="any", pinned=True)
    shown = await store.list_conversations(user, archived=True, pinned=False, limit=1)
    await store.list_conversations(user, pinned=False, cursor=shown.next_cursor)
    soon = datetime.now(UTC) + timedelta(hours=1)
    temporary = await store.create_conversation(user, expires_at=soon)
    await store.add_message(user, temporary.id, "user", "brief")
    async with store.engine.begin() as conn:  # expired now, without waiting for it
        await conn.execute(
            update(conversations)
            .where(conversations.c.user_id == user, conversations.c.id == temporary.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await store.search_messages(user, "brief")
    await store.purge(user_id=user, dry_run=True)
    await store.purge(user_id=user, older_than=timedelta(days=30), batch_size=2)
    await store.create_conversation(user, id=temporary.id)  # an expired id is free again
    await store.delete_user_data(user)


def _names_user(statement: str) -> bool:
    return bool(re.search(r"\buser_id\s*(=|IN\b)", statement, re.IGNORECASE))


async def test_every_statement_filters_by_user(backend_url: str, user: str) -> None:
    engine = create_engine(backend_url)
    store = ChatHistory(engine, owns_engine=True)
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await _exercise(store, user)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        await store.close()
    touching = [
        s
        for s in seen
        if any(re.search(rf"\b{t}\b", s) for t in TABLES)
        and s != CITUS_SNAPSHOT_SQL  # on Citus, an export's opening fan-out (by design)
    ]
    assert len(touching) > 40
    unscoped = [
        s for s in touching if not s.lstrip().upper().startswith("INSERT") and not _names_user(s)
    ]
    assert unscoped == []
    # The hot read path runs its SQL on the asyncpg connection itself, past these events.
    raw = [
        getattr(module, name)
        for module in (reads, branched, listing, appends)
        for name in dir(module)
        if name.endswith("_SQL")
    ]
    statements = [s for r in raw for s in (r.values() if isinstance(r, dict) else [r])]
    assert len(statements) >= 6
    for statement in statements:
        assert _names_user(statement)
    # Inserts carry user_id as a column, so they route to the user's shard too.
    for statement in touching:
        if statement.lstrip().upper().startswith("INSERT"):
            assert "user_id" in statement
