"""SPEC 9: archive, pin, expiry and the purge, on every backend."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from chathistory import (
    ChatHistory,
    ConflictError,
    ConversationNotFoundError,
    NotFoundError,
    PurgeReport,
    ValidationError,
)
from chathistory.cli import app as cli_app
from chathistory.db import create_engine
from chathistory.http import create_app
from chathistory.models import conversations
from chathistory.schemas.lifecycle import parse_duration
from chathistory.store.dialects.postgresql import listing
from chathistory.transfer import export_jsonl
from tests.fixtures.http import asgi_client
from tests.support.api import bearer, problem, settings

C = conversations.c


def _soon() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def _set(store: ChatHistory, user: str, conversation_id: uuid.UUID, **values: Any) -> None:
    """Write columns straight into the database: an expiry or an age in the past, without
    waiting for it."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(conversations).where(C.user_id == user, C.id == conversation_id).values(**values)
        )


async def _expire(store: ChatHistory, user: str, conversation_id: uuid.UUID) -> None:
    await _set(store, user, conversation_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))


async def _age(store: ChatHistory, user: str, conversation_id: uuid.UUID, days: int) -> None:
    await _set(store, user, conversation_id, updated_at=datetime.now(UTC) - timedelta(days=days))


async def _walk(store: ChatHistory, user: str, **filters: Any) -> list[uuid.UUID]:
    """Every id of a filtered list, walked by cursor two at a time."""
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await store.list_conversations(user, limit=2, cursor=cursor, **filters)
        seen += [c.id for c in page.data]
        if not page.has_more:
            return seen
        cursor = page.next_cursor


# -- archive, pin, expiry on create and update ------------------------------------------------


async def test_create_and_update_the_lifecycle(store: ChatHistory, user: str) -> None:
    plain = await store.create_conversation(user, title="t")
    assert (plain.archived, plain.pinned, plain.expires_at) == (False, False, None)
    expires = _soon()
    temporary = await store.create_conversation(user, pinned=True, expires_at=expires)
    assert temporary.pinned and not temporary.archived
    assert temporary.expires_at == expires
    assert (await store.get_conversation(user, temporary.id)).expires_at == expires

    pinned = await store.update_conversation(user, plain.id, pinned=True)
    archived = await store.update_conversation(user, plain.id, {"archived": True})
    assert pinned.pinned and archived.archived and archived.pinned
    # Not a change of content: updated_at stays, and so do the messages.
    assert archived.updated_at == plain.updated_at
    later = await store.update_conversation(user, plain.id, expires_at=expires)
    assert later.expires_at == expires and later.updated_at == plain.updated_at
    cleared = await store.update_conversation(user, plain.id, {"expires_at": None})
    assert cleared.expires_at is None
    renamed = await store.update_conversation(user, plain.id, title="u")
    assert renamed.updated_at > plain.updated_at  # the title is content: it moves
    assert renamed.archived and renamed.pinned

    past = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(ValidationError) as raised:
        await store.update_conversation(user, plain.id, expires_at=past)
    assert [e.loc for e in raised.value.errors] == [("expires_at",)]
    with pytest.raises(ValidationError) as raised:
        await store.create_conversation(user, expires_at=past)
    assert [e.loc for e in raised.value.errors] == [("expires_at",)]
    with pytest.raises(ValidationError) as raised:
        await store.update_conversation(user, plain.id, {"pinned": None})
    assert [e.loc for e in raised.value.errors] == [("pinned",)]
    with pytest.raises(ValidationError):
        await store.update_conversation(user, plain.id, {"archived": "yes"})


