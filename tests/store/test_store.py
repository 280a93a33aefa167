"""Every store method, its happy path and its error paths, on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC

import pytest

from chathistory import (
    ChatHistory,
    ConflictError,
    ConversationNotFoundError,
    InvalidCursorError,
    MessageNotFoundError,
    NotFoundError,
    ValidationError,
)
from chathistory.models import uuid7


def call(id: str, name: str = "lookup", arguments: str = '{"q": 1}') -> dict[str, object]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


# -- conversations -------------------------------------------------------------------------


async def test_create_conversation_defaults(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    assert conv.user_id == user
    assert conv.title is None
    assert conv.metadata == {}
    assert conv.message_count == 0
    assert conv.created_at == conv.updated_at
    assert conv.created_at.tzinfo is not None
    assert conv.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert conv.id.version == 7
    assert await store.get_conversation(user, conv.id) == conv


async def test_server_ids_are_time_ordered(store: ChatHistory, user: str) -> None:
    first = await store.create_conversation(user)
    second = await store.create_conversation(user)
    assert first.id.int >> 80 <= second.id.int >> 80  # the millisecond prefix never goes back


async def test_create_with_title_and_metadata(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user, title="Trip", metadata={"lang": "fr"})
    fetched = await store.get_conversation(user, conv.id)
    assert fetched.title == "Trip"
    assert fetched.metadata == {"lang": "fr"}


async def test_create_conversation_idempotent(store: ChatHistory, user: str) -> None:
    given = uuid.uuid4()
    conv, created = await store.create_conversation_idempotent(
        user, {"id": given, "title": "T", "metadata": {"a": "b"}}
    )
    assert created and conv.id == given
    again, created_again = await store.create_conversation_idempotent(
        user, {"id": given, "title": "T", "metadata": {"a": "b"}}
    )
    assert not created_again
    assert again == conv
    with pytest.raises(ConflictError):
        await store.create_conversation(user, id=given, title="Other")
    with pytest.raises(ConflictError):
        await store.create_conversation(user, id=given, metadata={"a": "c"})
    page = await store.list_conversations(user)
    assert [c.id for c in page.data] == [given]


async def test_same_conversation_id_for_two_users_stays_apart(
    store: ChatHistory, user: str, other_user: str
) -> None:
    given = uuid.uuid4()
    mine = await store.create_conversation(user, id=given, title="mine")
    theirs = await store.create_conversation(other_user, id=given, title="theirs")
    assert (mine.title, theirs.title) == ("mine", "theirs")
    await store.add_message(user, given, "user", "only mine")
    assert (await store.get_conversation(other_user, given)).message_count == 0


async def test_get_or_create(store: ChatHistory, user: str) -> None:
    first = await store.get_or_create_conversation(user)
    assert await store.get_or_create_conversation(user) == first
    newer = await store.create_conversation(user)
    await store.add_message(user, first.id, "user", "bump")  # first is now the newest
    assert (await store.get_or_create_conversation(user)).id == first.id
    assert (await store.get_or_create_conversation(user, newer.id)).id == newer.id
    given = uuid.uuid4()
    created = await store.get_or_create_conversation(user, given)
    assert created.id == given
    assert (await store.get_or_create_conversation(user, given)).id == given


async def test_get_missing_conversation(store: ChatHistory, user: str) -> None:
    with pytest.raises(ConversationNotFoundError):
        await store.get_conversation(user, uuid.uuid4())


async def test_update_conversation(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user, title="old", metadata={"k": "v"})
    renamed = await store.update_conversation(user, conv.id, title="new")
    assert renamed.title == "new"
    assert renamed.metadata == {"k": "v"}
    assert renamed.updated_at >= conv.updated_at
    remeta = await store.update_conversation(user, conv.id, {"metadata": {"x": "y"}})
    assert remeta.title == "new"
    assert remeta.metadata == {"x": "y"}
    cleared = await store.update_conversation(user, conv.id, title=None)
    assert cleared.title is None
    unchanged = await store.update_conversation(user, conv.id, {})
    assert unchanged == cleared
    with pytest.raises(ValidationError) as info:
        await store.update_conversation(user, conv.id, {"metadata": None})
    assert info.value.errors[0].loc == ("metadata",)
    with pytest.raises(ValidationError):
        await store.update_conversation(user, conv.id, {"colour": "red"})
    with pytest.raises(ConversationNotFoundError):
        await store.update_conversation(user, uuid.uuid4(), title="x")
    assert (await store.get_conversation(user, conv.id)) == cleared


async def test_delete_conversation_cascades(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    message = await store.add_message(user, conv.id, "user", "hi")
    keep = await store.create_conversation(user)
    await store.add_message(user, keep.id, "user", "stay")
    await store.delete_conversation(user, conv.id)
    with pytest.raises(ConversationNotFoundError):
        await store.get_conversation(user, conv.id)
    with pytest.raises(NotFoundError):
        await store.get_message(user, conv.id, message.id)
    with pytest.raises(ConversationNotFoundError):
        await store.get_chat_history(user, conv.id)
    with pytest.raises(ConversationNotFoundError):
        await store.delete_conversation(user, conv.id)
    assert [m.content for m in await store.get_chat_history(user, keep.id)] == ["stay"]


async def test_delete_user_data_leaves_others(
    store: ChatHistory, user: str, other_user: str
) -> None:
    for owner in (user, other_user):
        for n in range(3):
            conv = await store.create_conversation(owner)
            await store.add_message(owner, conv.id, "user", f"{owner} {n}")
    assert await store.delete_user_data(user) == 3
    assert (await store.list_conversations(user)).data == []
    theirs = await store.list_conversations(other_user)
    assert len(theirs.data) == 3
    for conv in theirs.data:
        assert len(await store.get_chat_history(other_user, conv.id)) == 1
    assert await store.delete_user_data(user) == 0


async def test_list_conversations_newest_first_with_cursor(store: ChatHistory, user: str) -> None:
    created = [await store.create_conversation(user, title=str(n)) for n in range(7)]
    await store.add_message(user, created[2].id, "user", "moves 2 to the front")
    expected = [created[2].id] + [c.id for c in reversed(created) if c.id != created[2].id]
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await store.list_conversations(user, limit=3, cursor=cursor)
        assert page.object == "list"
        seen += [c.id for c in page.data]
        assert page.next_cursor is not None
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert seen == expected
    tail = await store.list_conversations(user, limit=3, cursor=cursor)
    assert tail.data == [] and not tail.has_more


@pytest.mark.parametrize("limit", [0, -1, 101, True])
async def test_list_limits(store: ChatHistory, user: str, limit: int) -> None:
    with pytest.raises(ValidationError) as info:
        await store.list_conversations(user, limit=limit)
    assert info.value.errors[0].loc == ("limit",)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "eyJ2IjoxLCJrIjoibSIsInMiOjEsIm8iOiJhc2MifQ",  # a message cursor
        "eyJ2IjoyfQ",  # wrong version
        "eyJ2IjoxLCJrIjoiYyIsInQiOiJ4IiwiaWQiOiJ5In0",  # wrong types
        "!!!!",
        "a" * 600,
    ],
)
async def test_bad_conversation_cursor(store: ChatHistory, user: str, cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        await store.list_conversations(user, cursor=cursor)


# -- messages --------------------------------------------------------------------------------


async def test_add_and_get_messages(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    system = await store.add_message(user, conv.id, "system", "Be brief.")
    hello = await store.add_message(
        user, conv.id, "user", "Hello", name="alice", metadata={"client": "web"}
    )
    assert (system.seq, hello.seq) == (1, 2)
    assert hello.name == "alice" and hello.metadata == {"client": "web"}
    assert hello.created_at.tzinfo == UTC
    assert await store.get_message(user, conv.id, hello.id) == hello
    after = await store.get_conversation(user, conv.id)
    assert after.message_count == 2
    assert after.updated_at >= conv.updated_at
    assert after.title == "Hello"


async def test_get_message_errors(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    other = await store.create_conversation(user)
    message = await store.add_message(user, conv.id, "user", "x")
    with pytest.raises(MessageNotFoundError):
        await store.get_message(user, conv.id, uuid.uuid4())
    with pytest.raises(MessageNotFoundError):  # right id, wrong conversation
        await store.get_message(user, other.id, message.id)


async def test_add_to_missing_conversation(store: ChatHistory, user: str) -> None:
    with pytest.raises(ConversationNotFoundError):
        await store.add_message(user, uuid.uuid4(), "user", "lost")


async def test_title_rules(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await store.add_message(user, conv.id, "system", "not a title")
    long = "  word\t" * 40
    await store.add_message(user, conv.id, "user", long)
    title = (await store.get_conversation(user, conv.id)).title
    assert title == ("word " * 40)[:80]
    await store.add_message(user, conv.id, "user", "second")
    assert (await store.get_conversation(user, conv.id)).title == title

    titled = await store.create_conversation(user, title="Mine")
    await store.add_message(user, titled.id, "user", "ignored")
    assert (await store.get_conversation(user, titled.id)).title == "Mine"

    cleared = await store.create_conversation(user)
    await store.add_message(user, cleared.id, "user", "first")
    await store.update_conversation(user, cleared.id, title=None)
    await store.add_message(user, cleared.id, "user", "later")
    assert (await store.get_conversation(user, cleared.id)).title is None

    parts = await store.create_conversation(user)
    await store.add_message(
        user,
        parts.id,
        "user",
        [{"type": "text", "text": "What is"}, {"type": "image_url", "image_url": {"url": "x"}}],
    )
    assert (await store.get_conversation(user, parts.id)).title == "What is"


async def test_add_messages_batch_is_atomic(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    stored = await store.add_messages(
        user,
        conv.id,
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "warm"},
            {"role": "assistant", "content": "Sunny and warm."},
        ],
    )
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    with pytest.raises(ValidationError) as info:
        await store.add_messages(
            user,
            conv.id,
            [
                {"role": "user", "content": "ok"},
                {"role": "tool", "tool_call_id": "nope", "content": "x"},
            ],
        )
    assert info.value.errors[0].loc == (1, "tool_call_id")
    history = await store.get_chat_history(user, conv.id)
    assert len(history) == 5
    assert (await store.get_conversation(user, conv.id)).message_count == 5


async def test_batch_validation_names_each_bad_item(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    with pytest.raises(ValidationError) as info:
        await store.add_messages(
            user,
            conv.id,
            [{"role": "user", "content": "fine"}, {"role": "robot", "content": "x"}, {}],
        )
    locs = [e.loc for e in info.value.errors]
    assert (1, "role") in locs
    assert (2, "role") in locs
    with pytest.raises(ValidationError):
        await store.add_messages(user, conv.id, [])
    with pytest.raises(ValidationError):
        await store.add_messages(user, conv.id, {"role": "user", "content": "x"})  # type: ignore[arg-type]
    assert (await store.get_conversation(user, conv.id)).message_count == 0


async def test_tool_results_must_answer_open_calls(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await store.add_message(user, conv.id, "user", "go")
    with pytest.raises(ValidationError):  # nothing called yet
        await store.add_message(user, conv.id, "tool", "r", tool_call_id="a")
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call("a"), call("b")])
    await store.add_message(user, conv.id, "tool", "ra", tool_call_id="a")
    with pytest.raises(ValidationError):  # answered already
        await store.add_message(user, conv.id, "tool", "again", tool_call_id="a")
    with pytest.raises(ValidationError):  # two answers to one call in one batch
        await store.add_messages(
            user,
            conv.id,
            [
                {"role": "tool", "tool_call_id": "b", "content": "1"},
                {"role": "tool", "tool_call_id": "b", "content": "2"},
            ],
        )
    await store.add_message(user, conv.id, "tool", "rb", tool_call_id="b")
    # A later assistant message may reuse an id (some local models do): it opens it again.
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call("a")])
    await store.add_message(user, conv.id, "tool", "ra2", tool_call_id="a")
    # Calls of another conversation are not open here.
    other = await store.create_conversation(user)
    await store.add_message(user, other.id, "assistant", None, tool_calls=[call("z")])
    with pytest.raises(ValidationError):
        await store.add_message(user, conv.id, "tool", "r", tool_call_id="z")
    assert (await store.get_conversation(user, conv.id)).message_count == 6


async def test_idempotent_append(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    given = uuid.uuid4()
    first, created = await store.add_messages_idempotent(
        user, conv.id, [{"id": given, "role": "user", "content": "once", "metadata": {"a": "b"}}]
    )
    assert created
    before = await store.get_conversation(user, conv.id)
    again, created_again = await store.add_messages_idempotent(
        user, conv.id, [{"id": given, "role": "user", "content": "once", "metadata": {"a": "b"}}]
    )
    assert not created_again
    assert again == first
    after = await store.get_conversation(user, conv.id)
    assert after.message_count == 1
    assert after.updated_at == before.updated_at
    with pytest.raises(ConflictError):
        await store.add_message(user, conv.id, "user", "different", id=given)
    other = await store.create_conversation(user)
    with pytest.raises(ConflictError):  # same id, same content, other conversation
        await store.add_message(user, other.id, "user", "once", id=given, metadata={"a": "b"})
    with pytest.raises(ConflictError):  # half of a batch already stored
        await store.add_messages(
            user,
            conv.id,
            [
                {"id": given, "role": "user", "content": "once", "metadata": {"a": "b"}},
                {"id": uuid.uuid4(), "role": "user", "content": "new"},
            ],
        )
    with pytest.raises(ValidationError):
        await store.add_messages(
            user,
            conv.id,
            [{"id": given, "role": "user", "content": "x"}] * 2,
        )
    assert (await store.get_conversation(user, conv.id)).message_count == 1
    assert (await store.get_conversation(user, other.id)).message_count == 0


async def test_idempotent_batch_replay(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    batch = [
        {"id": uuid7(), "role": "assistant", "content": None, "tool_calls": [call("t")]},
        {"id": uuid7(), "role": "tool", "tool_call_id": "t", "content": "done"},
    ]
    first = await store.add_messages(user, conv.id, batch)
    replay, created = await store.add_messages_idempotent(user, conv.id, batch)
    assert not created and replay == first
    assert (await store.get_conversation(user, conv.id)).message_count == 2


async def test_list_messages_cursor_walk(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    stored = await store.add_messages(
        user, conv.id, [{"role": "user", "content": str(n)} for n in range(10)]
    )
    for order, expected in (("asc", stored), ("desc", stored[::-1])):
        seen = []
        cursor = None
        while True:
            page = await store.list_messages(user, conv.id, limit=3, order=order, cursor=cursor)
            seen += page.data
            assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
            cursor = page.next_cursor
            if not page.has_more:
                break
        assert [m.id for m in seen] == [m.id for m in expected]
    # Polling with the last cursor: empty now, then the new message once it exists.
    last = await store.list_messages(user, conv.id, limit=100)
    assert not last.has_more
    empty = await store.list_messages(user, conv.id, cursor=last.next_cursor)
    assert empty.data == [] and empty.next_cursor == last.next_cursor
    assert empty.first_id is None and empty.last_id is None
    new = await store.add_message(user, conv.id, "user", "new")
    polled = await store.list_messages(user, conv.id, cursor=last.next_cursor)
    assert [m.id for m in polled.data] == [new.id]


async def test_list_messages_after_before(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    m = await store.add_messages(
        user, conv.id, [{"role": "user", "content": str(n)} for n in range(8)]
    )
    page = await store.list_messages(user, conv.id, after=m[2].id, limit=2)
    assert [x.seq for x in page.data] == [4, 5] and page.has_more
    page = await store.list_messages(user, conv.id, before=m[5].id, limit=2)
    assert [x.seq for x in page.data] == [4, 5] and page.has_more
    page = await store.list_messages(user, conv.id, before=m[2].id, limit=5)
    assert [x.seq for x in page.data] == [1, 2] and not page.has_more
    page = await store.list_messages(user, conv.id, after=m[1].id, before=m[5].id)
    assert [x.seq for x in page.data] == [3, 4, 5]
    page = await store.list_messages(user, conv.id, order="desc", after=m[5].id, limit=2)
    assert [x.seq for x in page.data] == [5, 4] and page.has_more
    page = await store.list_messages(user, conv.id, order="desc", before=m[2].id, limit=2)
    assert [x.seq for x in page.data] == [5, 4] and page.has_more
    with pytest.raises(InvalidCursorError):
        await store.list_messages(user, conv.id, after=uuid.uuid4())
    other = await store.create_conversation(user)
    with pytest.raises(InvalidCursorError):  # a message of another conversation
        await store.list_messages(user, other.id, before=m[0].id)
    with pytest.raises(InvalidCursorError):
        await store.list_messages(user, conv.id, after=m[0].id, cursor=page.next_cursor)
    asc = await store.list_messages(user, conv.id, limit=1)
    with pytest.raises(InvalidCursorError):  # an asc cursor on a desc list
        await store.list_messages(user, conv.id, order="desc", cursor=asc.next_cursor)
    with pytest.raises(ValidationError):
        await store.list_messages(user, conv.id, order="sideways")  # type: ignore[arg-type]


async def test_list_messages_of_empty_and_missing(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    page = await store.list_messages(user, conv.id)
    assert page.data == [] and not page.has_more and page.next_cursor is None
    with pytest.raises(ConversationNotFoundError):
        await store.list_messages(user, uuid.uuid4())
    with pytest.raises(ConversationNotFoundError):
        await store.list_messages(user, uuid.uuid4(), after=uuid.uuid4())


async def test_get_chat_history(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await store.add_messages(
        user, conv.id, [{"role": "user", "content": str(n)} for n in range(60)]
    )
    newest = await store.get_chat_history(user, conv.id, limit=50)
    assert [m.seq for m in newest] == list(range(11, 61))
    assert len(await store.get_chat_history(user, conv.id)) == 60
    assert [m.seq for m in await store.get_chat_history(user, conv.id, limit=1000)] == list(
        range(1, 61)
    )
    with pytest.raises(ValidationError):
        await store.get_chat_history(user, conv.id, limit=0)
    empty = await store.create_conversation(user)
    assert await store.get_chat_history(user, empty.id) == []


# -- isolation ---------------------------------------------------------------------------------


async def test_another_users_conversation_is_not_found_everywhere(
    store: ChatHistory, user: str, other_user: str
) -> None:
    conv = await store.create_conversation(user, title="secret")
    message = await store.add_message(user, conv.id, "user", "private")
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call("k")])
    intruder = other_user
    calls = [
        store.get_conversation(intruder, conv.id),
        store.update_conversation(intruder, conv.id, title="pwned"),
        store.delete_conversation(intruder, conv.id),
        store.add_message(intruder, conv.id, "user", "guessing the id"),
        store.add_messages(intruder, conv.id, [{"role": "user", "content": "x"}]),
        store.add_message(intruder, conv.id, "tool", "x", tool_call_id="k"),
        store.get_message(intruder, conv.id, message.id),
        store.list_messages(intruder, conv.id),
        store.list_messages(intruder, conv.id, after=message.id),
        store.get_chat_history(intruder, conv.id),
    ]
    for pending in calls:
        with pytest.raises(NotFoundError):
            await pending
    assert (await store.list_conversations(intruder)).data == []
    assert await store.delete_user_data(intruder) == 0
    # Replaying the victim's message id as the intruder creates the intruder's own row.
    theirs = await store.create_conversation(intruder)
    copy = await store.add_message(intruder, theirs.id, "user", "private", id=message.id)
    assert copy.user_id == intruder
    after = await store.get_conversation(user, conv.id)
    assert (after.title, after.message_count) == ("secret", 2)
    assert (await store.get_message(user, conv.id, message.id)).user_id == user


@pytest.mark.parametrize("bad_user", ["", "x" * 256, "nul\x00", "lone\ud800", None, 7])
async def test_bad_user_id(store: ChatHistory, bad_user: object) -> None:
    with pytest.raises(ValidationError) as info:
        await store.create_conversation(bad_user)  # type: ignore[arg-type]
    assert info.value.errors[0].loc == ("user_id",)
    with pytest.raises(ValidationError):
        await store.list_conversations(bad_user)  # type: ignore[arg-type]


async def test_ping(store: ChatHistory) -> None:
    await store.ping()
