"""Migration 0012 (items): stored messages stay as they were, items go in beside them, and the
downgrade keeps every row, reporting what it loses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from chathistory import ChatHistory, migrations
from chathistory.db import create_engine
from chathistory.migrations import downgrading
from chathistory.models import conversations, messages

BEFORE = "0011_sqlite_search"


async def _stored_before(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A conversation with one user message, written at revision 0011."""
    engine = create_engine(url)
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    conv, message = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=conv,
                    user_id="u",
                    metadata={},
                    created_at=created,
                    updated_at=created,
                    message_count=1,
                    current_message_id=message,
                )
            )
            await conn.execute(
                insert(messages).values(
                    id=message,
                    user_id="u",
                    conversation_id=conv,
                    seq=1,
                    role="user",
                    content="stored before 0012",
                    metadata={},
                    created_at=created,
                )
            )
    finally:
        await engine.dispose()
    return conv, message


def _role_refused(connection: Connection, role: str) -> bool:
    """Whether the database refuses a message row of ``role`` (CHECK constraints)."""
    conv = connection.execute(text("SELECT id FROM conversations LIMIT 1")).scalar_one()
    try:
        with connection.begin_nested():
            connection.execute(
                insert(messages).values(
                    id=uuid.uuid4(),
                    user_id="u",
                    conversation_id=conv if isinstance(conv, uuid.UUID) else uuid.UUID(hex=conv),
                    seq=99,
                    role=role,
                    content=None,
                    metadata={},
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        return True
    return False


async def test_0012_keeps_stored_messages_and_its_downgrade_keeps_every_row(
    fresh_url: str,
) -> None:
    await migrations.upgrade(fresh_url, BEFORE)
    conv, message = await _stored_before(fresh_url)
    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []
    if fresh_url.startswith("sqlite"):  # the schema edited in place is sound
        check = await migrations.with_connection(
            fresh_url, lambda c: c.exec_driver_sql("PRAGMA integrity_check").scalar_one()
        )
        assert check == "ok"
    async with ChatHistory.open(fresh_url, migrate=False) as store:
        added = await store.add_items(
            "u",
            conv,
            [
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"},
                {"type": "message", "role": "assistant", "content": "hello", "id": "msg_1"},
            ],
        )
        page = await store.list_items("u", conv)
        assert [item["id"] for item in page.data] == [f"msg_{message.hex}", "rs_1", "msg_1"]
        assert page.data[1:] == added
        history = await store.get_chat_history("u", conv)
        assert [m.content for m in history] == ["stored before 0012", "hello"]
    # a role the CHECK does not know is still refused; an item row without its item too
    assert await migrations.with_connection(fresh_url, lambda c: _role_refused(c, "bogus"))
    assert await migrations.with_connection(fresh_url, lambda c: _role_refused(c, "item"))

    [loss] = await downgrading.downgrade_losses(fresh_url, BEFORE)
    assert (loss.kind, loss.count) == ("items", 2)
    assert "1 of them have no chat message of their own" in loss.detail
    with pytest.raises(downgrading.DataLossError):
        await downgrading.downgrade(fresh_url, BEFORE)
    await downgrading.downgrade(fresh_url, BEFORE, allow_data_loss=True)
    engine = create_engine(fresh_url)
    try:
        async with engine.connect() as conn:
            found = (
                await conn.execute(text("SELECT seq, role, content FROM messages ORDER BY seq"))
            ).all()
            assert [(row.seq, row.role) for row in found] == [
                (1, "user"),
                (2, "assistant"),
                (3, "assistant"),
            ]
            count = (await conn.execute(text("SELECT count(*) FROM conversations"))).scalar()
            assert count == 1
    finally:
        await engine.dispose()
    # below 0012 the role 'item' is refused again
    assert await migrations.with_connection(fresh_url, lambda c: _role_refused(c, "item"))
    await migrations.upgrade(fresh_url)
    assert await migrations.drift(fresh_url) == []