async def test_lists_filter_by_archived_and_pinned(store: ChatHistory, user: str) -> None:
    made = []
    for archived, pinned in [(False, False), (False, True), (True, False), (True, True)] * 2:
        made.append(await store.create_conversation(user, archived=archived, pinned=pinned))
    made.append(await store.create_conversation(user))
    # Newest updated first, whatever the filter.
    everything = await _walk(store, user, archived="any")
    assert sorted(everything) == sorted(c.id for c in made)
    flags = {c.id: (c.archived, c.pinned) for c in made}

    def expected(archived: bool | None, pinned: bool | None) -> list[uuid.UUID]:
        return [
            i
            for i in everything
            if archived in (None, flags[i][0]) and pinned in (None, flags[i][1])
        ]

    for archived in (False, True, None):
        for pinned in (False, True, None):
            given_archived = "any" if archived is None else archived
            given_pinned = "any" if pinned is None else str(pinned).lower()
            found = await _walk(store, user, archived=given_archived, pinned=given_pinned)
            assert found == expected(archived, pinned), (archived, pinned)
    default = await _walk(store, user)
    assert default == expected(False, None)
    # A UI's two sections: the pinned ones, then the rest; together the default list.
    on_top = await _walk(store, user, pinned=True)
    rest = await _walk(store, user, pinned=False)
    assert sorted(on_top + rest) == sorted(default)
    assert set(on_top) == {i for i in default if flags[i][1]}
    with pytest.raises(ValidationError) as raised:
        await store.list_conversations(user, archived="maybe")
    assert [e.loc for e in raised.value.errors] == [("archived",)]
    with pytest.raises(ValidationError):
        await store.list_conversations(user, pinned="yes")


# -- expiry ----------------------------------------------------------------------------------


async def test_an_expired_conversation_is_gone_for_every_call(
    store: ChatHistory, user: str
) -> None:
    conv = await store.create_conversation(user, expires_at=_soon())
    kept = await store.create_conversation(user)
    first = await store.add_message(user, conv.id, "user", "zanzibar temporary")
    await store.add_message(user, kept.id, "user", "zanzibar kept")
    assert len((await store.search_messages(user, "zanzibar")).data) == 2
    await _expire(store, user, conv.id)

    gone = conv.id
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    attempts: list[Any] = [
        store.get_conversation(user, gone),
        store.update_conversation(user, gone, title="x"),
        store.update_conversation(user, gone, pinned=True),
        store.update_conversation(user, gone, {"expires_at": None}),  # no way back
        store.add_message(user, gone, "user", "more"),  # one statement on PostgreSQL
        store.add_message(user, gone, "assistant", None, tool_calls=[call]),
        store.add_message(user, gone, "user", "again", id=uuid.uuid4()),
        store.list_messages(user, gone),
        store.list_messages(user, gone, limit=1, order="desc"),
        store.list_messages(user, gone, after=first.id),
        store.get_message(user, gone, first.id),
        store.get_chat_history(user, gone),
        store.get_chat_history(user, gone, limit=1),
        store.get_context_window(user, gone, 1000),
        store.search_messages(user, "zanzibar", conversation_id=gone),
        store.clear_conversation(user, gone),
        store.delete_conversation(user, gone),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError):
            await attempt
    with pytest.raises(ConversationNotFoundError):
        async for _ in store.iter_messages(user, gone):
            pass
    assert gone not in await _walk(store, user, archived="any")
    hits = (await store.search_messages(user, "zanzibar")).data
    assert [hit.conversation.id for hit in hits] == [kept.id]
    exported = [item.id async for item in store.iter_export([user])]
    assert gone not in exported and first.id not in exported and kept.id in exported
    newest = await store.get_or_create_conversation(user)
    assert newest.id == kept.id

    # The id is free again: a create with it makes a new, empty conversation.
    again = await store.create_conversation(user, id=gone)
    assert again.message_count == 0 and again.expires_at is None
    assert await store.get_chat_history(user, gone) == []


async def test_an_expired_conversations_message_ids_are_free_again(
    store: ChatHistory, user: str
) -> None:
    temporary = await store.create_conversation(user, expires_at=_soon())
    live = await store.create_conversation(user)
    other = await store.create_conversation(user)
    question = await store.add_message(user, temporary.id, "user", "q", id=uuid.uuid4())
    kept = await store.add_message(user, live.id, "user", "kept", id=uuid.uuid4())
    await _expire(store, user, temporary.id)

    # The id lives only in an expired conversation: the append stores it, as a new message.
    reused = await store.add_message(user, other.id, "user", "reused", id=question.id)
    assert (reused.conversation_id, reused.content) == (other.id, "reused")
    assert (await store.get_message(user, other.id, question.id)).content == "reused"
    # The expired conversation went with it (as the purge would delete it).
    async with store.engine.connect() as conn:
        left = await conn.execute(select(C.id).where(C.user_id == user, C.id == temporary.id))
        assert left.first() is None
    assert (await store.purge(user_id=user, dry_run=True)).conversations == 0

    # A live conversation's ids stay taken: a different message with one is still a conflict.
    with pytest.raises(ConflictError):
        await store.add_message(user, other.id, "user", "not yours", id=kept.id)
    assert (await store.get_message(user, live.id, kept.id)).content == "kept"


