"""Untimed set-up: histories and conversation lists written with bulk SQL, then checks that
what the contenders wrote is whole (no lost message, no duplicate seq)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

CONTENT = ("The quick brown fox jumps over the lazy dog; " * 10)[:400]


def role(n: int) -> str:
    """The n-th appended turn of a conversation alternates user and assistant."""
    return "user" if n % 2 == 0 else "assistant"


async def bulk_history(conn: Any, user_id: str, conversation_id: uuid.UUID, n: int) -> None:
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
        " message_count) VALUES ($1, $2, 'bench', '{}', now(), now(), $3)",
        conversation_id,
        user_id,
        n,
    )
    await conn.execute(
        "INSERT INTO messages (id, user_id, conversation_id, seq, role, content, metadata,"
        " token_count, created_at) "
        "SELECT gen_random_uuid(), $1, $2, s,"
        " CASE WHEN s % 2 = 0 THEN 'assistant' ELSE 'user' END, to_jsonb($3::text),"
        " '{}'::jsonb, 90, now() FROM generate_series(1, $4) AS s",
        user_id,
        conversation_id,
        CONTENT,
        n,
    )


async def bulk_conversations(conn: Any, user_id: str, n: int) -> None:
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
        " message_count) SELECT gen_random_uuid(), $1, 'c' || s, '{}',"
        " now() - s * interval '1 second', now() - s * interval '1 second', 0"
        " FROM generate_series(1, $2) AS s",
        user_id,
        n,
    )


async def position_before(conn: Any, user_id: str, rank: int) -> tuple[datetime, uuid.UUID]:
    """``(updated_at, id)`` of the user's ``rank``-th conversation in listing order (from 1):
    the keyset position after which the next page starts."""
    row = await conn.fetchrow(
        "SELECT updated_at, id FROM conversations WHERE user_id = $1"
        " ORDER BY updated_at DESC, id DESC OFFSET $2 LIMIT 1",
        user_id,
        rank - 1,
    )
    if row is None:
        raise RuntimeError(f"{user_id} has fewer than {rank} conversations")
    return row["updated_at"], row["id"]


async def check_appended(conn: Any, user_id: str, conversation_ids: list[uuid.UUID]) -> int:
    """Raise unless each conversation holds seq 1..message_count exactly once; return how many
    messages they hold together."""
    total = 0
    for conversation_id in conversation_ids:
        row = await conn.fetchrow(
            "SELECT c.message_count, count(m.seq) AS rows, count(DISTINCT m.seq) AS seqs,"
            " coalesce(max(m.seq), 0) AS top FROM conversations c"
            " LEFT JOIN messages m ON m.conversation_id = c.id AND m.user_id = c.user_id"
            " WHERE c.id = $1 AND c.user_id = $2 GROUP BY c.message_count",
            conversation_id,
            user_id,
        )
        if row is None or not row["message_count"] == row["rows"] == row["seqs"] == row["top"]:
            raise RuntimeError(f"conversation {conversation_id} is not whole: {dict(row or {})}")
        total += row["rows"]
    return total


async def remove(conn: Any, prefix: str) -> None:
    await conn.execute("DELETE FROM conversations WHERE user_id LIKE $1 || '%'", prefix)