# -- purge -----------------------------------------------------------------------------------


async def test_purge_deletes_expired_and_old_unpinned(store: ChatHistory, user: str) -> None:
    expired = await store.create_conversation(user, expires_at=_soon())
    await store.add_messages(user, expired.id, [{"role": "user", "content": "a"}] * 2)
    old = await store.create_conversation(user)
    await store.add_message(user, old.id, "user", "b")
    old_pinned = await store.create_conversation(user, pinned=True)
    old_archived = await store.create_conversation(user, archived=True)
    fresh = await store.create_conversation(user)
    await _expire(store, user, expired.id)
    for conv in (old, old_pinned, old_archived):
        await _age(store, user, conv.id, days=40)

    expired_only = await store.purge(user_id=user, dry_run=True)
    assert expired_only == PurgeReport(1, 2, dry_run=True)
    month = timedelta(days=30)
    dry = await store.purge(older_than=month, user_id=user, dry_run=True)
    assert (dry.conversations, dry.messages) == (3, 3)
    assert len(await _walk(store, user, archived="any")) == 4  # the expired one is not listed
    ticks: list[int] = []
    done = await store.purge(older_than=month, user_id=user, batch_size=1, progress=ticks.append)
    assert done == PurgeReport(3, 3)
    assert ticks == [1, 1, 1]
    left = await _walk(store, user, archived="any")
    assert sorted(left) == sorted([old_pinned.id, fresh.id])
    assert await store.purge(older_than=month, user_id=user) == PurgeReport(0, 0)
    with pytest.raises(ValidationError):
        await store.purge(older_than=timedelta(0), user_id=user)
    with pytest.raises(ValidationError):
        await store.purge(user_id=user, batch_size=0)


async def test_purge_of_every_user(store: ChatHistory, user: str, other_user: str) -> None:
    ids = []
    for owner in (user, other_user):
        conv = await store.create_conversation(owner, expires_at=_soon())
        await store.add_message(owner, conv.id, "user", "x")
        await _expire(store, owner, conv.id)
        ids.append(conv.id)
    report = await store.purge()  # other tests' expired ones may go too
    assert report.conversations >= 2 and report.messages >= 2
    for owner, conv_id in zip((user, other_user), ids, strict=True):
        async with store.engine.connect() as conn:
            found = await conn.execute(
                conversations.select().where(C.user_id == owner, C.id == conv_id)
            )
            assert found.first() is None


async def test_concurrent_purgers_delete_each_conversation_once(
    store: ChatHistory, user: str
) -> None:
    count = 12
    for index in range(count):
        conv = await store.create_conversation(user, expires_at=_soon())
        if index % 3:
            await store.add_messages(
                user, conv.id, [{"role": "user", "content": "m"}] * (index % 3)
            )
        await _expire(store, user, conv.id)
    reports = await asyncio.gather(
        store.purge(user_id=user, batch_size=2), store.purge(user_id=user, batch_size=2)
    )
    assert sum(r.conversations for r in reports) == count
    assert sum(r.messages for r in reports) == sum(i % 3 for i in range(count))
    assert await store.purge(user_id=user) == PurgeReport(0, 0)


async def test_a_conversation_written_during_the_purge_is_kept(
    store: ChatHistory, user: str
) -> None:
    first = await store.create_conversation(user)
    busy = await store.create_conversation(user)
    await _age(store, user, first.id, days=50)
    await _age(store, user, busy.id, days=40)  # the purge reaches it second
    written: list[int] = []

    async def write_between_batches(deleted: int) -> None:
        if not written:  # after the first batch, before the second picks its rows
            written.append(deleted)
            await store.add_message(user, busy.id, "user", "still here")

    report = await store.purge(
        older_than=timedelta(days=30),
        user_id=user,
        batch_size=1,
        progress=write_between_batches,
    )
    assert report == PurgeReport(1, 0)
    assert written == [1]
    assert (await store.get_conversation(user, busy.id)).message_count == 1
    with pytest.raises(ConversationNotFoundError):
        await store.get_conversation(user, first.id)


@pytest.fixture(params=["postgres", "pgbouncer", "citus"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The PostgreSQL backends only."""
    return str(request.getfixturevalue(f"{request.param}_store_url"))


async def test_a_conversation_locked_by_a_writer_is_skipped(server_url: str, user: str) -> None:
    """PostgreSQL (SQLite's write lock serializes a purge behind the writer instead): a writer
    holds the conversation's row (its append not committed yet) while the purge runs: the
    purge neither waits for it nor deletes it."""
    async with ChatHistory.open(server_url, migrate=False) as store:
        await _locked_by_a_writer(store, user)


async def _locked_by_a_writer(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await _age(store, user, conv.id, days=40)
    async with store.engine.connect() as writer:
        await writer.execute(
            update(conversations)
            .where(C.user_id == user, C.id == conv.id)
            .values(updated_at=datetime.now(UTC))
        )
        report = await asyncio.wait_for(
            store.purge(older_than=timedelta(days=30), user_id=user), timeout=30
        )
        assert report == PurgeReport(0, 0)
        await writer.commit()
    assert (await store.get_conversation(user, conv.id)).id == conv.id


async def test_export_and_import_keep_the_lifecycle(
    store: ChatHistory, user: str, other_user: str
) -> None:
    expires = _soon()
    conv = await store.create_conversation(user, archived=True, pinned=True, expires_at=expires)
    await store.add_message(user, conv.id, "user", "x")
    plain = await store.create_conversation(user)
    out = io.StringIO()
    await export_jsonl(store, out, user_ids=[user])
    lines = {line["id"]: line for line in map(json.loads, out.getvalue().splitlines())}
    assert not {"archived", "pinned", "expires_at"} & set(lines[str(plain.id)])
    record = lines[str(conv.id)]
    assert (record["archived"], record["pinned"]) == (True, True)
    assert await store.import_conversation({**record, "user_id": other_user})
    imported = await store.get_conversation(other_user, conv.id)
    assert (imported.archived, imported.pinned, imported.expires_at) == (True, True, expires)
    assert imported.message_count == 1


# -- the listing's plans ---------------------------------------------------------------------


def _nodes(plan: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(plan, dict):
        if "Node Type" in plan:
            found.append(plan)
        for value in plan.values():
            found += _nodes(value)
    elif isinstance(plan, list):
        for item in plan:
            found += _nodes(item)
    return found


async def test_page_1000_of_every_filtered_list_is_an_index_range(
    postgres_store_url: str, user: str
) -> None:
    engine = create_engine(postgres_store_url)
    try:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.execute(
                "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,"
                " message_count, archived, pinned)"
                " SELECT gen_random_uuid(), $1, NULL, '{}', now(), now() - i * interval '1 s', 0,"
                " i % 2 = 0, i % 3 = 0 FROM generate_series(1, 12000) AS i",
                user,
            )
            await raw.execute("ANALYZE conversations")
            now = datetime.now(UTC)
            for (archived, pinned, after), statement in listing.LIST_SQL.items():
                if not after:
                    continue
                flags = "".join(
                    f" AND {name} = {str(value).lower()}"
                    for name, value in (("archived", archived), ("pinned", pinned))
                    if value is not None
                )
                position = await raw.fetchrow(
                    f"SELECT updated_at, id FROM conversations WHERE user_id = $1{flags}"
                    " ORDER BY updated_at DESC, id DESC OFFSET 999 LIMIT 1",
                    user,
                )
                plan = await raw.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}",
                    user,
                    now,
                    position["updated_at"],
                    position["id"],
                    21,
                )
                plan = json.loads(plan) if isinstance(plan, str) else plan
                nodes = _nodes(plan)
                kinds = {node["Node Type"] for node in nodes}
                assert "Seq Scan" not in kinds and "Sort" not in kinds, (archived, pinned, kinds)
                scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
                assert len(scans) == 1, (archived, pinned, kinds)
                assert scans[0]["Actual Rows"] == 21, (archived, pinned, scans[0])
                assert scans[0].get("Rows Removed by Filter", 0) == 0, (archived, pinned)
                assert "(updated_at, id) <" in scans[0]["Index Cond"].replace("ROW(", "(")
            await raw.execute("DELETE FROM conversations WHERE user_id = $1", user)
    finally:
        await engine.dispose()


# -- the command line ------------------------------------------------------------------------


def test_cli_purge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'purge.db'}"

    async def populate() -> uuid.UUID:
        async with ChatHistory.open(url) as store:
            old = await store.create_conversation("alice")
            await store.add_message("alice", old.id, "user", "x")
            await _age(store, "alice", old.id, days=40)
            await store.create_conversation("alice", pinned=True)
            return old.id

    old_id = asyncio.run(populate())
    runner = CliRunner()
    dry = runner.invoke(
        cli_app, ["purge", "--older-than", "30d", "--dry-run", "--database-url", url]
    )
    assert dry.exit_code == 0, dry.output
    assert "would delete 1 conversations, 1 messages" in dry.output
    done = runner.invoke(
        cli_app, ["purge", "--older-than", "30d", "--user", "alice", "--database-url", url]
    )
    assert done.exit_code == 0, done.output
    assert "deleted 1 conversations, 1 messages" in done.output

    async def left() -> list[uuid.UUID]:
        async with ChatHistory.open(url) as store:
            return [c.id for c in (await store.list_conversations("alice")).data]

    remaining = asyncio.run(left())
    assert len(remaining) == 1 and old_id not in remaining
    bad = runner.invoke(cli_app, ["purge", "--older-than", "soon", "--database-url", url])
    assert bad.exit_code == 2
    assert "not a duration" in bad.output


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "30", "d", "0d", "-1d", "1y", "1.5h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
async def http(store: ChatHistory) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(), store=store)
    async with asgi_client(app) as client:
        yield client


async def test_http_lifecycle(http: httpx.AsyncClient, store: ChatHistory, user: str) -> None:
    auth = bearer(user)
    base = f"/api/{user}/conversations"
    created = await http.post(base, json={"title": "t", "pinned": True}, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["archived"], body["pinned"], body["expires_at"]) == (False, True, None)
    conv = body["id"]
    before = (await http.post(base, json={}, headers=auth)).json()
    other = before["id"]

    patched = await http.patch(f"{base}/{other}", json={"archived": True}, headers=auth)
    assert patched.status_code == 200, patched.text
    assert patched.json()["archived"] is True
    assert patched.json()["updated_at"] == before["updated_at"]

    async def listed(query: str) -> list[str]:
        response = await http.get(f"{base}?{query}", headers=auth)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]

    assert await listed("") == [conv]
    assert await listed("archived=true") == [other]
    assert await listed("archived=any&pinned=false") == [other]
    assert await listed("pinned=true") == [conv]
    body = problem(await http.get(f"{base}?archived=maybe", headers=auth), 422)
    assert any("archived" in e["loc"] for e in body["errors"])
    body = problem(await http.get(f"{base}?pinned=1", headers=auth), 422)
    assert any("pinned" in e["loc"] for e in body["errors"])

    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = problem(await http.patch(f"{base}/{conv}", json={"expires_at": past}, headers=auth), 422)
    assert [e["loc"] for e in body["errors"]] == [["expires_at"]]
    body = problem(await http.post(base, json={"expires_at": past}, headers=auth), 422)
    assert [e["loc"] for e in body["errors"]] == [["expires_at"]]
    soon = _soon().isoformat()
    expiring = await http.patch(f"{base}/{conv}", json={"expires_at": soon}, headers=auth)
    assert expiring.status_code == 200, expiring.text
    assert datetime.fromisoformat(expiring.json()["expires_at"]) == datetime.fromisoformat(soon)

    message = {"role": "user", "content": "hi"}
    assert (
        await http.post(f"{base}/{conv}/messages", json=message, headers=auth)
    ).status_code == 201
    await _expire(store, user, uuid.UUID(conv))
    for response in (
        await http.get(f"{base}/{conv}", headers=auth),
        await http.get(f"{base}/{conv}/messages", headers=auth),
        await http.post(f"{base}/{conv}/messages", json=message, headers=auth),
        await http.get(f"{base}/{conv}/context?max_tokens=100", headers=auth),
        await http.patch(f"{base}/{conv}", json={"pinned": False}, headers=auth),
        await http.delete(f"{base}/{conv}", headers=auth),
    ):
        problem(response, 404)
    assert await listed("archived=any") == [other]
